// The local transport: a child process behind the Transport interface (non-blocking reads and
// writes, end of stream, how the process ended, kill).
#include <doctest/doctest.h>

#include <poll.h>

#include <chrono>
#include <string>
#include <thread>

#include "pool/local_transport.hpp"

namespace {

// Reads until `want` bytes arrived or the stream ended (bounded wait).
std::string read_for(sky::pool::Transport& t, size_t want, bool& eof) {
  std::string got;
  eof = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
    pollfd p{t.read_fd(), POLLIN, 0};
    poll(&p, 1, 100);
    char buf[256];
    ssize_t r = t.read_some(buf, sizeof buf);
    if (r < 0) {
      eof = true;
      break;
    }
    got.append(buf, static_cast<size_t>(r));
  }
  return got;
}

}  // namespace

TEST_CASE("a local transport carries bytes both ways and reports a clean exit") {
  auto t = sky::pool::local_spawn({{"/bin/cat"}, "", "node 3"});
  CHECK(t->describe().find("node 3 (local pid ") == 0);
  CHECK(t->write_some("ping\n", 5) == 5);
  bool eof = false;
  CHECK(read_for(*t, 5, eof) == "ping\n");
  char buf[8];
  CHECK(t->read_some(buf, sizeof buf) == 0);  // nothing more yet, and no blocking
  t->close();                                  // cat sees the end of its input and exits
  read_for(*t, 1, eof);
  CHECK(eof);
  CHECK(t->exit_reason(2000) == "exited with status 0");
  CHECK_THROWS_AS(t->write_some("x", 1), sky::pool::TransportError);
}

TEST_CASE("a killed worker process reports the signal") {
  auto t = sky::pool::local_spawn({{"/bin/sleep", "30"}, "", "node 1"});
  t->kill();
  bool eof = false;
  read_for(*t, 1, eof);
  CHECK(eof);
  CHECK(t->exit_reason(2000) == "killed by signal 9 (SIGKILL)");
}

TEST_CASE("a command that cannot start is an error naming it") {
  CHECK_THROWS_WITH_AS(sky::pool::local_spawn({{"/nonexistent/skyrun", "worker"}, "", "node 1"}),
                       "cannot start worker '/nonexistent/skyrun': No such file or directory",
                       sky::pool::TransportError);
  CHECK_THROWS_WITH_AS(sky::pool::local_spawn({{"/bin/true"}, "/nonexistent-dir", "node 1"}),
                       "cannot start worker '/bin/true' in '/nonexistent-dir': No such file or directory",
                       sky::pool::TransportError);
}
