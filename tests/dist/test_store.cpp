// The authenticated rendezvous store (src/dist/store.hpp): c10d's operations between clients that
// know the pool secret, and refusals for everyone else: a wrong secret, a raw connection that
// writes a forged request, a tampered message.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "dist/net.hpp"
#include "dist/store.hpp"

using namespace std::chrono_literals;
using sky::dist::StoreClient;
using sky::dist::StoreError;
using sky::dist::StoreServer;

namespace {

const std::string kSecret = "the-pool-secret-0123456789abcdef";

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

// A plain TCP connection to 127.0.0.1:port (no handshake).
int raw_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

// Reads what the peer sends until it closes or 3 s pass; returns the bytes and whether it closed.
std::string read_until_closed(int fd, bool& closed) {
  std::string got;
  closed = false;
  auto deadline = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char buf[256];
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r <= 0) {
      closed = true;
      break;
    }
    got.append(buf, static_cast<size_t>(r));
  }
  return got;
}

}  // namespace

TEST_CASE("clients that know the secret share keys with c10d's semantics") {
  int port = sky::dist::free_port();
  StoreServer server("127.0.0.1", port, kSecret);
  CHECK(server.where() == "127.0.0.1:" + std::to_string(port));
  StoreClient a("127.0.0.1", port, kSecret, 5s), b("127.0.0.1", port, kSecret, 5s);
  a.set("k", bytes("v1"));
  CHECK(text(b.get("k", 1s)) == "v1");
  CHECK(a.add("n", 5) == 5);
  CHECK(b.add("n", -2) == 3);
  CHECK(text(a.get("n", 1s)) == "3");
  CHECK(b.check({"k", "n"}));
  CHECK_FALSE(b.check({"k", "absent"}));
  CHECK(a.num_keys() == 2);
  // compare_set: a missing key with an empty expected value is set; a wrong expectation returns the value
  CHECK(text(a.compare_set("c", {}, bytes("first"))) == "first");
  CHECK(text(b.compare_set("c", bytes("other"), bytes("second"))) == "first");
  CHECK(text(b.compare_set("c", bytes("first"), bytes("second"))) == "second");
  CHECK(text(a.compare_set("missing", bytes("x"), bytes("y"))) == "x");
  CHECK(a.remove("c"));
  CHECK_FALSE(a.remove("c"));
  // get waits for a key another client sets later; wait reports a timeout
  std::thread later([&] {
    std::this_thread::sleep_for(100ms);
    b.set("late", bytes("here"));
  });
  CHECK(text(a.get("late", 5s)) == "here");
  later.join();
  CHECK_FALSE(a.wait({"never"}, 50ms));
  CHECK_THROWS_WITH_AS(a.get("never", 50ms), doctest::Contains("key 'never' did not appear within"), StoreError);
  a.set("k", bytes("x"));
  CHECK_THROWS_WITH_AS(a.add("k", 1), doctest::Contains("key 'k' does not hold a number"), StoreError);
  CHECK(server.refused() == 0);
}

TEST_CASE("a client with another secret is refused and changes nothing") {
  int port = sky::dist::free_port();
  StoreServer server("127.0.0.1", port, kSecret);
  StoreClient good("127.0.0.1", port, kSecret, 5s);
  good.set("rank0", bytes("addr"));
  CHECK_THROWS_WITH_AS(StoreClient("127.0.0.1", port, "a-guess-at-the-secret-00000000000", 5s),
                       doctest::Contains("refused this process: it does not know the pool secret"), StoreError);
  CHECK(server.refused() == 1);
  CHECK(good.num_keys() == 1);
  CHECK(text(good.get("rank0", 1s)) == "addr");
  CHECK_THROWS_WITH_AS(StoreClient("127.0.0.1", port, "short", 5s), doctest::Contains("shorter than 16 bytes"),
                       StoreError);
}

TEST_CASE("a raw connection that skips the proof or forges a request is closed and changes nothing") {
  int port = sky::dist::free_port();
  StoreServer server("127.0.0.1", port, kSecret);
  StoreClient good("127.0.0.1", port, kSecret, 5s);
  // a request as our protocol frames it, sent in place of the proof
  {
    int fd = raw_connect(port);
    std::string forged(64, '\0');
    forged[0] = 1;  // OP_SET
    CHECK(send(fd, forged.data(), forged.size(), 0) == 64);
    bool closed = false;
    std::string got = read_until_closed(fd, closed);
    CHECK(closed);
    CHECK(got.rfind("skyrun-store 1\n", 0) == 0);
    CHECK(got.size() == 15 + 32);  // the greeting only: no proof of the server's, no answer
    close(fd);
  }
  // what c10d's TCPStore client would send first (its validation number), then nothing
  {
    int fd = raw_connect(port);
    uint32_t magic = 0x3C85F7CE;
    CHECK(send(fd, &magic, sizeof magic, 0) == 4);
    close(fd);
  }
  CHECK(good.num_keys() == 0);
  for (int i = 0; i < 50 && server.refused() < 2; ++i) std::this_thread::sleep_for(20ms);
  CHECK(server.refused() == 2);
}

TEST_CASE("the server listens on the address given, not on every interface") {
  int port = sky::dist::free_port();
  StoreServer server("127.0.0.1", port, kSecret);
  CHECK_THROWS_WITH_AS(StoreServer("127.0.0.1", port, kSecret), doctest::Contains("Address already in use"), StoreError);
  CHECK_THROWS_WITH_AS(StoreServer("192.0.2.1", sky::dist::free_port(), kSecret),
                       doctest::Contains("it is not an address of this host"), StoreError);
  // another loopback address of this host reaches nothing: the listener is 127.0.0.1 only
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(0x7f000002);  // 127.0.0.2
  CHECK(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0);
  close(fd);
}
