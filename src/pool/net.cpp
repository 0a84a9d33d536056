// See net.hpp.
#include "pool/net.hpp"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "host/bind.hpp"

namespace sky::pool {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
}  // namespace

int tcp_connect(const std::string& host, int port, double timeout, bool& timed_out) {
  struct addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_family = AF_UNSPEC;
  struct addrinfo* res = nullptr;
  int gai = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (gai != 0) throw Error(std::string("cannot resolve the host name: ") + gai_strerror(gai));
  auto t0 = Clock::now();
  std::string last = "no address";
  timed_out = false;
  for (struct addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) { last = strerror(errno); continue; }
    int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      double left = timeout - seconds_since(t0);
      struct pollfd pfd = {fd, POLLOUT, 0};
      int pr = left > 0 ? ::poll(&pfd, 1, static_cast<int>(left * 1000) + 1) : 0;
      if (pr == 0) {
        ::close(fd);
        timed_out = true;
        last = "timed out";
        break;
      }
      int soerr = 0;
      socklen_t len = sizeof soerr;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
      rc = soerr == 0 ? 0 : -1;
      errno = soerr;
    }
    if (rc == 0) {
      // Tasks and results are small messages that wait for an answer: send them at once.
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      int flags = fcntl(fd, F_GETFL);
      fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
      freeaddrinfo(res);
      return fd;
    }
    last = strerror(errno);
    ::close(fd);
  }
  freeaddrinfo(res);
  throw Error(last);
}

void set_dead_after(int fd, double seconds) {
  if (seconds <= 0) return;
  int on = 1;
  int idle = seconds >= 3 ? static_cast<int>(seconds / 3) : 1;
  int interval = idle, count = 2;
  unsigned int user_timeout = static_cast<unsigned int>(seconds * 1000);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

}  // namespace sky::pool
