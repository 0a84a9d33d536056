// Pipes to a child `skyrun worker`: spawning, non-blocking I/O, killing and reaping.
#include "pool/local_transport.hpp"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

namespace sky::pool {
namespace {

// Waits up to timeout_ms for pid to end; true once it is reaped (or is no child of ours). The
// child leads its own process group, whose id cannot be reused while the leader is unreaped: what
// is left of the group (a task's background children) is ended before the leader is reaped.
bool reap_within(pid_t pid, int timeout_ms, int* status = nullptr) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    siginfo_t info{};
    int r = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
    if (r == 0 && info.si_pid == pid) {
      ::kill(-pid, SIGKILL);
      int st = 0;
      while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
      if (status) *status = st;
      return true;
    }
    if (r < 0 && errno != EINTR) return true;  // ECHILD: reaped elsewhere
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// Signals the child and its process group (the child may not have made its group yet).
void signal_group(pid_t pid, int sig) {
  ::kill(-pid, sig);
  ::kill(pid, sig);
}

std::string signal_text(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return "killed by signal " + std::to_string(sig) + (abbrev ? std::string(" (SIG") + abbrev + ")" : std::string());
}

class LocalTransport : public Transport {
 public:
  LocalTransport(pid_t pid, int in_fd, int out_fd, std::string label, int stop_signal)
      : pid_(pid), to_child_(in_fd), from_child_(out_fd), label_(std::move(label)), stop_signal_(stop_signal) {}

  ~LocalTransport() override {
    close_fds();
    if (pid_ <= 0 || reaped_) return;
    // A worker whose input just closed exits by itself in a moment; one already stopped needs
    // no grace. Then end it.
    if (!killed_ && reap(200)) return;
    signal_group(pid_, stop_signal_);
    if (reap(stop_signal_ == SIGKILL ? 2000 : 100)) return;
    // Still there (an srun waiting for a node that is gone): the driver does not wait for it; a
    // thread reaps it, with SIGKILL after 2 s.
    std::thread([pid = pid_] {
      if (!reap_within(pid, 2000)) {
        signal_group(pid, SIGKILL);
        reap_within(pid, 5000);
      }
    }).detach();
  }

  size_t write_some(const void* data, size_t n) override {
    if (to_child_ < 0) throw TransportError("the connection to " + describe() + " is closed");
    for (;;) {
      ssize_t w = ::write(to_child_, data, n);
      if (w >= 0) return static_cast<size_t>(w);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      throw TransportError("writing to " + describe() + ": " + strerror(errno));
    }
  }

  ssize_t read_some(void* buf, size_t n) override {
    if (from_child_ < 0) return -1;
    for (;;) {
      ssize_t r = ::read(from_child_, buf, n);
      if (r > 0) return r;
      if (r == 0) return -1;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      throw TransportError("reading from " + describe() + ": " + strerror(errno));
    }
  }

  int read_fd() const override { return from_child_; }
  int write_fd() const override { return to_child_; }

  void close() override {
    if (to_child_ >= 0) {
      ::close(to_child_);
      to_child_ = -1;
    }
  }

  // The worker and what its tasks started: the child leads its own process group, and the group
  // id cannot have been reused while its leader is unreaped.
  void kill() override {
    if (pid_ > 0 && !reaped_) signal_group(pid_, stop_signal_);
    killed_ = true;
  }

  std::string exit_reason(int timeout_ms) override {
    if (!reaped_ && !reap(timeout_ms)) return "still running";
    if (WIFSIGNALED(status_)) return signal_text(WTERMSIG(status_));
    if (WIFEXITED(status_)) return "exited with status " + std::to_string(WEXITSTATUS(status_));
    return "ended";
  }

  std::string describe() const override { return label_ + " (local pid " + std::to_string(pid_) + ")"; }

 private:
  // Waits up to timeout_ms for the worker to end; then ends what is left of its process group
  // (a task's background children) before the worker is reaped.
  bool reap(int timeout_ms) {
    if (!reap_within(pid_, timeout_ms, &status_)) return false;
    reaped_ = true;
    return true;
  }
  void close_fds() {
    close();
    if (from_child_ >= 0) {
      ::close(from_child_);
      from_child_ = -1;
    }
  }

  pid_t pid_;
  int to_child_;
  int from_child_;
  std::string label_;
  int stop_signal_;
  int status_ = 0;
  bool reaped_ = false;
  bool killed_ = false;
};

}  // namespace

std::string self_exe() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "skyrun";
  return std::string(buf, static_cast<size_t>(n));
}

std::unique_ptr<Transport> local_spawn(const LocalSpawn& spec) {
  std::vector<std::string> argv = spec.argv;
  if (argv.empty()) argv = {self_exe(), "worker"};
  int in_pipe[2], out_pipe[2], err_pipe[2];  // err_pipe: reports a failed exec to the parent
  if (pipe2(in_pipe, O_CLOEXEC) != 0) throw TransportError(std::string("cannot make a pipe: ") + strerror(errno));
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    ::close(in_pipe[0]);
    ::close(in_pipe[1]);
    throw TransportError(std::string("cannot make a pipe: ") + strerror(errno));
  }
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1]}) ::close(fd);
    throw TransportError(std::string("cannot make a pipe: ") + strerror(errno));
  }
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
    int e = errno;
    rlimit rl{};
    std::string hint;
    if (e == EAGAIN && getrlimit(RLIMIT_NPROC, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
      hint = " (the process limit of this user, ulimit -u " + std::to_string(rl.rlim_cur) + ", is reached)";
    throw TransportError(std::string("cannot start a worker process: ") + strerror(e) + hint);
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, spec.stop_signal);
    if (getppid() != parent) _exit(127);
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    if (spec.merge_stderr) dup2(out_pipe[1], 2);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    if (!spec.cwd.empty() && chdir(spec.cwd.c_str()) != 0) {
      int e = errno;
      (void)!write(err_pipe[1], &e, sizeof e);
      _exit(127);
    }
    execv(cargv[0], cargv.data());
    int e = errno;
    (void)!write(err_pipe[1], &e, sizeof e);
    _exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  int child_errno = 0;
  ssize_t r;
  do r = ::read(err_pipe[0], &child_errno, sizeof child_errno);
  while (r < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (r > 0) {
    ::close(in_pipe[1]);
    ::close(out_pipe[0]);
    int st;
    waitpid(pid, &st, 0);
    throw TransportError("cannot start worker '" + argv[0] + "'" + (spec.cwd.empty() ? "" : " in '" + spec.cwd + "'") +
                         ": " + strerror(child_errno));
  }
  fcntl(in_pipe[1], F_SETFL, fcntl(in_pipe[1], F_GETFL) | O_NONBLOCK);
  fcntl(out_pipe[0], F_SETFL, fcntl(out_pipe[0], F_GETFL) | O_NONBLOCK);
  return std::make_unique<LocalTransport>(pid, in_pipe[1], out_pipe[0], spec.label.empty() ? "worker" : spec.label,
                                          spec.stop_signal);
}

}  // namespace sky::pool
