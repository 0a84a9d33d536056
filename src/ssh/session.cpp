// One libssh session per host: resolve the target through ssh_config, connect within the
// timeout, check the host key against known_hosts, authenticate, then run exec channels.
#include "ssh/session.hpp"

#include "pool/net.hpp"

#include <libssh/libssh.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcntl.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <mutex>

namespace sky::ssh {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

std::string format_seconds(double s) {
  char buf[32];
  if (s == static_cast<long>(s)) snprintf(buf, sizeof buf, "%ld s", static_cast<long>(s));
  else snprintf(buf, sizeof buf, "%.3g s", s);
  return buf;
}

void libssh_init_once() {
  static std::once_flag once;
  std::call_once(once, [] { ssh_init(); });
}

// Splits a byte stream into lines for an OutputFn.
struct LineSplitter {
  std::string pending;
  void feed(const char* p, size_t n, bool is_stderr, const OutputFn& fn) {
    pending.append(p, n);
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1)
      fn(std::string_view(pending).substr(start, nl - start), is_stderr);
    pending.erase(0, start);
  }
  void flush(bool is_stderr, const OutputFn& fn) {
    if (!pending.empty()) fn(pending, is_stderr);
    pending.clear();
  }
};

bool config_uses_proxy(const std::string& path) {
  FILE* f = fopen(path.c_str(), "r");
  if (!f) return false;
  char line[1024];
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) {
    for (char* p = line; *p; p++) *p = static_cast<char>(tolower(static_cast<unsigned char>(*p)));
    found = strstr(line, "proxycommand") || strstr(line, "proxyjump");
  }
  fclose(f);
  return found;
}

std::string remote_path_expr(const std::string& path) {
  if (path.rfind("~/", 0) == 0) return "\"$HOME\"/" + shell_quote(path.substr(2));
  return shell_quote(path);
}

}  // namespace

std::string shell_quote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  out += "'";
  return out;
}

Target parse_target(std::string_view spec) {
  Target t;
  if (spec.empty()) throw Error("ssh: empty host");
  auto at = spec.rfind('@');
  if (at != std::string_view::npos) {
    t.user = std::string(spec.substr(0, at));
    spec.remove_prefix(at + 1);
    if (t.user.empty()) throw Error("ssh: empty user in host '" + std::string(spec) + "'");
  }
  std::string_view port;
  if (!spec.empty() && spec.front() == '[') {  // [v6addr]:port
    auto close = spec.find(']');
    if (close == std::string_view::npos) throw Error("ssh: unclosed '[' in host '" + std::string(spec) + "'");
    t.host = std::string(spec.substr(1, close - 1));
    auto rest = spec.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') throw Error("ssh: bad host '" + std::string(spec) + "'");
      port = rest.substr(1);
    }
  } else {
    auto colon = spec.find(':');
    if (colon != std::string_view::npos && spec.find(':', colon + 1) == std::string_view::npos) {
      t.host = std::string(spec.substr(0, colon));
      port = spec.substr(colon + 1);
    } else {
      t.host = std::string(spec);
    }
  }
  if (t.host.empty()) throw Error("ssh: empty host name in '" + std::string(spec) + "'");
  if (!port.empty() || (spec.size() && spec.back() == ':')) {
    int p = 0;
    for (char c : port) {
      if (c < '0' || c > '9' || p > 65535) { p = -1; break; }
      p = p * 10 + (c - '0');
    }
    if (p <= 0 || p > 65535) throw Error("ssh: bad port '" + std::string(port) + "' in host '" + t.host + "'");
    t.port = p;
  }
  return t;
}

std::string home_dir() {
  if (const char* h = std::getenv("HOME"); h && *h) return h;
  if (struct passwd* pw = getpwuid(getuid()); pw && pw->pw_dir) return pw->pw_dir;
  return "/";
}

// ---- connect --------------------------------------------------------------------------------

void Session::fail(const std::string& what) { throw Error("ssh " + name_ + ": " + what); }

std::unique_ptr<Session> Session::connect(const ConnectOptions& opts) {
  libssh_init_once();
  Target target = parse_target(opts.target);
  std::unique_ptr<Session> self(new Session());
  self->name_ = opts.target;
  ssh_session s = ssh_new();
  if (!s) throw Error("ssh: out of memory");
  self->session_ = s;

  std::string home = home_dir();
  bool no = false;
  ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no);  // only the config file we name below
  ssh_options_set(s, SSH_OPTIONS_SSH_DIR, (home + "/.ssh").c_str());
  if (ssh_options_set(s, SSH_OPTIONS_HOST, target.host.c_str()) != SSH_OK) self->fail("bad host name");
  if (!target.user.empty()) ssh_options_set(s, SSH_OPTIONS_USER, target.user.c_str());
  if (target.port) {
    unsigned int port = static_cast<unsigned>(target.port);
    ssh_options_set(s, SSH_OPTIONS_PORT, &port);
  }
  std::string config = opts.config.empty() ? home + "/.ssh/config" : opts.config;
  if (config != "none" && file_exists(config)) {
    if (ssh_options_parse_config(s, config.c_str()) != SSH_OK)
      self->fail("cannot parse ssh config " + config + ": " + ssh_get_error(s));
  } else if (!opts.config.empty() && config != "none") {
    self->fail("ssh config " + config + " does not exist");
  }
  std::string known_hosts = opts.known_hosts.empty() ? home + "/.ssh/known_hosts" : opts.known_hosts;
  ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, known_hosts.c_str());
  ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/etc/ssh/ssh_known_hosts");
  double timeout = opts.connect_timeout > 0 ? opts.connect_timeout : 10;
  long sec = static_cast<long>(timeout);
  long usec = static_cast<long>((timeout - sec) * 1e6);
  ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &sec);
  ssh_options_set(s, SSH_OPTIONS_TIMEOUT_USEC, &usec);

  // What ssh_config made of the target.
  char* v = nullptr;
  if (ssh_options_get(s, SSH_OPTIONS_HOST, &v) == SSH_OK) { self->host_ = v; ssh_string_free_char(v); }
  v = nullptr;
  if (ssh_options_get(s, SSH_OPTIONS_USER, &v) == SSH_OK) { self->user_ = v; ssh_string_free_char(v); }
  unsigned int port = 22;
  ssh_options_get_port(s, &port);
  self->port_ = static_cast<int>(port);
  self->name_ = self->user_ + "@" + self->host_ + ":" + std::to_string(self->port_);
  if (opts.target != self->name_ && opts.target.find('@') == std::string::npos &&
      opts.target.find(':') == std::string::npos && opts.target != self->host_)
    self->name_ = opts.target + " (" + self->name_ + ")";  // an ssh_config alias

  // The TCP connection is ours (exact timeout, the real reason on failure) unless ssh_config
  // routes through a proxy, which libssh then runs.
  auto t0 = Clock::now();
  if (config == "none" || !config_uses_proxy(config)) {
    bool timed_out = false;
    int fd;
    try {
      fd = pool::tcp_connect(self->host_, self->port_, timeout, timed_out);
      pool::set_dead_after(fd, opts.dead_after);
    } catch (const std::exception& e) {  // pool::tcp_connect throws sky::Error
      if (timed_out) self->fail("connect timed out after " + format_seconds(timeout) + " (connect_timeout)");
      self->fail(std::string("cannot connect: ") + e.what());
    }
    ssh_options_set(s, SSH_OPTIONS_FD, &fd);
    struct stat st;
    if (::fstat(fd, &st) == 0) {
      self->own_fd_ = fd;
      self->own_ino_ = static_cast<unsigned long>(st.st_ino);
    }
  }
  if (ssh_connect(s) != SSH_OK) {
    std::string err = ssh_get_error(s);
    double took = seconds_since(t0);
    if (err.find("Timeout") != std::string::npos || err.find("timed out") != std::string::npos ||
        took >= timeout * 0.95)
      self->fail("connect timed out after " + format_seconds(timeout) + " (connect_timeout): " + err);
    self->fail("cannot connect: " + err);
  }

  // ---- host key ----
  ssh_key server_key = nullptr;
  if (ssh_get_server_publickey(s, &server_key) != SSH_OK) self->fail("no host key: " + std::string(ssh_get_error(s)));
  unsigned char* hash = nullptr;
  size_t hash_len = 0;
  std::string key_type = ssh_key_type_to_char(ssh_key_type(server_key));
  if (ssh_get_publickey_hash(server_key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hash_len) == 0) {
    char* fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hash_len);
    if (fp) { self->fingerprint_ = fp; ssh_string_free_char(fp); }
    ssh_clean_pubkey_hash(&hash);
  }
  ssh_key_free(server_key);
  std::string offered = key_type + " key " + self->fingerprint_;
  switch (ssh_session_is_known_server(s)) {
    case SSH_KNOWN_HOSTS_OK:
      break;
    case SSH_KNOWN_HOSTS_CHANGED:
    case SSH_KNOWN_HOSTS_OTHER:
      self->fail("HOST KEY CHANGED: the server offers " + offered + ", but " + known_hosts +
                 " holds a different key for it (someone may be intercepting the connection); refused. "
                 "If the host was reinstalled, remove the old key (ssh-keygen -R) and connect again");
    case SSH_KNOWN_HOSTS_UNKNOWN:
    case SSH_KNOWN_HOSTS_NOT_FOUND:
      if (opts.policy == HostKeyPolicy::strict)
        self->fail("unknown host key: the server offers " + offered + ", which is not in " + known_hosts +
                   "; refused under host_key_policy=\"strict\" (check the fingerprint, then add the key "
                   "with ssh-keyscan or use host_key_policy=\"accept-new\")");
      {
        auto slash = known_hosts.rfind('/');
        if (slash != std::string::npos && slash > 0) {
          std::string dir = known_hosts.substr(0, slash);
          if (!file_exists(dir)) ::mkdir(dir.c_str(), 0700);
        }
      }
      if (ssh_session_update_known_hosts(s) != SSH_OK)
        self->fail("cannot add the host key to " + known_hosts + ": " + ssh_get_error(s));
      self->host_key_added_ = true;
      break;
    case SSH_KNOWN_HOSTS_ERROR:
    default:
      self->fail("cannot check the host key against " + known_hosts + ": " + ssh_get_error(s));
  }

  // ---- authentication ----
  int rc;
  std::string tried;
  if (!opts.key.empty()) {
    ssh_key key = nullptr;
    if (ssh_pki_import_privkey_file(opts.key.c_str(), nullptr, nullptr, nullptr, &key) != SSH_OK)
      self->fail("cannot read the private key " + opts.key + " (missing, unreadable or passphrase-protected)");
    rc = ssh_userauth_publickey(s, nullptr, key);
    ssh_key_free(key);
    tried = "key " + opts.key;
  } else {
    rc = ssh_userauth_publickey_auto(s, nullptr, nullptr);
    tried = std::getenv("SSH_AUTH_SOCK") ? "the agent and the IdentityFile/default keys"
                                         : "the IdentityFile/default keys (no agent)";
  }
  if (rc != SSH_AUTH_SUCCESS) {
    std::string detail = rc == SSH_AUTH_ERROR ? std::string(": ") + ssh_get_error(s) : "";
    self->fail("authentication failed for " + self->user_ + "@" + self->host_ + " (tried " + tried + ")" + detail);
  }
  // The connect timeout stays the limit of each blocking step later (opening a channel, waiting
  // for window space); run() applies its own overall limit on top.
  return self;
}

Session::~Session() { disconnect(); }

bool Session::connected() const { return session_ && ssh_is_connected(session_); }

void Session::disconnect() {
  if (!session_) return;
  ssh_disconnect(session_);
  ssh_free(session_);
  session_ = nullptr;
  // libssh does not close a socket it was given; close ours unless that number now names
  // something else
  struct stat st;
  if (own_fd_ >= 0 && ::fstat(own_fd_, &st) == 0 && S_ISSOCK(st.st_mode) &&
      static_cast<unsigned long>(st.st_ino) == own_ino_)
    ::close(own_fd_);
  own_fd_ = -1;
}

// ---- exec channels ----------------------------------------------------------------------------

ssh_channel Session::open_exec(const std::string& command) {
  if (!session_) fail("session is closed");
  ssh_channel ch = ssh_channel_new(session_);
  if (!ch) fail("cannot create a channel: " + std::string(ssh_get_error(session_)));
  if (ssh_channel_open_session(ch) != SSH_OK) {
    std::string err = ssh_get_error(session_);
    ssh_channel_free(ch);
    fail("cannot open a channel: " + err);
  }
  if (ssh_channel_request_exec(ch, command.c_str()) != SSH_OK) {
    std::string err = ssh_get_error(session_);
    ssh_channel_close(ch);
    ssh_channel_free(ch);
    fail("cannot run a command: " + err);
  }
  return ch;
}

RunResult Session::run(const std::string& command, std::string_view input, const OutputFn& on_output,
                       double timeout) {
  if (!session_) fail("session is closed");
  // Worker channels may have made the session non-blocking; a command runs blocking.
  struct BlockingScope {
    ssh_session s;
    int was;
    explicit BlockingScope(ssh_session s_) : s(s_), was(ssh_is_blocking(s_)) { ssh_set_blocking(s, 1); }
    ~BlockingScope() { ssh_set_blocking(s, was); }
  } blocking(session_);
  ssh_channel ch = open_exec(command);
  RunResult result;
  LineSplitter split_out, split_err;
  auto t0 = Clock::now();
  char buf[65536];
  auto drain = [&]() {
    for (int is_stderr = 0; is_stderr < 2; is_stderr++) {
      for (;;) {
        int n = ssh_channel_read_nonblocking(ch, buf, sizeof buf, is_stderr);
        if (n <= 0) break;
        if (on_output) (is_stderr ? split_err : split_out).feed(buf, n, is_stderr, on_output);
        else (is_stderr ? result.err : result.out).append(buf, n);
      }
    }
  };
  auto cleanup = [&]() {
    ssh_channel_close(ch);
    ssh_channel_free(ch);
  };
  size_t off = 0;
  while (off < input.size()) {
    size_t n = std::min<size_t>(input.size() - off, 32768);
    int w = ssh_channel_write(ch, input.data() + off, static_cast<uint32_t>(n));
    if (w == SSH_ERROR) {
      std::string err = ssh_get_error(session_);
      cleanup();
      fail("writing to `" + command.substr(0, 60) + "` failed: " + err);
    }
    off += static_cast<size_t>(w);
    drain();
  }
  ssh_channel_send_eof(ch);
  while (!ssh_channel_is_eof(ch) || ssh_channel_poll(ch, 0) > 0 || ssh_channel_poll(ch, 1) > 0) {
    drain();
    if (ssh_channel_is_eof(ch)) continue;
    if (!ssh_is_connected(session_) || ssh_channel_is_closed(ch)) break;
    if (timeout > 0 && seconds_since(t0) > timeout) {
      cleanup();
      fail("`" + command.substr(0, 60) + "` did not finish within " + format_seconds(timeout));
    }
    struct pollfd pfd = {ssh_get_fd(session_), POLLIN, 0};
    ::poll(&pfd, 1, 50);
  }
  drain();
  if (on_output) {
    split_out.flush(false, on_output);
    split_err.flush(true, on_output);
  }
  if (!ssh_is_connected(session_)) {
    cleanup();
    fail("connection lost while running `" + command.substr(0, 60) + "`");
  }
  result.exit_status = ssh_channel_get_exit_status(ch);
  cleanup();
  return result;
}

void Session::upload(std::string_view data, const std::string& remote_path, int mode) {
  auto slash = remote_path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : remote_path.substr(0, slash);
  std::string final_path = remote_path_expr(remote_path);
  std::string tmp = remote_path_expr(remote_path + ".tmp") + ".$$";
  char mode_str[16];
  snprintf(mode_str, sizeof mode_str, "%o", mode);
  std::string cmd = "mkdir -p " + remote_path_expr(dir) + " && cat > " + tmp + " && chmod " + mode_str + " " + tmp +
                    " && mv -f " + tmp + " " + final_path;
  RunResult r = run(cmd, data);
  if (r.exit_status != 0) fail("upload to " + remote_path + " failed (exit " + std::to_string(r.exit_status) + "): " + r.err);
}

}  // namespace sky::ssh
