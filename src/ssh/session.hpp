// ssh: one libssh session per remote host, as OpenSSH's client would open it (ssh_config aliases,
// user, port and IdentityFile, the agent, known_hosts with a strict or accept-new policy), plus
// exec channels on it: run a command to completion, upload a file, or keep a channel open as a
// byte stream. Nothing here knows Lua or the pool protocol.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

struct ssh_session_struct;
struct ssh_channel_struct;

namespace sky::ssh {

// A failure meant for users: the message names user@host:port and what to do.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class HostKeyPolicy { strict, accept_new };

struct ConnectOptions {
  std::string target;             // "user@host:port", "host", or an ssh_config alias
  std::string key;                // a private key file; empty: agent, then IdentityFile/defaults
  std::string known_hosts;        // empty: ~/.ssh/known_hosts
  std::string config;             // empty: ~/.ssh/config when it exists; "none": no config
  HostKeyPolicy policy = HostKeyPolicy::strict;
  double connect_timeout = 10;    // seconds, for TCP connect, key exchange and authentication
  // A host that vanishes without closing the connection (power loss, network cut) is declared
  // lost after about this many silent seconds (TCP keepalive probes and TCP_USER_TIMEOUT).
  double dead_after = 30;
};

// Where a target spec points. parse_target("alice@10.0.0.1:2222") = {alice, 10.0.0.1, 2222}.
struct Target {
  std::string user;  // empty when not given
  std::string host;
  int port = 0;      // 0 when not given
};
Target parse_target(std::string_view spec);

// The user's home (HOME, else the passwd entry); ~/.ssh paths are resolved against it.
std::string home_dir();

// What a command wrote and how it ended.
struct RunResult {
  int exit_status = -1;     // -1 when the channel closed without one (killed by a signal)
  std::string out, err;     // collected only when no on_output callback was given
};

// Called with each complete line (without '\n'; a last partial line is flushed at the end).
using OutputFn = std::function<void(std::string_view line, bool is_stderr)>;

class Session {
 public:
  // Connects, checks the host key and authenticates; throws Error naming the host.
  static std::unique_ptr<Session> connect(const ConnectOptions& opts);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // "user@host:port" as connected (after ssh_config resolution).
  const std::string& describe() const { return name_; }
  const std::string& user() const { return user_; }
  const std::string& host() const { return host_; }
  int port() const { return port_; }
  // The server's host key fingerprint ("SHA256:...") and whether accept-new added it.
  const std::string& host_key_fingerprint() const { return fingerprint_; }
  bool host_key_added() const { return host_key_added_; }

  // Runs `command` (through the remote user's shell), feeding it `input` on stdin, and waits for
  // it to end or `timeout` seconds (<= 0: no limit) to pass. Output goes to on_output line by
  // line when given, else into the result.
  RunResult run(const std::string& command, std::string_view input = {}, const OutputFn& on_output = nullptr,
                double timeout = 0);

  // Writes `data` to `remote_path` (a temp name beside it, then renamed; parent folders made;
  // mode applied). `remote_path` may start with "~/".
  void upload(std::string_view data, const std::string& remote_path, int mode = 0644);

  // Opens an exec channel running `command` and leaves it open; the session must then be used
  // only through the returned stream (see stream.hpp).
  ssh_channel_struct* open_exec(const std::string& command);

  ssh_session_struct* raw() { return session_; }
  // Still connected (false after disconnect() or once the peer went away).
  bool connected() const;
  void disconnect();

 private:
  Session() = default;
  [[noreturn]] void fail(const std::string& what);

  ssh_session_struct* session_ = nullptr;
  int own_fd_ = -1;          // the socket we connected (libssh leaves a given fd open)
  unsigned long own_ino_ = 0;
  std::string name_, user_, host_, fingerprint_;
  int port_ = 22;
  bool host_key_added_ = false;
};

// Single-quotes s for a POSIX shell.
std::string shell_quote(std::string_view s);

}  // namespace sky::ssh
