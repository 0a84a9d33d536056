// Workers that dial the driver over TCP (the Slurm provider's transport; any launcher that can
// start a process on a node and write one line to its stdin will do).
//
// The driver listens on one address (a Rendezvous). For each worker it starts a launcher process
// (`srun ... skyrun worker --connect HOST:PORT --id ID`) and writes the pool's secret on the
// launcher's stdin, which the launcher hands to the worker: the secret is never on a command
// line, in an environment or in a file. The worker connects, and both sides prove that they hold
// the secret without sending it (HMAC-SHA256 over a fresh nonce from each side, bound to the
// worker's id), so neither a stray process that connects to the driver nor a listener that is not
// the driver gets tasks or runs them. Then the usual frames flow over the socket.
//
// The handshake, one line each way (hex), before any frame:
//   driver -> worker   SKYRUN-DIAL 1 <nonce_d>
//   worker -> driver   WORKER <id> <nonce_w> <hmac(secret, "worker" nonce_d id nonce_w)>
//                   or HOLD <label>            (a keeper: holds the connection, gets nothing)
//   driver -> worker   OK <hmac(secret, "driver" nonce_w nonce_d id)>      (or the socket closes)
//
// A keeper (`skyrun hold HOST:PORT`, a Slurm batch script) only keeps a connection open and exits
// when it closes: the driver's death (or its host's) ends the job that holds the nodes.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pool/local_transport.hpp"
#include "pool/transport.hpp"

namespace sky::pool {

// "host:port" or "[v6addr]:port" -> host, port. Throws TransportError naming the text.
void split_host_port(const std::string& text, std::string& host, int& port);

// ---- the worker's side ------------------------------------------------------------------------

// Connects to the driver, proves the secret and checks the driver's proof. Returns the connected
// blocking socket with keepalive armed (dead_after). Throws TransportError with a message for the
// user (refused, timed out, "the peer at ... did not prove it holds the pool's secret").
int dial_worker(const std::string& host, int port, const std::string& id, const std::string& secret,
                double dead_after, double timeout);

// Connects as a keeper and returns the socket once the driver took it.
int dial_hold(const std::string& host, int port, const std::string& label, double dead_after, double timeout);

// ---- the driver's side ------------------------------------------------------------------------

class Rendezvous {
 public:
  // Listens on address:port (port 0: any free port). Throws TransportError.
  Rendezvous(const std::string& address, int port, double dead_after);
  ~Rendezvous();
  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // Readable (poll) when a connection or a handshake line waits: progress() then makes progress.
  int wait_fd() const { return epoll_fd_; }

  // Accepts connections and advances handshakes without blocking.
  void progress();
  // The authenticated socket of worker `id` once it arrived (ownership passes), else -1.
  int take(const std::string& id);
  // Worker ids that may authenticate; a connection naming any other id is refused.
  void expect(const std::string& id) { expected_[id] = true; }
  void forget(const std::string& id);
  // Labels of the keepers whose connection is open now.
  std::vector<std::string> holds();

  // Starts a launcher (its stdout and stderr captured) and gives it the secret line on stdin.
  // The transport's stream is the worker's socket once the worker has dialled in.
  static std::unique_ptr<Transport> spawn(const std::shared_ptr<Rendezvous>& self, LocalSpawn launcher,
                                          const std::string& id);

 private:
  struct Pending {
    std::string nonce;
    std::string in;
    double deadline;
  };
  void accept_all();
  void advance(int fd, Pending& p, bool& done);
  void drop(int fd);

  std::string address_;
  int port_ = 0;
  double dead_after_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  std::string secret_;  // 64 hex characters
  std::map<int, Pending> pending_;
  std::map<std::string, int> arrived_;
  std::map<std::string, bool> expected_;
  std::vector<std::pair<int, std::string>> holds_;
};

}  // namespace sky::pool
