// The pool's Transport over a libssh exec channel running `skyrun worker` on a remote host. All
// channels of a host share its one session; once a worker channel is open the session is
// non-blocking and driven by the pool's poll loop (read_fd is the session's socket). The
// remote shell announces the worker's pid on stderr first, so kill() can end a stuck worker.
#include "ssh/ssh_transport.hpp"

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <poll.h>

#include <chrono>
#include <cstring>

namespace sky::ssh {

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kPidTag = "skyrun-worker-pid:";
constexpr size_t kStderrTail = 4096;

class SshTransport final : public pool::Transport {
 public:
  SshTransport(std::shared_ptr<Session> session, ssh_channel ch, std::string label)
      : session_(std::move(session)), ch_(ch), label_(std::move(label)) {
    memset(&cb_, 0, sizeof cb_);
    cb_.userdata = this;
    cb_.channel_exit_status_function = &SshTransport::on_exit_status;
    cb_.channel_exit_signal_function = &SshTransport::on_exit_signal;
    ssh_callbacks_init(&cb_);
    ssh_set_channel_callbacks(ch_, &cb_);
  }

  ~SshTransport() override {
    if (alive()) {
      if (!eof_sent_) ssh_channel_send_eof(ch_);
      ssh_channel_close(ch_);
      ssh_blocking_flush(session_->raw(), 200);
      ssh_remove_channel_callbacks(ch_, &cb_);
      ssh_channel_free(ch_);
    }
  }

  size_t write_some(const void* data, size_t n) override {
    if (!alive()) throw pool::TransportError(lost_message());
    if (eof_sent_) throw pool::TransportError(describe() + ": the channel was closed");
    if (n == 0) return 0;
    uint32_t window = ssh_channel_window_size(ch_);
    if (window == 0) {
      ssh_channel_poll(ch_, 0);  // a window adjustment may be waiting in the socket
      window = ssh_channel_window_size(ch_);
      if (window == 0) return 0;
    }
    size_t len = n < window ? n : window;
    if (len > (1u << 20)) len = 1u << 20;
    int w = ssh_channel_write(ch_, data, static_cast<uint32_t>(len));
    if (w == SSH_ERROR) {
      lost_ = true;
      lost_reason_ = ssh_get_error(session_->raw());
      throw pool::TransportError(lost_message());
    }
    return w > 0 ? static_cast<size_t>(w) : 0;
  }

  ssize_t read_some(void* buf, size_t n) override {
    if (!alive()) return -1;
    drain_stderr();
    int r = ssh_channel_read_nonblocking(ch_, buf, static_cast<uint32_t>(n), 0);
    if (r > 0) return r;
    if (r == SSH_EOF || (r == 0 && ssh_channel_is_eof(ch_))) {
      drain_stderr();
      return -1;
    }
    if (r == SSH_ERROR || !ssh_is_connected(session_->raw())) {
      lost_ = true;
      lost_reason_ = ssh_get_error(session_->raw());
      return -1;
    }
    return 0;
  }

  int read_fd() const override { return session_->raw() ? ssh_get_fd(session_->raw()) : -1; }

  int write_fd() const override {
    if (!session_->raw()) return -1;
    if (ssh_get_poll_flags(session_->raw()) & SSH_WRITE_PENDING) return ssh_get_fd(session_->raw());
    // A closed window opens again through a packet we read, not through writability.
    return ssh_channel_window_size(ch_) == 0 ? -1 : ssh_get_fd(session_->raw());
  }

  // Data libssh already took off the socket into this channel's buffer (while it served another
  // channel of the session), which poll() on the socket no longer sees; or EOF, or an error.
  // Not ssh_get_poll_flags' SSH_READ_PENDING: that only says libssh wants to read, which is
  // always, and made the driver's loop spin while a remote task ran.
  bool has_buffered_input() override {
    if (!alive()) return true;
    return ssh_channel_poll(ch_, 0) != 0;
  }

  void close() override {
    if (!alive() || eof_sent_) return;
    eof_sent_ = true;
    ssh_channel_send_eof(ch_);
  }

  void kill() override {
    if (killed_ || !alive()) return;
    killed_ = true;
    // The worker may be stuck and never read its input again: end it by pid on the host.
    drain_stderr();
    ssh_session s = session_->raw();
    if (remote_pid_ > 0) {
      int was_blocking = ssh_is_blocking(s);
      ssh_set_blocking(s, 1);
      try {
        // The worker leads its process group (sshd starts the command in a new session): end the
        // group, with whatever its tasks started.
        std::string pid = std::to_string(remote_pid_);
        session_->run("kill -9 -- -" + pid + " 2>/dev/null || kill -9 " + pid + " 2>/dev/null", {}, nullptr, 5);
      } catch (const Error&) {
        // the connection is gone; so is the worker (it exits when its channel closes)
      }
      ssh_set_blocking(s, was_blocking);
    }
    if (alive()) {
      if (!eof_sent_) ssh_channel_send_eof(ch_);
      eof_sent_ = true;
      ssh_channel_close(ch_);
    }
  }

  std::string exit_reason(int timeout_ms) override {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (alive() && !lost_ && exit_status_ < 0 && exit_signal_.empty() && Clock::now() < deadline) {
      // One non-blocking pass over incoming packets (ssh_channel_poll stops reading them once the
      // channel saw EOF, and the exit-status/exit-signal request comes after the EOF).
      ssh_channel_get_exit_status(ch_);
      if (session_->raw() == nullptr || !ssh_is_connected(session_->raw())) {
        lost_ = true;
        lost_reason_ = ssh_get_error(session_->raw());
        break;
      }
      drain_stderr();
      if (ssh_channel_is_closed(ch_)) break;
      struct pollfd p = {ssh_get_fd(session_->raw()), POLLIN, 0};
      ::poll(&p, 1, 20);
    }
    drain_stderr();
    std::string reason;
    if (!exit_signal_.empty()) reason = "killed by signal " + exit_signal_ + " on " + session_->describe();
    else if (exit_status_ >= 0) reason = "exited with status " + std::to_string(exit_status_) + " on " + session_->describe();
    else if (lost_ || !alive()) reason = lost_message();
    if (!stderr_tail_.empty()) reason += (reason.empty() ? "" : "; ") + std::string("stderr: ") + stderr_tail_;
    return reason;
  }

  std::string describe() const override { return label_ + " (ssh " + session_->describe() + ")"; }

 private:
  bool alive() const { return session_->raw() != nullptr && !ssh_channel_is_closed(ch_); }

  std::string lost_message() const {
    return "connection to " + session_->describe() + " lost (the host or its sshd went away" +
           (lost_reason_.empty() ? "" : ": " + lost_reason_) + ")";
  }

  void drain_stderr() {
    if (!alive()) return;
    char buf[4096];
    for (;;) {
      int r = ssh_channel_read_nonblocking(ch_, buf, sizeof buf, 1);
      if (r <= 0) break;
      stderr_raw_.append(buf, static_cast<size_t>(r));
    }
    // the first line is the remote shell's pid announcement
    if (remote_pid_ == 0) {
      auto nl = stderr_raw_.find('\n');
      if (nl == std::string::npos) return;
      if (stderr_raw_.compare(0, strlen(kPidTag), kPidTag) == 0)
        remote_pid_ = atoi(stderr_raw_.c_str() + strlen(kPidTag));
      else
        remote_pid_ = -1;
      if (remote_pid_ != -1) stderr_raw_.erase(0, nl + 1);
    }
    if (!stderr_raw_.empty()) {
      stderr_tail_ += stderr_raw_;
      stderr_raw_.clear();
      if (stderr_tail_.size() > kStderrTail) stderr_tail_.erase(0, stderr_tail_.size() - kStderrTail);
    }
  }

  static void on_exit_status(ssh_session, ssh_channel, int status, void* u) {
    static_cast<SshTransport*>(u)->exit_status_ = status;
  }
  static void on_exit_signal(ssh_session, ssh_channel, const char* signal, int, const char*, const char*, void* u) {
    static_cast<SshTransport*>(u)->exit_signal_ = std::string("SIG") + (signal ? signal : "?");
  }

  std::shared_ptr<Session> session_;
  ssh_channel ch_;
  std::string label_;
  struct ssh_channel_callbacks_struct cb_;
  std::string stderr_raw_, stderr_tail_;
  std::string lost_reason_;
  int remote_pid_ = 0;
  int exit_status_ = -1;
  std::string exit_signal_;
  bool eof_sent_ = false;
  bool killed_ = false;
  bool lost_ = false;
};

}  // namespace

std::string worker_command(const std::string& skyrun_path, const std::string& workdir) {
  std::string cd;
  if (!workdir.empty()) {
    std::string dir = workdir.rfind("~/", 0) == 0 ? "\"$HOME\"/" + shell_quote(workdir.substr(2)) : shell_quote(workdir);
    cd = "mkdir -p " + dir + " && cd " + dir + " && ";
  }
  return cd + "echo " + kPidTag + "$$ >&2 && exec " + shell_quote(skyrun_path) + " ssh-worker";
}

std::unique_ptr<pool::Transport> start_worker(const std::shared_ptr<Session>& session, const std::string& command,
                                              const std::string& label) {
  ssh_session s = session->raw();
  if (!s) throw Error("ssh " + session->describe() + ": session is closed");
  ssh_set_blocking(s, 1);
  ssh_channel ch = session->open_exec(command);
  auto t = std::make_unique<SshTransport>(session, ch, label);
  // From here on the pool's poll loop drives this session.
  ssh_set_blocking(s, 0);
  return t;
}

}  // namespace sky::ssh
