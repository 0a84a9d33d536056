// The REPL driven through a pseudo-terminal, as a person at a keyboard would.
#include <doctest/doctest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>

namespace {

struct Repl {
  pid_t pid = -1;
  int fd = -1;
  std::string seen;

  Repl() {
    const char* bin = getenv("SKYRUN_BIN");
    REQUIRE_MESSAGE(bin, "SKYRUN_BIN must name the skyrun binary");
    std::string state_dir = "/tmp/skyrun-repl-test-" + std::to_string(getpid());
    pid = forkpty(&fd, nullptr, nullptr, nullptr);
    REQUIRE(pid >= 0);
    if (pid == 0) {
      setenv("XDG_STATE_HOME", state_dir.c_str(), 1);
      setenv("TERM", "dumb", 1);
      execl(bin, bin, static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Repl() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    if (fd >= 0) close(fd);
  }
  void send(const std::string& s) { REQUIRE(write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size())); }
  // Reads until `needle` appears after position `from` of everything seen, or the timeout passes.
  bool expect(const std::string& needle, size_t from, double seconds = 10.0) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (seen.find(needle, from) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) return false;
      seen.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
};

}  // namespace

TEST_CASE("the REPL evaluates statements and expressions, keeps going after errors, and Ctrl-C interrupts") {
  Repl r;
  REQUIRE_MESSAGE(r.expect("> ", 0), r.seen);
  size_t mark = r.seen.size();
  r.send("x = 2\n");
  r.send("x * 21\n");
  CHECK_MESSAGE(r.expect("42", mark), r.seen);

  mark = r.seen.size();
  r.send("error('oops')\n");
  CHECK_MESSAGE(r.expect("oops", mark), r.seen);
  mark = r.seen.size();
  r.send("x + 1\n");
  CHECK_MESSAGE(r.expect("3", mark), r.seen);

  // multi-line input for an unfinished statement
  mark = r.seen.size();
  r.send("function f(a)\n");
  CHECK_MESSAGE(r.expect(">> ", mark), r.seen);
  r.send("return a * 2 end\n");
  mark = r.seen.size();
  r.send("f(50)\n");
  CHECK_MESSAGE(r.expect("100", mark), r.seen);

  // tables are pretty-printed, cycles marked
  mark = r.seen.size();
  r.send("t = {1, 2, k = 'v'}; t.self = t\n");
  r.send("t\n");
  CHECK_MESSAGE(r.expect("<cycle>", mark), r.seen);

  // Ctrl-C stops a busy loop and the prompt comes back
  mark = r.seen.size();
  r.send("while true do end\n");
  usleep(300 * 1000);
  r.send("\x03");
  CHECK_MESSAGE(r.expect("interrupted!", mark), r.seen);
  mark = r.seen.size();
  r.send("x * 3\n");
  CHECK_MESSAGE(r.expect("6", mark), r.seen);

  // Ctrl-D exits
  r.send("\x04");
  int status = 0;
  for (int i = 0; i < 100 && waitpid(r.pid, &status, WNOHANG) == 0; ++i) usleep(50 * 1000);
  CHECK(WIFEXITED(status));
  r.pid = -1;
}
