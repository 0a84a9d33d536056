// The authenticated rendezvous store (see store.hpp). One server thread polls the listener and
// every connection; a connection is served only after it proved the pool's secret:
//   server -> client  "skyrun-store 1\n" nonce_s[32]
//   client -> server  nonce_c[32] HMAC(secret, "client" nonce_s nonce_c)
//   server -> client  HMAC(secret, "server" nonce_s nonce_c)        (nothing, and a close, if wrong)
// then messages [u32 length][body][HMAC(session, direction seq body)] with session =
// HMAC(secret, "session" nonce_s nonce_c) and seq counting each direction's messages, so a
// message cannot be forged, changed, replayed or reordered.
#include "dist/store.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>

namespace sky::dist {

namespace {

using Clock = std::chrono::steady_clock;
using Mac = std::array<uint8_t, 32>;

constexpr std::string_view kMagic = "skyrun-store 1\n";
constexpr size_t kNonce = 32;
constexpr size_t kMac = 32;
constexpr size_t kMaxBody = kStoreMaxValue + 3 * kStoreMaxKey + 64;  // the largest message (CAS)
constexpr int kMaxConnections = 4096;
constexpr int kMaxUnproven = 64;                                      // connections still in the handshake
constexpr auto kProveWithin = std::chrono::seconds(10);

enum Op : uint8_t { OP_SET = 1, OP_GET, OP_ADD, OP_CAS, OP_DEL, OP_CHECK, OP_NUM_KEYS };
enum Status : uint8_t { ST_OK = 0, ST_MISSING = 1, ST_ERROR = 2 };

Mac hmac(std::string_view key, std::initializer_list<std::string_view> parts) {
  std::string data;
  for (std::string_view p : parts) data.append(p.data(), p.size());
  Mac out{};
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
            data.size(), out.data(), &len) || len != kMac)
    throw StoreError("rendezvous store: HMAC-SHA256 failed");
  return out;
}

std::string_view view(const Mac& m) { return {reinterpret_cast<const char*>(m.data()), m.size()}; }

bool same_mac(const Mac& a, const char* b) { return CRYPTO_memcmp(a.data(), b, kMac) == 0; }

std::string random_bytes(size_t n) {
  std::string s(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(s.data()), static_cast<int>(n)) != 1)
    throw StoreError("rendezvous store: no random bytes from the system");
  return s;
}

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}
uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}
void put_str(std::string& out, std::string_view s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out.append(s.data(), s.size());
}

// Reads the fields of a message body; any overrun or trailing byte is an error.
struct Reader {
  std::string_view in;
  bool ok = true;
  uint8_t u8() {
    if (in.empty()) return ok = false, 0;
    uint8_t v = static_cast<uint8_t>(in[0]);
    in.remove_prefix(1);
    return v;
  }
  uint64_t u64() {
    if (in.size() < 8) return ok = false, 0;
    uint64_t v = get_u64(in.data());
    in.remove_prefix(8);
    return v;
  }
  std::string_view str(size_t max) {
    if (in.size() < 4) return ok = false, std::string_view();
    uint32_t n = get_u32(in.data());
    if (n > max || in.size() - 4 < n) return ok = false, std::string_view();
    std::string_view s = in.substr(4, n);
    in.remove_prefix(4 + n);
    return s;
  }
};

// The message sealed for one direction: [u32 len][body][mac].
std::string seal(const Mac& session, char direction, uint64_t seq, std::string_view body) {
  std::string seqb;
  put_u64(seqb, seq);
  Mac m = hmac(view(session), {std::string_view(&direction, 1), seqb, body});
  std::string out;
  put_u32(out, static_cast<uint32_t>(body.size()));
  out.append(body.data(), body.size());
  out.append(view(m));
  return out;
}

// Parses one sealed message at the front of buf. 0: incomplete; -1: broken (too long or a bad
// mac); else the bytes it spans, with body set.
long unseal(std::string_view buf, const Mac& session, char direction, uint64_t seq, std::string_view& body) {
  if (buf.size() < 4) return 0;
  uint32_t n = get_u32(buf.data());
  if (n > kMaxBody) return -1;
  if (buf.size() < 4 + static_cast<size_t>(n) + kMac) return 0;
  body = buf.substr(4, n);
  std::string seqb;
  put_u64(seqb, seq);
  Mac m = hmac(view(session), {std::string_view(&direction, 1), seqb, body});
  if (!same_mac(m, buf.data() + 4 + n)) return -1;
  return static_cast<long>(4 + n + kMac);
}

std::string addr_text(const sockaddr* a) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (a->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(a);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  if (a->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(a);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return "?";
}

void check_secret(const std::string& secret) {
  if (secret.size() < kStoreMinSecret)
    throw StoreError("rendezvous store: the pool secret is missing or shorter than " + std::to_string(kStoreMinSecret) +
                     " bytes (SKYRUN_DIST_SECRET, the same on every rank)");
}

}  // namespace

std::string store_new_secret() {
  std::string raw = random_bytes(32), hex;
  static const char* digits = "0123456789abcdef";
  for (unsigned char c : raw) {
    hex.push_back(digits[c >> 4]);
    hex.push_back(digits[c & 15]);
  }
  return hex;
}

// ---- server -------------------------------------------------------------------------------------

struct StoreServer::State {
  std::string secret;
  std::string where;
  int listen_fd = -1;
  int wake[2] = {-1, -1};
  std::thread thread;
  std::atomic<int64_t> refused{0};

  struct Peer {
    int fd = -1;
    std::string name;  // "127.0.0.1:4242"
    std::string nonce_s;
    bool proven = false;
    Clock::time_point deadline;
    Mac session{};
    uint64_t seq_in = 0, seq_out = 0;
    std::string in, out;
    size_t out_pos = 0;
    bool closing = false;  // close once out is written
  };
  std::vector<Peer> peers;
  std::map<std::string, std::string> data;
  size_t total = 0;

  void run();
  void accept_all();
  void on_readable(Peer& p);
  void flush(Peer& p);
  void refuse(Peer& p, const std::string& why);
  std::string handle(std::string_view body);
  bool set_value(const std::string& key, std::string value, std::string& err);
};

void StoreServer::State::refuse(Peer& p, const std::string& why) {
  int64_t n = ++refused;
  if (n <= 10)
    fprintf(stderr, "skyrun rendezvous store %s: refused the connection from %s: %s\n", where.c_str(), p.name.c_str(),
            why.c_str());
  ::close(p.fd);
  p.fd = -1;
}

void StoreServer::State::accept_all() {
  for (;;) {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&a), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a connection that went away
    int unproven = 0;
    for (const Peer& p : peers) unproven += !p.proven;
    if (static_cast<int>(peers.size()) >= kMaxConnections || unproven >= kMaxUnproven) {
      ::close(fd);
      ++refused;
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Peer p;
    p.fd = fd;
    p.name = addr_text(reinterpret_cast<sockaddr*>(&a));
    p.nonce_s = random_bytes(kNonce);
    p.deadline = Clock::now() + kProveWithin;
    p.out.assign(kMagic.data(), kMagic.size());
    p.out += p.nonce_s;
    peers.push_back(std::move(p));
    flush(peers.back());
  }
}

void StoreServer::State::flush(Peer& p) {
  while (p.fd >= 0 && p.out_pos < p.out.size()) {
    ssize_t w = ::send(p.fd, p.out.data() + p.out_pos, p.out.size() - p.out_pos, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      ::close(p.fd);
      p.fd = -1;
      return;
    }
    p.out_pos += static_cast<size_t>(w);
  }
  if (p.fd >= 0 && p.out_pos == p.out.size()) {
    p.out.clear();
    p.out_pos = 0;
    if (p.closing) {
      ::close(p.fd);
      p.fd = -1;
    }
  }
}

void StoreServer::State::on_readable(Peer& p) {
  char buf[65536];
  for (;;) {
    // Before the proof, read no more than the proof itself.
    size_t want = p.proven ? sizeof buf : 2 * kNonce - std::min(p.in.size(), 2 * kNonce);
    if (want == 0) break;
    ssize_t r = ::recv(p.fd, buf, want, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (r <= 0) {
      if (!p.proven && !p.in.empty()) {
        refuse(p, "it closed the connection before proving the pool secret");
      } else {
        ::close(p.fd);
        p.fd = -1;
      }
      return;
    }
    p.in.append(buf, static_cast<size_t>(r));
    if (p.in.size() > 4 + kMaxBody + kMac) break;  // parse what we have first
  }
  if (!p.proven) {
    if (p.in.size() < 2 * kNonce) return;
    std::string_view nonce_c(p.in.data(), kNonce);
    Mac expect = hmac(secret, {"client", p.nonce_s, nonce_c});
    if (!same_mac(expect, p.in.data() + kNonce)) {
      refuse(p, "it does not know the pool secret");
      return;
    }
    p.proven = true;
    p.session = hmac(secret, {"session", p.nonce_s, nonce_c});
    p.out += std::string(view(hmac(secret, {"server", p.nonce_s, nonce_c})));
    p.in.erase(0, 2 * kNonce);
  }
  size_t pos = 0;
  while (p.fd >= 0 && !p.closing) {
    std::string_view body;
    long n = unseal(std::string_view(p.in).substr(pos), p.session, 'C', p.seq_in, body);
    if (n == 0) break;
    if (n < 0) {
      refuse(p, "a message that is not signed with its session key");
      return;
    }
    ++p.seq_in;
    p.out += seal(p.session, 'S', p.seq_out++, handle(body));
    pos += static_cast<size_t>(n);
  }
  if (p.fd >= 0) {
    p.in.erase(0, pos);
    flush(p);
  }
}

bool StoreServer::State::set_value(const std::string& key, std::string value, std::string& err) {
  auto it = data.find(key);
  size_t old = it == data.end() ? 0 : key.size() + it->second.size();
  if (total - old + key.size() + value.size() > kStoreMaxTotal) {
    err = "the store is full (" + std::to_string(kStoreMaxTotal >> 20) + " MiB of keys and values)";
    return false;
  }
  total = total - old + key.size() + value.size();
  data[key] = std::move(value);
  return true;
}

std::string StoreServer::State::handle(std::string_view body) {
  Reader r{body};
  std::string reply;
  auto error = [&](const std::string& msg) {
    reply.assign(1, static_cast<char>(ST_ERROR));
    put_str(reply, msg);
    return reply;
  };
  uint8_t op = r.u8();
  std::string key;
  if (op != OP_CHECK && op != OP_NUM_KEYS) key = std::string(r.str(kStoreMaxKey));
  std::string err;
  switch (op) {
    case OP_SET: {
      std::string value(r.str(kStoreMaxValue));
      if (!r.ok || !r.in.empty()) return error("malformed SET");
      if (!set_value(key, std::move(value), err)) return error(err);
      return std::string(1, static_cast<char>(ST_OK));
    }
    case OP_GET: {
      if (!r.ok || !r.in.empty()) return error("malformed GET");
      auto it = data.find(key);
      if (it == data.end()) return std::string(1, static_cast<char>(ST_MISSING));
      reply.assign(1, static_cast<char>(ST_OK));
      put_str(reply, it->second);
      return reply;
    }
    case OP_ADD: {
      int64_t delta = static_cast<int64_t>(r.u64());
      if (!r.ok || !r.in.empty()) return error("malformed ADD");
      int64_t now = 0;
      auto it = data.find(key);
      if (it != data.end()) {
        char* end = nullptr;
        errno = 0;
        long long v = strtoll(it->second.c_str(), &end, 10);
        if (it->second.empty() || *end || errno) return error("key '" + key + "' does not hold a number");
        now = v;
      }
      now += delta;
      if (!set_value(key, std::to_string(now), err)) return error(err);
      reply.assign(1, static_cast<char>(ST_OK));
      put_u64(reply, static_cast<uint64_t>(now));
      return reply;
    }
    case OP_CAS: {
      std::string expected(r.str(kStoreMaxValue)), desired(r.str(kStoreMaxValue));
      if (!r.ok || !r.in.empty()) return error("malformed CAS");
      auto it = data.find(key);
      std::string now;
      if (it == data.end()) {
        if (expected.empty()) {
          if (!set_value(key, desired, err)) return error(err);
          now = desired;
        } else {
          now = expected;
        }
      } else if (it->second == expected) {
        if (!set_value(key, desired, err)) return error(err);
        now = desired;
      } else {
        now = it->second;
      }
      reply.assign(1, static_cast<char>(ST_OK));
      put_str(reply, now);
      return reply;
    }
    case OP_DEL: {
      if (!r.ok || !r.in.empty()) return error("malformed DELETE");
      auto it = data.find(key);
      bool had = it != data.end();
      if (had) {
        total -= key.size() + it->second.size();
        data.erase(it);
      }
      reply.assign(1, static_cast<char>(ST_OK));
      reply.push_back(had ? 1 : 0);
      return reply;
    }
    case OP_CHECK: {
      uint64_t n = r.u64();
      if (!r.ok || n > body.size()) return error("malformed CHECK");
      bool all = true;
      for (uint64_t i = 0; i < n && r.ok; ++i) all = data.count(std::string(r.str(kStoreMaxKey))) && all;
      if (!r.ok || !r.in.empty()) return error("malformed CHECK");
      reply.assign(1, static_cast<char>(ST_OK));
      reply.push_back(all ? 1 : 0);
      return reply;
    }
    case OP_NUM_KEYS: {
      if (!r.ok || !r.in.empty()) return error("malformed NUM_KEYS");
      reply.assign(1, static_cast<char>(ST_OK));
      put_u64(reply, data.size());
      return reply;
    }
    default: return error("unknown operation " + std::to_string(op));
  }
}

void StoreServer::State::run() {
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({wake[0], POLLIN, 0});
    fds.push_back({listen_fd, POLLIN, 0});
    auto now = Clock::now();
    for (Peer& p : peers) {
      if (!p.proven && now >= p.deadline && p.fd >= 0) refuse(p, "it did not prove the pool secret within 10 s");
      if (p.fd >= 0) fds.push_back({p.fd, static_cast<short>(POLLIN | (p.out.empty() ? 0 : POLLOUT)), 0});
    }
    int rc = ::poll(fds.data(), static_cast<nfds_t>(fds.size()), 1000);
    if (rc < 0 && errno != EINTR) return;
    if (fds[0].revents) return;  // the owner stops the server
    if (fds[1].revents & POLLIN) accept_all();
    size_t k = 2;
    for (Peer& p : peers) {
      if (p.fd < 0) continue;
      if (k >= fds.size() || fds[k].fd != p.fd) continue;  // accepted during this turn
      short ev = fds[k++].revents;
      if (ev & POLLOUT) flush(p);
      if (p.fd >= 0 && (ev & (POLLIN | POLLHUP | POLLERR))) on_readable(p);
    }
    std::vector<Peer> keep;
    keep.reserve(peers.size());
    for (Peer& p : peers)
      if (p.fd >= 0) keep.push_back(std::move(p));
    peers.swap(keep);
  }
}

StoreServer::StoreServer(const std::string& address, int port, std::string secret) : state_(std::make_shared<State>()) {
  check_secret(secret);
  state_->secret = std::move(secret);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int gai = getaddrinfo(address.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (gai != 0) throw StoreError("rendezvous store: cannot resolve MASTER_ADDR '" + address + "': " + gai_strerror(gai));
  std::string last = "no address";
  for (addrinfo* ai = res; ai && state_->listen_fd < 0; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last = strerror(errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
      last = errno == EADDRNOTAVAIL ? std::string(strerror(errno)) + ": it is not an address of this host"
                                    : std::string(strerror(errno));
      ::close(fd);
      continue;
    }
    state_->listen_fd = fd;
    state_->where = addr_text(ai->ai_addr);
  }
  freeaddrinfo(res);
  if (state_->listen_fd < 0)
    throw StoreError("cannot listen there: " + last);
  where_ = state_->where;
  if (pipe2(state_->wake, O_CLOEXEC) != 0) {
    ::close(state_->listen_fd);
    throw StoreError(std::string("rendezvous store: cannot make a pipe: ") + strerror(errno));
  }
  std::shared_ptr<State> s = state_;
  s->thread = std::thread([s] { s->run(); });
}

StoreServer::~StoreServer() {
  (void)!::write(state_->wake[1], "x", 1);
  if (state_->thread.joinable()) state_->thread.join();
  for (auto& p : state_->peers)
    if (p.fd >= 0) ::close(p.fd);
  ::close(state_->listen_fd);
  ::close(state_->wake[0]);
  ::close(state_->wake[1]);
}

int64_t StoreServer::refused() const { return state_->refused.load(); }

// ---- client -------------------------------------------------------------------------------------

struct StoreClient::Conn {
  int fd = -1;
  Mac session{};
  uint64_t seq_out = 0, seq_in = 0;
  std::mutex mutex;
  std::string where;
  std::chrono::milliseconds io_timeout{0};

  ~Conn() {
    if (fd >= 0) ::close(fd);
  }

  [[noreturn]] void lost(const std::string& what) {
    throw StoreError("rendezvous store at " + where + ": " + what);
  }

  // Reads exactly n bytes within the I/O timeout.
  std::string read_exact(size_t n) {
    std::string out;
    out.reserve(n);
    auto deadline = Clock::now() + io_timeout;
    char buf[65536];
    while (out.size() < n) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) lost("no answer within " + std::to_string(io_timeout.count() / 1000) + " s");
      pollfd p{fd, POLLIN, 0};
      int rc = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
      if (rc < 0 && errno != EINTR) lost(strerror(errno));
      if (rc <= 0) continue;
      ssize_t r = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
      if (r == 0) lost("the connection was closed");
      if (r < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        lost(strerror(errno));
      }
      out.append(buf, static_cast<size_t>(r));
    }
    return out;
  }

  void write_all(std::string_view s) {
    while (!s.empty()) {
      ssize_t w = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        lost(strerror(errno));
      }
      s.remove_prefix(static_cast<size_t>(w));
    }
  }

  // Sends one request and returns the reply's body after its status byte; ST_ERROR raises.
  std::string call(const std::string& body, uint8_t& status) {
    std::lock_guard<std::mutex> lock(mutex);
    if (fd < 0) lost("the connection was closed");
    write_all(seal(session, 'C', seq_out++, body));
    std::string head = read_exact(4);
    uint32_t n = get_u32(head.data());
    if (n == 0 || n > kMaxBody) lost("a malformed answer");
    std::string whole = head + read_exact(n + kMac);
    std::string_view reply;  // a view into whole
    if (unseal(whole, session, 'S', seq_in, reply) <= 0) lost("an answer that is not signed with the session key");
    ++seq_in;
    status = static_cast<uint8_t>(reply[0]);
    std::string payload(reply.substr(1));
    if (status == ST_ERROR) {
      Reader r{payload};
      std::string_view msg = r.str(1 << 16);
      throw StoreError("rendezvous store at " + where + ": " + std::string(msg));
    }
    return payload;
  }
};

StoreClient::StoreClient(const std::string& host, int port, std::string secret, std::chrono::milliseconds timeout,
                         std::function<bool()> cancelled)
    : where_(host + ":" + std::to_string(port)), conn_(std::make_unique<Conn>()), cancelled_(std::move(cancelled)) {
  check_secret(secret);
  conn_->where = where_;
  conn_->io_timeout = std::max(timeout, std::chrono::milliseconds(30000));
  auto deadline = Clock::now() + timeout;
  auto pause = std::chrono::milliseconds(10);
  std::string last;
  for (;;) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int gai = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (gai != 0) throw StoreError("rendezvous store: cannot resolve MASTER_ADDR '" + host + "': " + gai_strerror(gai));
    for (addrinfo* ai = res; ai && conn_->fd < 0; ai = ai->ai_next) {
      // non-blocking, so that an address nobody answers at (no RST) costs the timeout, not TCP's
      int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (fd < 0) continue;
      int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
      if (rc != 0 && errno == EINPROGRESS) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        pollfd p{fd, POLLOUT, 0};
        int pr = ::poll(&p, 1, static_cast<int>(std::clamp<long long>(left, 10, 1000)));
        int err = pr > 0 ? 0 : ETIMEDOUT;
        socklen_t len = sizeof err;
        if (pr > 0) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        rc = err == 0 ? 0 : -1;
        errno = err;
      }
      if (rc == 0) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        conn_->fd = fd;
      } else {
        last = strerror(errno);
        ::close(fd);
      }
    }
    freeaddrinfo(res);
    if (conn_->fd >= 0) break;
    if (cancelled_ && cancelled_()) throw StoreError("rendezvous store at " + where_ + ": interrupted");
    if (Clock::now() >= deadline) throw StoreUnreachable(last);
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(500));
  }
  int one = 1;
  setsockopt(conn_->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::string hello;
  try {
    hello = conn_->read_exact(kMagic.size() + kNonce);
  } catch (const StoreError& e) {
    throw StoreError(std::string(e.what()) + " (is it a skyrun rendezvous store?)");
  }
  if (std::string_view(hello).substr(0, kMagic.size()) != kMagic)
    throw StoreError("the server at " + where_ + " is not a skyrun rendezvous store");
  std::string nonce_s = hello.substr(kMagic.size()), nonce_c = random_bytes(kNonce);
  conn_->write_all(nonce_c + std::string(view(hmac(secret, {"client", nonce_s, nonce_c}))));
  std::string answer;
  try {
    answer = conn_->read_exact(kMac);
  } catch (const StoreError&) {
    throw StoreError("the rendezvous store at " + where_ +
                     " refused this process: it does not know the pool secret (SKYRUN_DIST_SECRET differs from rank 0's)");
  }
  if (!same_mac(hmac(secret, {"server", nonce_s, nonce_c}), answer.data()))
    throw StoreError("the server at " + where_ + " does not know the pool secret: it is not this pool's rendezvous store");
  conn_->session = hmac(secret, {"session", nonce_s, nonce_c});
}

StoreClient::~StoreClient() = default;

namespace {
std::string request(uint8_t op, std::string_view key) {
  std::string b(1, static_cast<char>(op));
  put_str(b, key);
  return b;
}
void check_key(const std::string& key) {
  if (key.size() > kStoreMaxKey) throw StoreError("rendezvous store: key longer than " + std::to_string(kStoreMaxKey) + " bytes");
}
void check_value(size_t n) {
  if (n > kStoreMaxValue) throw StoreError("rendezvous store: value larger than " + std::to_string(kStoreMaxValue >> 20) + " MiB");
}
std::string_view as_view(const std::vector<uint8_t>& v) { return {reinterpret_cast<const char*>(v.data()), v.size()}; }
std::vector<uint8_t> as_bytes(std::string_view s) { return {s.begin(), s.end()}; }
}  // namespace

void StoreClient::set(const std::string& key, const std::vector<uint8_t>& value) {
  check_key(key);
  check_value(value.size());
  std::string b = request(OP_SET, key);
  put_str(b, as_view(value));
  uint8_t st;
  conn_->call(b, st);
}

std::vector<uint8_t> StoreClient::get(const std::string& key, std::chrono::milliseconds timeout) {
  check_key(key);
  if (!wait({key}, timeout))
    throw StoreError("rendezvous store at " + where_ + ": key '" + key + "' did not appear within " +
                     std::to_string(timeout.count() / 1000) + " s");
  uint8_t st;
  std::string p = conn_->call(request(OP_GET, key), st);
  if (st == ST_MISSING) throw StoreError("rendezvous store at " + where_ + ": key '" + key + "' was deleted");
  Reader r{p};
  return as_bytes(r.str(kStoreMaxValue));
}

int64_t StoreClient::add(const std::string& key, int64_t delta) {
  check_key(key);
  std::string b = request(OP_ADD, key);
  put_u64(b, static_cast<uint64_t>(delta));
  uint8_t st;
  std::string p = conn_->call(b, st);
  if (p.size() != 8) throw StoreError("rendezvous store at " + where_ + ": a malformed answer to ADD");
  return static_cast<int64_t>(get_u64(p.data()));
}

std::vector<uint8_t> StoreClient::compare_set(const std::string& key, const std::vector<uint8_t>& expected,
                                              const std::vector<uint8_t>& desired) {
  check_key(key);
  check_value(expected.size());
  check_value(desired.size());
  std::string b = request(OP_CAS, key);
  put_str(b, as_view(expected));
  put_str(b, as_view(desired));
  uint8_t st;
  std::string p = conn_->call(b, st);
  Reader r{p};
  return as_bytes(r.str(kStoreMaxValue));
}

bool StoreClient::remove(const std::string& key) {
  check_key(key);
  uint8_t st;
  std::string p = conn_->call(request(OP_DEL, key), st);
  return !p.empty() && p[0] == 1;
}

bool StoreClient::check(const std::vector<std::string>& keys) {
  std::string b(1, static_cast<char>(OP_CHECK));
  put_u64(b, keys.size());
  for (const std::string& k : keys) {
    check_key(k);
    put_str(b, k);
  }
  uint8_t st;
  std::string p = conn_->call(b, st);
  return !p.empty() && p[0] == 1;
}

int64_t StoreClient::num_keys() {
  uint8_t st;
  std::string p = conn_->call(std::string(1, static_cast<char>(OP_NUM_KEYS)), st);
  if (p.size() != 8) throw StoreError("rendezvous store at " + where_ + ": a malformed answer to NUM_KEYS");
  return static_cast<int64_t>(get_u64(p.data()));
}

bool StoreClient::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    if (check(keys)) return true;
    if (cancelled_ && cancelled_()) throw StoreError("rendezvous store at " + where_ + ": interrupted");
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
}

}  // namespace sky::dist
