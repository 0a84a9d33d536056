// The rendezvous store of a process group: a small key-value server that rank 0 runs, listening
// on the one address the ranks use (MASTER_ADDR, never the wildcard), and its client. Every
// connection first proves it knows the pool's secret (HMAC-SHA256 challenge and answer, both
// ways) and then signs every message with a key of that session, so a process without the
// secret can neither join nor read or change a key. No LibTorch here: the c10d::Store the
// backends use wraps a StoreClient (process_group.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sky::dist {

// What the store refuses or cannot do; what() is meant for users.
struct StoreError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Nothing listened at the store's address within the timeout.
struct StoreUnreachable : StoreError {
  using StoreError::StoreError;
};

// The shortest secret a pool may use (bytes).
inline constexpr size_t kStoreMinSecret = 16;
inline constexpr size_t kStoreMaxKey = 4096;           // bytes of a key
inline constexpr size_t kStoreMaxValue = 64u << 20;    // bytes of a value
inline constexpr size_t kStoreMaxTotal = 512u << 20;   // bytes of every key and value together

// A fresh random secret (hex of 32 random bytes).
std::string store_new_secret();

class StoreServer {
 public:
  // Listens on address:port (address resolved as given; a name or address that is not this
  // host's is an error saying so) and serves from a thread. Throws StoreError.
  StoreServer(const std::string& address, int port, std::string secret);
  // Stops serving: closes the listener and every connection, joins the thread.
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  // "127.0.0.1:29500", as bound.
  const std::string& where() const { return where_; }
  // Connections that failed to prove the secret, so far.
  int64_t refused() const;

  struct State;

 private:
  std::string where_;
  std::shared_ptr<State> state_;
};

class StoreClient {
 public:
  // Connects to host:port and proves the secret, retrying refused connections until timeout
  // (rank 0 may not listen yet). cancelled, polled while waiting, stops with an error.
  StoreClient(const std::string& host, int port, std::string secret, std::chrono::milliseconds timeout,
              std::function<bool()> cancelled = nullptr);
  ~StoreClient();
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  // c10d's store operations. Thread-safe (one request at a time). get waits until the key exists
  // (or timeout: StoreError naming the key); add stores decimal text; compare_set sets desired
  // when the value is expected (or the key is missing and expected is empty) and returns the value
  // now stored (or expected, for a missing key with a non-empty expected).
  void set(const std::string& key, const std::vector<uint8_t>& value);
  std::vector<uint8_t> get(const std::string& key, std::chrono::milliseconds timeout);
  int64_t add(const std::string& key, int64_t delta);
  std::vector<uint8_t> compare_set(const std::string& key, const std::vector<uint8_t>& expected,
                                   const std::vector<uint8_t>& desired);
  bool remove(const std::string& key);
  bool check(const std::vector<std::string>& keys);
  int64_t num_keys();
  // Waits until every key exists; false when timeout passed first.
  bool wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);

  const std::string& where() const { return where_; }

  struct Conn;

 private:
  std::string where_;
  std::unique_ptr<Conn> conn_;
  std::function<bool()> cancelled_;
};

}  // namespace sky::dist
