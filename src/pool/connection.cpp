// The driver's end of a worker: frames over a Transport with non-blocking buffered I/O, and the
// native module "sky.pool.core" (spawning local workers, polling many connections at once,
// process helpers). The pool's logic lives in lua/sky/pool.lua.
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "host/bind.hpp"
#include "host/clock.hpp"
#include "host/modules.hpp"
#include "pool/local_transport.hpp"
#include "pool/transport.hpp"
#include "wire/wire.hpp"

namespace sky::pool {
namespace {

class Connection {
 public:
  explicit Connection(std::unique_ptr<Transport> t) : t_(std::move(t)) {}

  Transport& transport() { return *t_; }
  bool dead() const { return dead_; }
  const std::string& error() const { return error_; }
  bool wants_write() const { return out_pos_ < out_.size(); }
  bool has_frame() const {
    uint8_t kind;
    std::string_view payload;
    try {
      return wire::frame_parse(std::string_view(in_).substr(in_pos_), kind, payload) > 0;
    } catch (const wire::WireError&) {
      return true;  // recv reports it
    }
  }

  // Queues a frame and writes what the transport takes now. False when the peer is gone.
  bool send(uint8_t kind, std::string_view payload) {
    if (dead_) return false;
    wire::frame_append(out_, kind, payload);
    return flush();
  }

  bool flush() {
    if (dead_) return false;
    try {
      while (out_pos_ < out_.size()) {
        size_t w = t_->write_some(out_.data() + out_pos_, out_.size() - out_pos_);
        if (w == 0) break;
        out_pos_ += w;
      }
    } catch (const TransportError& e) {
      dead_ = true;
      error_ = e.what();
      return false;
    }
    if (out_pos_ == out_.size()) {
      out_.clear();
      out_pos_ = 0;
    } else if (out_pos_ > (1u << 20)) {
      out_.erase(0, out_pos_);
      out_pos_ = 0;
    }
    return true;
  }

  // 1: a frame (kind, payload); 0: none available now; -1: end of stream.
  int recv(uint8_t& kind, std::string& payload) {
    for (;;) {
      std::string_view pv;
      size_t n = wire::frame_parse(std::string_view(in_).substr(in_pos_), kind, pv);
      if (n > 0) {
        payload.assign(pv.data(), pv.size());
        in_pos_ += n;
        if (in_pos_ == in_.size()) {
          in_.clear();
          in_pos_ = 0;
        }
        return 1;
      }
      if (eof_) return -1;
      if (in_pos_ > 0 && in_pos_ > in_.size() / 2) {
        in_.erase(0, in_pos_);
        in_pos_ = 0;
      }
      char buf[65536];
      ssize_t r;
      try {
        r = t_->read_some(buf, sizeof buf);
      } catch (const TransportError& e) {
        error_ = e.what();
        r = -1;
      }
      if (r == 0) return 0;
      if (r < 0) {
        eof_ = true;
        dead_ = true;
        continue;  // a complete frame may still sit in the buffer
      }
      in_.append(buf, static_cast<size_t>(r));
    }
  }

 private:
  std::unique_ptr<Transport> t_;
  std::string out_;
  size_t out_pos_ = 0;
  std::string in_;
  size_t in_pos_ = 0;
  bool eof_ = false;
  bool dead_ = false;
  std::string error_;
};

extern const ClassSpec kConnectionSpec;

Connection& check_conn(lua_State* L, int idx) { return class_check<Connection>(L, idx, kConnectionSpec); }

// conn:send(kind, payload) -> true | false, message
int conn_send(lua_State* L) {
  Connection& c = check_conn(L, 1);
  int64_t kind = check_int64(L, 2);
  std::string_view payload = check_string_view(L, 3);
  if (c.send(static_cast<uint8_t>(kind), payload)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_pushstring(L, c.error().empty() ? "connection closed" : c.error().c_str());
  return 2;
}

int push_recv(lua_State* L, int r, uint8_t kind, const std::string& payload) {
  if (r == 1) {
    lua_pushinteger(L, kind);
    lua_pushlstring(L, payload.data(), payload.size());
    return 2;
  }
  if (r == 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_pushstring(L, "eof");
  return 2;
}

// conn:recv() -> kind, payload | nil (nothing complete yet) | false, "eof"
int conn_recv(lua_State* L) {
  Connection& c = check_conn(L, 1);
  uint8_t kind = 0;
  std::string payload;
  int r;
  try {
    r = c.recv(kind, payload);
  } catch (const wire::WireError& e) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, e.what());
    return 2;
  }
  return push_recv(L, r, kind, payload);
}

// conn:wait(timeout_s) -> like recv, waiting up to timeout_s for a frame (nil on timeout)
int conn_wait(lua_State* L) {
  Connection& c = check_conn(L, 1);
  double timeout = luaL_optnumber(L, 2, -1);
  double deadline = monotonic_seconds() + timeout;
  for (;;) {
    uint8_t kind = 0;
    std::string payload;
    int r = c.recv(kind, payload);
    if (r != 0) return push_recv(L, r, kind, payload);
    c.flush();
    double left = deadline - monotonic_seconds();
    if (timeout >= 0 && left <= 0) return push_recv(L, 0, 0, payload);
    pollfd p[2];
    int n = 0;
    if (c.transport().read_fd() >= 0) p[n++] = {c.transport().read_fd(), POLLIN, 0};
    if (c.wants_write() && c.transport().write_fd() >= 0) p[n++] = {c.transport().write_fd(), POLLOUT, 0};
    int ms = timeout < 0 ? 100 : static_cast<int>(left * 1000) + 1;
    if (n == 0 || c.transport().has_buffered_input()) ms = n == 0 ? 1 : 0;
    poll(p, static_cast<nfds_t>(n), ms);
  }
}

int conn_flush(lua_State* L) {
  lua_pushboolean(L, check_conn(L, 1).flush());
  return 1;
}

int conn_close(lua_State* L) {
  Connection& c = check_conn(L, 1);
  c.flush();
  c.transport().close();
  return 0;
}

int conn_kill(lua_State* L) {
  check_conn(L, 1).transport().kill();
  return 0;
}

// conn:exit_reason([timeout_ms]) -> "killed by signal 9 (SIGKILL)" | "exited with status 1" | ...
int conn_exit_reason(lua_State* L) {
  std::string r = check_conn(L, 1).transport().exit_reason(static_cast<int>(luaL_optinteger(L, 2, 1000)));
  lua_pushlstring(L, r.data(), r.size());
  return 1;
}

int conn_describe(lua_State* L) {
  std::string d = check_conn(L, 1).transport().describe();
  lua_pushlstring(L, d.data(), d.size());
  return 1;
}

// conn:release(): drops the transport now (ends the process if it still runs).
int conn_release(lua_State* L) {
  class_close(L, 1, kConnectionSpec);
  return 0;
}

int conn_tostring(lua_State* L) {
  Handle* h = class_test_handle(L, 1, kConnectionSpec);
  if (!h || !h->ptr) {
    lua_pushstring(L, "Connection (closed)");
    return 1;
  }
  std::string d = "Connection: " + static_cast<Connection*>(h->ptr.get())->transport().describe();
  lua_pushlstring(L, d.data(), d.size());
  return 1;
}

const ClassSpec kConnectionSpec{
    "skyrun.Connection",
    "Connection",
    {{"send", safe<conn_send>},
     {"recv", safe<conn_recv>},
     {"wait", safe<conn_wait>},
     {"flush", safe<conn_flush>},
     {"close", safe<conn_close>},
     {"kill", safe<conn_kill>},
     {"exit_reason", safe<conn_exit_reason>},
     {"describe", safe<conn_describe>},
     {"release", safe<conn_release>}},
    {},
    conn_tostring,
};

// poll(conns, timeout_s) -> {i, ...}: the positions in conns that have a frame or an end of stream
// to read. Writes pending output as the transports accept it. timeout_s < 0 waits forever.
int core_poll(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  double timeout = luaL_optnumber(L, 2, -1);
  int n = static_cast<int>(lua_objlen(L, 1));
  std::vector<Connection*> conns;
  std::vector<int> pos;
  bool ready_now = false;
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, 1, i);
    Handle* h = class_test_handle(L, -1, kConnectionSpec);
    lua_pop(L, 1);
    if (!h || !h->ptr) continue;
    Connection* c = static_cast<Connection*>(h->ptr.get());
    if (c->wants_write()) c->flush();
    if (c->has_frame() || c->dead() || c->transport().has_buffered_input() || c->transport().read_fd() < 0) ready_now = true;
    conns.push_back(c);
    pos.push_back(i);
  }
  std::vector<pollfd> fds;
  std::vector<int> owner;
  for (size_t k = 0; k < conns.size(); ++k) {
    Transport& t = conns[k]->transport();
    if (t.read_fd() >= 0) {
      fds.push_back({t.read_fd(), POLLIN, 0});
      owner.push_back(static_cast<int>(k));
    }
    if (conns[k]->wants_write() && t.write_fd() >= 0) {
      fds.push_back({t.write_fd(), POLLOUT, 0});
      owner.push_back(static_cast<int>(k));
    }
  }
  int ms = ready_now ? 0 : (timeout < 0 ? -1 : static_cast<int>(timeout * 1000.0 + 0.999));
  if (!fds.empty() || ms > 0) {
    // EINTR returns to Lua at once: a Ctrl-C's pending interrupt then raises there.
    poll(fds.data(), static_cast<nfds_t>(fds.size()), ms);
  }
  std::vector<char> ready(conns.size(), 0);
  for (size_t j = 0; j < fds.size(); ++j) {
    Connection* c = conns[static_cast<size_t>(owner[j])];
    if (fds[j].events == POLLOUT && (fds[j].revents & (POLLOUT | POLLERR | POLLHUP))) c->flush();
    if (fds[j].events == POLLIN && (fds[j].revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL))) ready[static_cast<size_t>(owner[j])] = 1;
  }
  lua_createtable(L, 4, 0);
  int out = 0;
  for (size_t k = 0; k < conns.size(); ++k) {
    Connection* c = conns[k];
    if (ready[k] || c->has_frame() || c->dead() || c->transport().has_buffered_input() || c->transport().read_fd() < 0) {
      lua_pushinteger(L, pos[k]);
      lua_rawseti(L, -2, ++out);
    }
  }
  return 1;
}

// spawn_local{argv = {...}, cwd = "...", label = "node 1"} -> Connection to a new worker process
int core_spawn_local(lua_State* L) {
  Options o(L, 1, "spawn_local", {{"argv", OptType::Table}, {"cwd", OptType::String}, {"label", OptType::String}});
  LocalSpawn spec;
  spec.cwd = o.string("cwd", "");
  spec.label = o.string("label", "worker");
  o.push("argv");  // [argv|nil]
  if (lua_istable(L, -1)) {
    int n = static_cast<int>(lua_objlen(L, -1));
    for (int i = 1; i <= n; ++i) {
      lua_rawgeti(L, -1, i);
      if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "spawn_local: argv[%d] must be a string", i);
      spec.argv.emplace_back(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  try {
    connection_push(L, local_spawn(spec));
  } catch (const TransportError& e) {
    throw Error(e.what());
  }
  return 1;
}

// limits() -> {nproc =, nofile =, privileged =, tasks =, open_files =}: the soft process and
// open-file limits (nil when unlimited), whether the process limit binds this user at all (root
// is exempt), the tasks (processes and threads) this real user runs now, and the descriptors this
// process has open. For providers that check a pool's size against the machine before starting it.
int core_limits(lua_State* L) {
  lua_createtable(L, 0 /* narr */, 5);  // [t]
  rlimit rl{};
  if (getrlimit(RLIMIT_NPROC, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    lua_pushnumber(L, static_cast<double>(rl.rlim_cur));
    lua_setfield(L, -2, "nproc");
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    lua_pushnumber(L, static_cast<double>(rl.rlim_cur));
    lua_setfield(L, -2, "nofile");
  }
  lua_pushboolean(L, getuid() == 0 || geteuid() == 0);
  lua_setfield(L, -2, "privileged");
  uid_t me = getuid();
  long tasks = 0;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      std::string path = std::string("/proc/") + e->d_name + "/status";
      FILE* f = fopen(path.c_str(), "re");
      if (!f) continue;
      char line[256];
      long uid = -1, threads = 1;
      while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "Uid:", 4) == 0) uid = strtol(line + 4, nullptr, 10);
        else if (strncmp(line, "Threads:", 8) == 0) threads = strtol(line + 8, nullptr, 10);
      }
      fclose(f);
      if (uid == static_cast<long>(me)) tasks += threads;
    }
    closedir(d);
  }
  lua_pushnumber(L, static_cast<double>(tasks));
  lua_setfield(L, -2, "tasks");
  long fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++fds;
    closedir(d);
  }
  lua_pushnumber(L, static_cast<double>(fds));
  lua_setfield(L, -2, "open_files");
  return 1;
}

int core_getpid(lua_State* L) {
  lua_pushinteger(L, getpid());
  return 1;
}

// environ() -> {"NAME=value", ...}: this process's environment now (setenv included, which
// /proc/self/environ does not show)
int core_environ(lua_State* L) {
  lua_newtable(L);
  int i = 0;
  for (char** e = environ; e && *e; ++e) {
    lua_pushstring(L, *e);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

int core_setenv(lua_State* L) {
  const char* k = luaL_checkstring(L, 1);
  if (lua_isnil(L, 2)) unsetenv(k);
  else setenv(k, luaL_checkstring(L, 2), 1);
  return 0;
}

// signal(pid, name) -> true | false, message (for tests and tools: "KILL", "TERM", "INT", 0)
int core_signal(lua_State* L) {
  pid_t pid = static_cast<pid_t>(check_int64(L, 1));
  int sig = 0;
  if (lua_type(L, 2) == LUA_TSTRING) {
    std::string s = lua_tostring(L, 2);
    if (s == "KILL") sig = SIGKILL;
    else if (s == "TERM") sig = SIGTERM;
    else if (s == "INT") sig = SIGINT;
    else if (s == "SEGV") sig = SIGSEGV;
    else luaL_argerror(L, 2, "signal name must be KILL, TERM, INT or SEGV");
  } else {
    sig = static_cast<int>(luaL_optinteger(L, 2, SIGTERM));
  }
  if (kill(pid, sig) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_pushstring(L, strerror(errno));
  return 2;
}

// free_port() -> a TCP port free on this machine now (for MASTER_PORT and the like)
int core_free_port(lua_State* L) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error(std::string("free_port: socket: ") + strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    int e = errno;
    close(fd);
    throw Error(std::string("free_port: ") + strerror(e));
  }
  close(fd);
  lua_pushinteger(L, ntohs(a.sin_port));
  return 1;
}

int core_sleep(lua_State* L) {
  double s = luaL_checknumber(L, 1);
  timespec ts{static_cast<time_t>(s), static_cast<long>((s - static_cast<double>(static_cast<time_t>(s))) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  return 0;
}

int luaopen_sky_pool_core(lua_State* L) {
  // A worker that dies while the driver writes to it must not kill the driver with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  class_register(L, kConnectionSpec);
  const luaL_Reg fns[] = {
      {"poll", safe<core_poll>},       {"spawn_local", safe<core_spawn_local>},
      {"getpid", safe<core_getpid>},
      {"setenv", safe<core_setenv>},   {"environ", safe<core_environ>}, {"signal", safe<core_signal>},
      {"free_port", safe<core_free_port>},
      {"sleep", safe<core_sleep>},     {"limits", safe<core_limits>},
      {nullptr, nullptr},
  };
  lua_newtable(L);
  luaL_register(L, nullptr, fns);
  lua_pushstring(L, self_exe().c_str());
  lua_setfield(L, -2, "exe");
  return 1;
}

}  // namespace

void connection_push(lua_State* L, std::unique_ptr<Transport> t) {
  class_push(L, kConnectionSpec, std::make_shared<Connection>(std::move(t)));
}

}  // namespace sky::pool

SKY_NATIVE_MODULE("sky.pool.core", sky::pool::luaopen_sky_pool_core);
