// Workers that dial the driver over TCP: the handshake on both sides, the driver's listener
// (Rendezvous) and the transport of one dialled-in worker. See tcp_transport.hpp.
#include "pool/tcp_transport.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>

#include "pool/net.hpp"
#include "host/clock.hpp"

namespace sky::pool {
namespace {

constexpr const char* kGreeting = "SKYRUN-DIAL 1";
constexpr size_t kMaxLine = 512;         // a handshake line longer than this is refused
constexpr double kHandshakeSeconds = 5;  // a connection that does not finish its handshake by then is closed
constexpr size_t kLauncherTail = 4096;   // the launcher's last output kept for error messages

std::string to_hex(const unsigned char* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

std::string random_hex(size_t bytes) {
  unsigned char buf[64];
  if (bytes > sizeof buf || RAND_bytes(buf, static_cast<int>(bytes)) != 1)
    throw TransportError("cannot draw random bytes for the pool's secret");
  return to_hex(buf, bytes);
}

std::string hmac_hex(const std::string& key, const std::string& message) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(message.data()), message.size(), md, &len))
    throw TransportError("HMAC-SHA256 failed");
  return to_hex(md, len);
}

std::string worker_proof(const std::string& secret, const std::string& nonce_d, const std::string& id,
                         const std::string& nonce_w) {
  return hmac_hex(secret, "worker\n" + nonce_d + "\n" + id + "\n" + nonce_w);
}

std::string driver_proof(const std::string& secret, const std::string& nonce_w, const std::string& nonce_d,
                         const std::string& id) {
  return hmac_hex(secret, "driver\n" + nonce_w + "\n" + nonce_d + "\n" + id);
}

bool same(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// Worker ids and keeper labels: short, printable, no spaces.
bool valid_token(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-' || c == ':';
  });
}

std::vector<std::string> words(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t w = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    off += static_cast<size_t>(w);
  }
  return true;
}

// One line from a blocking socket before `deadline`. False on timeout, end of stream or a line
// longer than kMaxLine.
bool recv_line(int fd, std::string& line, double deadline) {
  line.clear();
  for (;;) {
    double left = deadline - monotonic_seconds();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left * 1000) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    char c;
    ssize_t n = ::recv(fd, &c, 1, 0);  // byte by byte: nothing of the frames after it is consumed
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    if (c == '\n') return true;
    line += c;
    if (line.size() > kMaxLine) return false;
  }
}

// Connects and reads the driver's greeting; returns the socket and the driver's nonce.
int dial_greeted(const std::string& host, int port, double dead_after, double timeout, std::string& nonce_d) {
  std::string where = host + ":" + std::to_string(port);
  bool timed_out = false;
  int fd;
  try {
    fd = tcp_connect(host, port, timeout, timed_out);
  } catch (const std::exception& e) {
    throw TransportError("cannot connect to the driver at " + where + ": " + e.what() +
                         (timed_out ? " (the node cannot reach the driver's address)" : ""));
  }
  set_dead_after(fd, dead_after);
  std::string line;
  auto w = words(recv_line(fd, line, monotonic_seconds() + timeout) ? line : std::string());
  if (w.size() != 3 || w[0] + " " + w[1] != kGreeting || w[2].size() != 64) {
    ::close(fd);
    throw TransportError("the peer at " + where + " is not a skyrun driver (no greeting)");
  }
  nonce_d = w[2];
  return fd;
}

// ---- the transport of one dialled-in worker ----------------------------------------------------

class DialInTransport final : public Transport {
 public:
  DialInTransport(std::shared_ptr<Rendezvous> rv, std::unique_ptr<Transport> launcher, std::string id,
                  std::string label)
      : rv_(std::move(rv)), launcher_(std::move(launcher)), id_(std::move(id)), label_(std::move(label)) {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) throw TransportError(std::string("epoll_create1: ") + strerror(errno));
    watch(rv_->wait_fd(), true);
    watch(launcher_->read_fd(), true);
  }

  ~DialInTransport() override {
    rv_->forget(id_);
    if (sock_ >= 0) ::close(sock_);
    ::close(epoll_fd_);
    // A worker that never dialled in, or whose connection died, will not end its launcher by
    // exiting: stop it now (srun, stopped, ends the step). launcher_'s destructor reaps it.
    if (sock_ < 0 || !sock_error_.empty()) launcher_->kill();
  }

  size_t write_some(const void* data, size_t n) override {
    if (sock_ < 0) {
      if (launcher_done_) throw TransportError(describe() + " ended before it dialled in");
      return 0;  // frames wait in the connection's buffer until the worker is here
    }
    for (;;) {
      ssize_t w = ::send(sock_, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w >= 0) return static_cast<size_t>(w);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      sock_error_ = strerror(errno);
      throw TransportError("writing to " + describe() + ": " + sock_error_);
    }
  }

  ssize_t read_some(void* buf, size_t n) override {
    drain_launcher();
    if (sock_ < 0) {
      rv_->progress();
      int fd = rv_->take(id_);
      if (fd < 0) return launcher_done_ ? -1 : 0;
      sock_ = fd;
      watch(rv_->wait_fd(), false);
      watch(sock_, true);
    }
    for (;;) {
      ssize_t r = ::recv(sock_, buf, n, MSG_DONTWAIT);
      if (r > 0) return r;
      if (r == 0) return -1;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      sock_error_ = strerror(errno);
      return -1;
    }
  }

  int read_fd() const override { return epoll_fd_; }
  int write_fd() const override { return sock_; }

  void close() override {
    if (sock_ >= 0) ::shutdown(sock_, SHUT_WR);  // the worker reads the end of its input and exits
    else launcher_->kill();                      // never dialled in: stop the launcher
  }

  void kill() override {
    launcher_->kill();  // srun, stopped, kills the step's processes on the node
    if (sock_ >= 0) ::shutdown(sock_, SHUT_RDWR);
  }

  std::string exit_reason(int timeout_ms) override {
    std::string why;
    if (!sock_error_.empty()) {
      why = "the connection was lost: " + sock_error_;
      timeout_ms = std::min(timeout_ms, 200);  // the launcher may wait long for a node that is gone
    }
    std::string status = launcher_->exit_reason(timeout_ms);
    drain_launcher();
    if (why.empty()) why = sock_ < 0 ? "it ended before it dialled in to the driver (its launcher " + status + ")"
                                     : "its launcher " + status;
    std::string said = last_lines(3);
    return said.empty() ? why : why + ": " + said;
  }

  std::string describe() const override { return label_; }

 private:
  void watch(int fd, bool on) {
    if (fd < 0) return;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, &ev);
  }

  // Keeps the launcher's last output (srun's messages) and notices when it ends.
  void drain_launcher() {
    if (launcher_done_) return;
    char buf[4096];
    for (;;) {
      ssize_t r;
      try {
        r = launcher_->read_some(buf, sizeof buf);
      } catch (const TransportError&) {
        r = -1;
      }
      if (r == 0) return;
      if (r < 0) {
        launcher_done_ = true;
        watch(launcher_->read_fd(), false);
        return;
      }
      tail_.append(buf, static_cast<size_t>(r));
      if (tail_.size() > kLauncherTail) tail_.erase(0, tail_.size() - kLauncherTail);
    }
  }

  std::string last_lines(int count) const {
    std::vector<std::string> lines;
    std::istringstream in(tail_);
    for (std::string l; std::getline(in, l);) {
      if (l.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(l);
    }
    std::string out;
    size_t from = lines.size() > static_cast<size_t>(count) ? lines.size() - static_cast<size_t>(count) : 0;
    for (size_t i = from; i < lines.size(); ++i) out += (out.empty() ? "" : " | ") + lines[i];
    return out;
  }

  std::shared_ptr<Rendezvous> rv_;
  std::unique_ptr<Transport> launcher_;
  std::string id_;
  std::string label_;
  int epoll_fd_ = -1;
  int sock_ = -1;
  bool launcher_done_ = false;
  std::string sock_error_;
  std::string tail_;
};

}  // namespace

void split_host_port(const std::string& text, std::string& host, int& port) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    throw TransportError("'" + text + "' is not HOST:PORT");
  host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  char* end = nullptr;
  long p = strtol(text.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || p < 1 || p > 65535) throw TransportError("'" + text + "' has no valid port");
  port = static_cast<int>(p);
}

int dial_worker(const std::string& host, int port, const std::string& id, const std::string& secret,
                double dead_after, double timeout) {
  if (!valid_token(id)) throw TransportError("bad worker id '" + id + "'");
  std::string nonce_d;
  int fd = dial_greeted(host, port, dead_after, timeout, nonce_d);
  std::string nonce_w = random_hex(32);
  std::string line;
  if (!send_all(fd, "WORKER " + id + " " + nonce_w + " " + worker_proof(secret, nonce_d, id, nonce_w) + "\n") ||
      !recv_line(fd, line, monotonic_seconds() + timeout)) {
    ::close(fd);
    throw TransportError("the driver at " + host + ":" + std::to_string(port) +
                         " refused this worker (wrong pool secret, or an id it does not expect)");
  }
  auto w = words(line);
  if (w.size() != 2 || w[0] != "OK" || !same(w[1], driver_proof(secret, nonce_w, nonce_d, id))) {
    ::close(fd);
    throw TransportError("the peer at " + host + ":" + std::to_string(port) +
                         " did not prove that it holds the pool's secret: not serving it");
  }
  return fd;
}

int dial_hold(const std::string& host, int port, const std::string& label, double dead_after, double timeout) {
  if (!valid_token(label)) throw TransportError("bad keeper label '" + label + "'");
  std::string nonce_d, line;
  int fd = dial_greeted(host, port, dead_after, timeout, nonce_d);
  if (!send_all(fd, "HOLD " + label + "\n") || !recv_line(fd, line, monotonic_seconds() + timeout) || line != "OK") {
    ::close(fd);
    throw TransportError("the driver at " + host + ":" + std::to_string(port) + " did not take the keeper");
  }
  return fd;
}

// ---- Rendezvous -----------------------------------------------------------------------------------

Rendezvous::Rendezvous(const std::string& address, int port, double dead_after)
    : address_(address), dead_after_(dead_after) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
  addrinfo* res = nullptr;
  int gai = getaddrinfo(address.empty() ? nullptr : address.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (gai != 0) throw TransportError("cannot listen on '" + address + "': " + gai_strerror(gai) + " (give an IP address)");
  listen_fd_ = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int one = 1;
  if (listen_fd_ >= 0) setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (listen_fd_ < 0 || ::bind(listen_fd_, res->ai_addr, res->ai_addrlen) != 0 || ::listen(listen_fd_, 64) != 0) {
    std::string err = strerror(errno);
    freeaddrinfo(res);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    throw TransportError("cannot listen on " + address + ":" + std::to_string(port) + ": " + err);
  }
  freeaddrinfo(res);
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&a)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&a)->sin_port);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  secret_ = random_hex(32);
}

Rendezvous::~Rendezvous() {
  for (auto& [fd, p] : pending_) ::close(fd);
  for (auto& [id, fd] : arrived_) ::close(fd);
  for (auto& [fd, label] : holds_) ::close(fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  std::fill(secret_.begin(), secret_.end(), '\0');
}

void Rendezvous::accept_all() {
  for (;;) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // EAGAIN: none left (other errors: try again on the next turn)
    }
    if (pending_.size() >= 64) {  // more half-open handshakes than any pool needs: refuse
      ::close(fd);
      continue;
    }
    set_dead_after(fd, dead_after_);
    Pending p{random_hex(32), std::string(), monotonic_seconds() + kHandshakeSeconds};
    if (!send_all(fd, std::string(kGreeting) + " " + p.nonce + "\n")) {
      ::close(fd);
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    pending_[fd] = std::move(p);
  }
}

void Rendezvous::drop(int fd) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  ::close(fd);
  pending_.erase(fd);
}

// Reads what fd has; on a complete line, authenticates it. done: fd left pending_.
void Rendezvous::advance(int fd, Pending& p, bool& done) {
  done = false;
  char buf[kMaxLine];
  for (;;) {
    ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (r <= 0) {
      drop(fd);
      done = true;
      return;
    }
    p.in.append(buf, static_cast<size_t>(r));
    if (p.in.size() > kMaxLine || p.in.find('\n') != std::string::npos) break;
  }
  size_t nl = p.in.find('\n');
  if (nl == std::string::npos) {
    if (p.in.size() > kMaxLine) {
      drop(fd);
      done = true;
    }
    return;
  }
  auto w = words(p.in.substr(0, nl));
  bool extra = nl + 1 != p.in.size();  // nothing may follow the line before the driver answered
  std::string nonce = p.nonce;
  done = true;
  if (!extra && w.size() == 4 && w[0] == "WORKER" && expected_.count(w[1]) && !arrived_.count(w[1]) &&
      w[2].size() == 64 && same(w[3], worker_proof(secret_, nonce, w[1], w[2]))) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    pending_.erase(fd);
    if (!send_all(fd, "OK " + driver_proof(secret_, w[2], nonce, w[1]) + "\n")) {
      ::close(fd);
      return;
    }
    arrived_[w[1]] = fd;
    return;
  }
  if (!extra && w.size() == 2 && w[0] == "HOLD" && valid_token(w[1])) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    pending_.erase(fd);
    if (!send_all(fd, "OK\n")) {
      ::close(fd);
      return;
    }
    holds_.emplace_back(fd, w[1]);
    return;
  }
  drop(fd);
}

void Rendezvous::progress() {
  accept_all();
  double t = monotonic_seconds();
  std::vector<int> fds;
  for (auto& [fd, p] : pending_) fds.push_back(fd);
  for (int fd : fds) {
    auto it = pending_.find(fd);
    if (it == pending_.end()) continue;
    bool done = false;
    advance(fd, it->second, done);
    if (!done && t > it->second.deadline) drop(fd);
  }
}

int Rendezvous::take(const std::string& id) {
  auto it = arrived_.find(id);
  if (it == arrived_.end()) return -1;
  int fd = it->second;
  arrived_.erase(it);
  expected_.erase(id);  // an id is used once
  return fd;
}

void Rendezvous::forget(const std::string& id) {
  expected_.erase(id);
  auto it = arrived_.find(id);
  if (it != arrived_.end()) {
    ::close(it->second);
    arrived_.erase(it);
  }
}

std::vector<std::string> Rendezvous::holds() {
  progress();
  std::vector<std::string> out;
  for (size_t i = 0; i < holds_.size();) {
    int fd = holds_[i].first;
    pollfd p{fd, POLLIN, 0};
    char c;
    bool gone = ::poll(&p, 1, 0) > 0 && ((p.revents & (POLLHUP | POLLERR)) || ::recv(fd, &c, 1, MSG_DONTWAIT) <= 0);
    if (gone) {
      ::close(fd);
      holds_.erase(holds_.begin() + static_cast<long>(i));
      continue;
    }
    out.push_back(holds_[i].second);
    ++i;
  }
  return out;
}

std::unique_ptr<Transport> Rendezvous::spawn(const std::shared_ptr<Rendezvous>& self, LocalSpawn launcher,
                                             const std::string& id) {
  if (!valid_token(id)) throw TransportError("bad worker id '" + id + "'");
  if (self->expected_.count(id)) throw TransportError("worker id '" + id + "' is already in use");
  launcher.merge_stderr = true;
  std::string label = launcher.label;
  std::unique_ptr<Transport> t = local_spawn(launcher);
  // A fresh pipe has room for the line, so this does not block; a launcher that already died
  // shows up as the transport's end with its output.
  std::string line = self->secret_ + "\n";
  try {
    t->write_some(line.data(), line.size());
  } catch (const TransportError&) {
  }
  std::fill(line.begin(), line.end(), '\0');
  t->close();
  self->expect(id);
  return std::make_unique<DialInTransport>(self, std::move(t), id, label);
}

}  // namespace sky::pool
