// `skyrun worker`: serves tasks over the protocol on stdin/stdout (or the fds named by
// --fd IN,OUT). Its own stdout and stderr (print, io.write, native logs, child processes) are
// captured through pipes and forwarded as output frames by a thread, so the protocol stream only
// ever carries frames. The task loop itself is Lua: lua/sky/worker.lua.
// The worker leads its own process group, and the processes its tasks start stay in it: when the
// worker ends (its input closed, SIGTERM, or the death of its parent: the driver, or sshd) it ends
// the whole group, so no task's child outlives it.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "host/bind.hpp"
#include "host/modules.hpp"
#include "host/runtime.hpp"
#include "pool/tcp_transport.hpp"
#include "wire/wire.hpp"

namespace sky::pool {
namespace {

// Frame kinds the C++ side writes itself (the rest are the Lua loop's business).
constexpr uint8_t kKindHello = 1;
constexpr uint8_t kKindStdout = 9;
constexpr uint8_t kKindStderr = 10;

struct WorkerIo {
  bool active = false;
  int in = -1;            // protocol from the driver
  int out = -1;           // protocol to the driver
  int capture[2] = {-1, -1};  // read ends of the stdout / stderr pipes
  int wake[2] = {-1, -1};     // tells the output thread to finish
  std::mutex write_mutex;
  std::atomic<bool> broken{false};
  std::string inbuf;
  size_t inpos = 0;
};
WorkerIo g_io;

bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// With write_mutex held: sends one frame.
bool send_locked(uint8_t kind, std::string_view payload) {
  if (g_io.broken) return false;
  std::string frame;
  wire::frame_append(frame, kind, payload);
  if (!write_all(g_io.out, frame.data(), frame.size())) {
    g_io.broken = true;
    return false;
  }
  return true;
}

// With write_mutex held: forwards what the capture pipes hold now.
void drain_locked() {
  char buf[65536];
  for (int s = 0; s < 2; ++s) {
    for (;;) {
      ssize_t r = read(g_io.capture[s], buf, sizeof buf);
      if (r <= 0) break;
      send_locked(s == 0 ? kKindStdout : kKindStderr, std::string_view(buf, static_cast<size_t>(r)));
    }
  }
}

void output_thread() {
  pollfd p[3] = {{g_io.capture[0], POLLIN, 0}, {g_io.capture[1], POLLIN, 0}, {g_io.wake[0], POLLIN, 0}};
  for (;;) {
    int r = poll(p, 3, -1);
    if (r < 0 && errno != EINTR) break;
    if (p[2].revents) break;
    if ((p[0].revents | p[1].revents) & (POLLIN | POLLHUP)) {
      std::lock_guard<std::mutex> lock(g_io.write_mutex);
      drain_locked();
    }
    if ((p[0].revents & (POLLHUP | POLLERR)) && (p[1].revents & (POLLHUP | POLLERR))) break;
  }
}

// io.recv() -> kind, payload | nil at the end of input (blocking)
int io_recv(lua_State* L) {
  if (!g_io.active) throw Error("sky.worker.io is only available inside `skyrun worker`");
  for (;;) {
    uint8_t kind;
    std::string_view payload;
    size_t n = wire::frame_parse(std::string_view(g_io.inbuf).substr(g_io.inpos), kind, payload);
    if (n > 0) {
      lua_pushinteger(L, kind);
      lua_pushlstring(L, payload.data(), payload.size());
      g_io.inpos += n;
      if (g_io.inpos == g_io.inbuf.size()) {
        g_io.inbuf.clear();
        g_io.inpos = 0;
      }
      return 2;
    }
    if (g_io.inpos > 0) {
      g_io.inbuf.erase(0, g_io.inpos);
      g_io.inpos = 0;
    }
    char buf[65536];
    ssize_t r = read(g_io.in, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      lua_pushnil(L);
      return 1;
    }
    g_io.inbuf.append(buf, static_cast<size_t>(r));
  }
}

// io.send(kind, payload) -> true | false when the driver is gone. Output written before it is
// forwarded first, so the driver sees a task's prints before its result.
int io_send(lua_State* L) {
  if (!g_io.active) throw Error("sky.worker.io is only available inside `skyrun worker`");
  int64_t kind = check_int64(L, 1);
  std::string_view payload = check_string_view(L, 2);
  fflush(stdout);
  fflush(stderr);
  std::lock_guard<std::mutex> lock(g_io.write_mutex);
  drain_locked();
  lua_pushboolean(L, send_locked(static_cast<uint8_t>(kind), payload));
  return 1;
}

int luaopen_sky_worker_io(lua_State* L) {
  const luaL_Reg fns[] = {{"recv", safe<io_recv>}, {"send", safe<io_send>}, {nullptr, nullptr}};
  lua_newtable(L);
  luaL_register(L, nullptr, fns);
  return 1;
}

// The process group this worker leads (0: it could not lead one, and ends only itself).
pid_t g_group = 0;

// SIGTERM and the parent-death signal: end the whole group, this worker included.
void on_terminate(int) {
  if (g_group > 0) kill(-g_group, SIGKILL);
  _exit(143);
}

// Makes this process the leader of its own group and arms the handlers that end the group.
void lead_process_group() {
  if (getpgrp() != getpid() && setpgid(0, 0) != 0) return;
  g_group = getpid();
  struct sigaction sa{};
  sa.sa_handler = on_terminate;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  // The driver (or the sshd session) gone: SIGTERM reaches the handler, which ends the group
  // (SIGKILL, which the spawner armed, would end this process alone).
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) on_terminate(0);
}

// Ends the other members of this worker's group (what its tasks left running), at exit.
void end_group_members() {
  if (g_group <= 0) return;
  for (int round = 0; round < 10; ++round) {
    int found = 0;
    DIR* d = opendir("/proc");
    if (!d) return;
    while (dirent* e = readdir(d)) {
      char* end = nullptr;
      long pid = strtol(e->d_name, &end, 10);
      if (*end || pid <= 0 || pid == g_group) continue;
      if (getpgid(static_cast<pid_t>(pid)) == g_group) {
        kill(static_cast<pid_t>(pid), SIGKILL);
        ++found;
      }
    }
    closedir(d);
    if (!found) return;
    usleep(1000);
  }
}

bool parse_fd_pair(const char* s, int& in, int& out) { return sscanf(s, "%d,%d", &in, &out) == 2 && in >= 0 && out >= 0; }

// The pool's secret, the one line a launcher writes on the worker's stdin (tcp_transport.hpp).
bool read_secret_line(std::string& secret) {
  secret.clear();
  for (;;) {
    char c;
    ssize_t r = read(0, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    if (c == '\n') return !secret.empty();
    secret += c;
    if (secret.size() > 256) return false;
  }
}

// --connect HOST:PORT --id ID: dials the driver with the secret read from stdin; the socket is
// then both protocol descriptors. Returns the socket, or -1 after printing why.
int connect_to_driver(const char* target, const char* id, double dead_after) {
  std::string secret;
  if (!read_secret_line(secret)) {
    fprintf(stderr, "skyrun worker: --connect needs the pool's secret as the first line of stdin\n");
    return -1;
  }
  try {
    std::string host;
    int port = 0;
    split_host_port(target, host, port);
    int fd = dial_worker(host, port, id, secret, dead_after, 30);
    std::fill(secret.begin(), secret.end(), '\0');
    return fd;
  } catch (const std::exception& e) {
    fprintf(stderr, "skyrun worker: %s\n", e.what());
    return -1;
  }
}

int worker_main(int argc, char** argv) {
  int in = 0, out = 1;
  const char* connect = nullptr;
  const char* id = nullptr;
  double dead_after = 4;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--fd") == 0 && i + 1 < argc && parse_fd_pair(argv[i + 1], in, out)) {
      ++i;
    } else if (strcmp(argv[i], "--connect") == 0 && i + 1 < argc) {
      connect = argv[++i];
    } else if (strcmp(argv[i], "--id") == 0 && i + 1 < argc) {
      id = argv[++i];
    } else if (strcmp(argv[i], "--dead-after") == 0 && i + 1 < argc && atof(argv[i + 1]) > 0) {
      dead_after = atof(argv[++i]);
    } else {
      fprintf(stderr,
              "usage: skyrun worker [--fd IN,OUT | --connect HOST:PORT --id ID [--dead-after SECONDS]]\n"
              "Serves compute tasks for a pool over stdin/stdout (or the inherited descriptors IN and OUT),\n"
              "or over a TCP connection to the driver, authenticated with the pool's secret read from the\n"
              "first line of stdin. Pools start workers themselves; running one by hand is only useful for\n"
              "debugging.\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  if (connect) {
    if (!id) {
      fprintf(stderr, "skyrun worker: --connect needs --id\n");
      return 2;
    }
    in = out = connect_to_driver(connect, id, dead_after);
    if (in < 0) return 3;
  }
  signal(SIGINT, SIG_IGN);  // the driver decides when a worker stops
  lead_process_group();
  // The protocol descriptors move out of the way (close-on-exec, so a task's child processes
  // never hold them open); 0 reads /dev/null; 1 and 2 become the capture pipes.
  g_io.in = fcntl(in, F_DUPFD_CLOEXEC, 3);
  g_io.out = fcntl(out, F_DUPFD_CLOEXEC, 3);
  if (g_io.in < 0 || g_io.out < 0) {
    fprintf(stderr, "skyrun worker: bad protocol descriptors: %s\n", strerror(errno));
    return 2;
  }
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (in != 0 && in != 1 && in != 2) close(in);
  if (out != 0 && out != 1 && out != 2 && out != in) close(out);
  dup2(devnull, 0);
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0 || pipe2(g_io.wake, O_CLOEXEC) != 0) {
    fprintf(stderr, "skyrun worker: cannot make pipes: %s\n", strerror(errno));
    return 2;
  }
  fflush(stdout);
  fflush(stderr);
  dup2(out_pipe[1], 1);
  dup2(err_pipe[1], 2);
  close(out_pipe[1]);
  close(err_pipe[1]);
  g_io.capture[0] = out_pipe[0];
  g_io.capture[1] = err_pipe[0];
  for (int fd : g_io.capture) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  setvbuf(stdout, nullptr, _IOLBF, 0);
  g_io.active = true;
  {
    std::lock_guard<std::mutex> lock(g_io.write_mutex);
    send_locked(kKindHello, wire::hello_encode(wire::local_versions()));
  }
  std::thread forwarder(output_thread);

  int rc = 0;
  lua_State* L = runtime_new_state();
  if (!L) {
    fprintf(stderr, "skyrun worker: cannot create Lua state: not enough memory\n");
    rc = 1;
  } else {
    lua_getglobal(L, "require");
    lua_pushstring(L, "sky.worker");
    if (!runtime_pcall(L, 1, 1)) {
      fprintf(stderr, "skyrun worker: %s\n", lua_tostring(L, -1));
      rc = 1;
    } else {
      lua_getfield(L, -1, "main");  // [worker, main]
      lua_remove(L, -2);
      if (!runtime_pcall(L, 0, 1)) {
        fprintf(stderr, "skyrun worker: %s\n", lua_tostring(L, -1));
        rc = 1;
      } else {
        rc = lua_isnumber(L, -1) ? static_cast<int>(lua_tointeger(L, -1)) : 0;
      }
    }
    lua_settop(L, 0);
    runtime_free_state(L);
  }
  fflush(stdout);
  fflush(stderr);
  {
    std::lock_guard<std::mutex> lock(g_io.write_mutex);
    drain_locked();
  }
  (void)!write(g_io.wake[1], "x", 1);
  forwarder.join();
  g_io.active = false;
  end_group_members();
  return rc;
}

}  // namespace
}  // namespace sky::pool

SKY_NATIVE_MODULE("sky.worker.io", sky::pool::luaopen_sky_worker_io);
SKY_SUBCOMMAND("worker", sky::pool::worker_main, "serve tasks over stdin/stdout (started by pools, not by hand)");
