// The native module "sky.ssh.core": libssh sessions for Lua (connect, run, upload), used by
// lua/sky/providers/ssh.lua. Option tables are read here, unknown keys refused.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "host/bind.hpp"
#include "host/digest.hpp"
#include "host/modules.hpp"
#include "pool/transport.hpp"
#include "ssh/session.hpp"
#include "ssh/ssh_transport.hpp"

namespace sky {
namespace {

const ClassSpec& session_spec();

ssh::Session& check_session(lua_State* L, int idx) { return class_check<ssh::Session>(L, idx, session_spec()); }

std::string read_whole_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path);
  std::string data;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      ::close(fd);
      throw Error("cannot read " + path);
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return data;
}

// connect{target=, key=, known_hosts=, config=, host_key_policy=, connect_timeout=, dead_after=} -> session
int ssh_connect_lua(lua_State* L) {
  Options o(L, 1, "ssh.connect",
            {{"target", OptType::String}, {"key", OptType::String}, {"known_hosts", OptType::String},
             {"config", OptType::String}, {"host_key_policy", OptType::String}, {"connect_timeout", OptType::Number},
             {"dead_after", OptType::Number}});
  ssh::ConnectOptions c;
  c.target = o.string("target", "");
  if (c.target.empty()) throw Error("ssh.connect: option 'target' is required");
  c.key = o.string("key", "");
  c.known_hosts = o.string("known_hosts", "");
  c.config = o.string("config", "");
  std::string policy = o.string("host_key_policy", "strict");
  if (policy == "strict") c.policy = ssh::HostKeyPolicy::strict;
  else if (policy == "accept-new") c.policy = ssh::HostKeyPolicy::accept_new;
  else throw Error("option 'host_key_policy' must be \"strict\" or \"accept-new\" (got \"" + policy + "\")");
  c.connect_timeout = o.number("connect_timeout", 10);
  if (c.connect_timeout <= 0) throw Error("option 'connect_timeout' must be positive");
  c.dead_after = o.number("dead_after", 30);
  std::shared_ptr<ssh::Session> s = ssh::Session::connect(c);
  class_push(L, session_spec(), s);
  return 1;
}

// session:run(command [, {stdin=, timeout=, prefix=}]) -> exit_status, stdout, stderr
// With prefix, output lines are written to this process's stdout (stderr lines to stderr) as they
// arrive, each preceded by prefix, and the returned stdout/stderr are empty.
// Writes one streamed output line with its prefix; lines from several threads never interleave.
void write_prefixed(const std::string& prefix, std::string_view line, bool is_stderr) {
  static std::mutex m;
  std::lock_guard<std::mutex> lock(m);
  FILE* f = is_stderr ? stderr : stdout;
  fwrite(prefix.data(), 1, prefix.size(), f);
  fwrite(line.data(), 1, line.size(), f);
  fputc('\n', f);
  fflush(f);
}

int session_run(lua_State* L) {
  ssh::Session& s = check_session(L, 1);
  std::string cmd(check_string_view(L, 2));
  Options o(L, 3, "session:run", {{"stdin", OptType::String}, {"timeout", OptType::Number}, {"prefix", OptType::String}});
  std::string input = o.string("stdin", "");
  double timeout = o.number("timeout", 0);
  ssh::RunResult r;
  if (o.has("prefix")) {
    std::string prefix = o.string("prefix", "");
    r = s.run(cmd, input, [&](std::string_view line, bool is_stderr) { write_prefixed(prefix, line, is_stderr); },
              timeout);
  } else {
    r = s.run(cmd, input, nullptr, timeout);
  }
  lua_pushinteger(L, r.exit_status);
  lua_pushlstring(L, r.out.data(), r.out.size());
  lua_pushlstring(L, r.err.data(), r.err.size());
  return 3;
}

// session:upload(local_path, remote_path [, mode]) -> bytes
int session_upload(lua_State* L) {
  ssh::Session& s = check_session(L, 1);
  std::string local(check_string_view(L, 2));
  std::string remote(check_string_view(L, 3));
  int mode = lua_isnoneornil(L, 4) ? 0644 : static_cast<int>(check_int64(L, 4));
  std::string data = read_whole_file(local);
  s.upload(data, remote, mode);
  lua_pushnumber(L, static_cast<double>(data.size()));
  return 1;
}

// session:start_worker{path=, workdir=, label=} -> a pool Connection to `skyrun worker` there
int session_start_worker(lua_State* L) {
  std::shared_ptr<ssh::Session> s = class_check_shared<ssh::Session>(L, 1, session_spec());
  Options o(L, 2, "session:start_worker",
            {{"path", OptType::String}, {"workdir", OptType::String}, {"label", OptType::String}});
  std::string path = o.string("path", "");
  if (path.empty()) throw Error("session:start_worker: option 'path' (the remote skyrun) is required");
  std::string cmd = ssh::worker_command(path, o.string("workdir", ""));
  std::unique_ptr<pool::Transport> t = ssh::start_worker(s, cmd, o.string("label", "worker"));
  pool::connection_push(L, std::move(t));
  return 1;
}

int session_close(lua_State* L) {
  check_session(L, 1).disconnect();
  class_close(L, 1, session_spec());
  return 0;
}

int session_describe(lua_State* L) {
  const std::string& d = check_session(L, 1).describe();
  lua_pushlstring(L, d.data(), d.size());
  return 1;
}

int session_get_host(lua_State* L) {
  lua_pushstring(L, check_session(L, 1).host().c_str());
  return 1;
}
int session_get_user(lua_State* L) {
  lua_pushstring(L, check_session(L, 1).user().c_str());
  return 1;
}
int session_get_port(lua_State* L) {
  lua_pushinteger(L, check_session(L, 1).port());
  return 1;
}
int session_get_fingerprint(lua_State* L) {
  lua_pushstring(L, check_session(L, 1).host_key_fingerprint().c_str());
  return 1;
}
int session_get_connected(lua_State* L) {
  Handle* h = class_test_handle(L, 1, session_spec());
  lua_pushboolean(L, h && h->ptr && static_cast<ssh::Session*>(h->ptr.get())->connected());
  return 1;
}
int session_get_host_key_added(lua_State* L) {
  lua_pushboolean(L, check_session(L, 1).host_key_added());
  return 1;
}

int session_tostring(lua_State* L) {
  Handle* h = class_test_handle(L, 1, session_spec());
  if (!h || !h->ptr) {
    lua_pushliteral(L, "SshSession (closed)");
    return 1;
  }
  std::string s = "SshSession " + static_cast<ssh::Session*>(h->ptr.get())->describe();
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

const ClassSpec& session_spec() {
  static const ClassSpec spec = {
      "skyrun.SshSession",
      "SshSession",
      {{"run", safe<session_run>},
       {"upload", safe<session_upload>},
       {"start_worker", safe<session_start_worker>},
       {"describe", safe<session_describe>},
       {"close", safe<session_close>}},
      {{"host", safe<session_get_host>, nullptr},
       {"user", safe<session_get_user>, nullptr},
       {"port", safe<session_get_port>, nullptr},
       {"fingerprint", safe<session_get_fingerprint>, nullptr},
       {"host_key_added", safe<session_get_host_key_added>, nullptr},
       {"connected", safe<session_get_connected>, nullptr}},
      safe<session_tostring>,
  };
  return spec;
}

// run_many({ {session=, command=, stdin=, timeout=, prefix=} | {session=, upload_from=, upload_to=, mode=}, ... })
//   -> { {code=, out=, err=} | {bytes=} | {error=message}, ... }
// Runs each job on its own thread (one job per session: a libssh session is used by one thread
// at a time), so hosts are prepared side by side. Returns when all are done.
struct ManyJob {
  std::shared_ptr<ssh::Session> session;
  std::string command, input, prefix, upload_from, upload_to;
  const std::string* upload_data = nullptr;
  bool has_prefix = false;
  double timeout = 0;
  int mode = 0644;
  ssh::RunResult result;
  std::string error;
};

int ssh_run_many(lua_State* L) {
  check_table(L, 1);
  int n = static_cast<int>(lua_objlen(L, 1));
  std::vector<ManyJob> jobs(static_cast<size_t>(n));
  std::map<std::string, std::string> files;  // local path -> contents, read once
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, 1, i);  // [job]
    int idx = lua_gettop(L);
    Options o(L, idx, "ssh.run_many", {{"session", OptType::Any}, {"command", OptType::String}, {"stdin", OptType::String},
                                        {"timeout", OptType::Number}, {"prefix", OptType::String},
                                        {"upload_from", OptType::String}, {"upload_to", OptType::String},
                                        {"mode", OptType::Integer}});
    ManyJob& j = jobs[static_cast<size_t>(i - 1)];
    o.push("session");  // [job, session]
    j.session = class_check_shared<ssh::Session>(L, -1, session_spec());
    lua_pop(L, 1);  // [job]
    for (int k = 0; k < i - 1; ++k)
      if (jobs[static_cast<size_t>(k)].session == j.session) throw Error("ssh.run_many: two jobs on one session");
    j.command = o.string("command", "");
    j.input = o.string("stdin", "");
    j.timeout = o.number("timeout", 0);
    j.has_prefix = o.has("prefix");
    j.prefix = o.string("prefix", "");
    j.upload_from = o.string("upload_from", "");
    j.upload_to = o.string("upload_to", "");
    j.mode = static_cast<int>(o.integer("mode", 0644));
    lua_pop(L, 1);  // []
    if (!j.upload_to.empty()) {
      auto it = files.find(j.upload_from);
      if (it == files.end()) it = files.emplace(j.upload_from, read_whole_file(j.upload_from)).first;
      j.upload_data = &it->second;
    } else if (j.command.empty()) {
      throw Error("ssh.run_many: job " + std::to_string(i) + " has neither 'command' nor 'upload_to'");
    }
  }
  auto work = [](ManyJob* j) {
    try {
      if (j->upload_data) {
        j->session->upload(*j->upload_data, j->upload_to, j->mode);
      } else if (j->has_prefix) {
        const std::string& prefix = j->prefix;
        j->result = j->session->run(j->command, j->input, [&prefix](std::string_view line, bool is_stderr) {
          write_prefixed(prefix, line, is_stderr);
        }, j->timeout);
      } else {
        j->result = j->session->run(j->command, j->input, nullptr, j->timeout);
      }
    } catch (const std::exception& e) {
      j->error = e.what();
    }
  };
  std::vector<std::thread> threads;
  for (size_t k = 1; k < jobs.size(); ++k) threads.emplace_back(work, &jobs[k]);
  if (!jobs.empty()) work(&jobs[0]);
  for (auto& t : threads) t.join();
  lua_createtable(L, n, 0);  // [results]
  for (int i = 1; i <= n; ++i) {
    const ManyJob& j = jobs[static_cast<size_t>(i - 1)];
    lua_createtable(L, 0, 3);  // [results, r]
    if (!j.error.empty()) {
      lua_pushlstring(L, j.error.data(), j.error.size());
      lua_setfield(L, -2, "error");
    } else if (j.upload_data) {
      lua_pushnumber(L, static_cast<double>(j.upload_data->size()));
      lua_setfield(L, -2, "bytes");
    } else {
      lua_pushinteger(L, j.result.exit_status);
      lua_setfield(L, -2, "code");
      lua_pushlstring(L, j.result.out.data(), j.result.out.size());
      lua_setfield(L, -2, "out");
      lua_pushlstring(L, j.result.err.data(), j.result.err.size());
      lua_setfield(L, -2, "err");
    }
    lua_rawseti(L, -2, i);  // [results]
  }
  return 1;
}

// shell_quote(s) -> s single-quoted for a POSIX shell (numbers and other values through tostring):
// the one quoting every remote command line uses.
int ssh_shell_quote(lua_State* L) {
  if (lua_type(L, 1) != LUA_TSTRING && lua_type(L, 1) != LUA_TNUMBER) {
    lua_getglobal(L, "tostring");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    lua_replace(L, 1);
  }
  size_t n = 0;
  const char* p = lua_tolstring(L, 1, &n);
  std::string q = ssh::shell_quote(std::string_view(p, n));
  lua_pushlstring(L, q.data(), q.size());
  return 1;
}

// sha256_file(path) -> hex digest. The running binary's digest is computed once per process.
int ssh_sha256_file(lua_State* L) {
  std::string path(check_string_view(L, 1));
  static std::string self_digest;
  if (path == "/proc/self/exe") {
    if (self_digest.empty()) self_digest = digest::sha256_file(path);
    lua_pushlstring(L, self_digest.data(), self_digest.size());
    return 1;
  }
  std::string d = digest::sha256_file(path);
  lua_pushlstring(L, d.data(), d.size());
  return 1;
}

// parse_target("user@host:port") -> {user=, host=, port=} (absent parts nil)
int ssh_parse_target(lua_State* L) {
  ssh::Target t = ssh::parse_target(check_string_view(L, 1));
  lua_createtable(L, 0, 3);  // [t]
  if (!t.user.empty()) {
    lua_pushlstring(L, t.user.data(), t.user.size());
    lua_setfield(L, -2, "user");
  }
  lua_pushlstring(L, t.host.data(), t.host.size());
  lua_setfield(L, -2, "host");
  if (t.port) {
    lua_pushinteger(L, t.port);
    lua_setfield(L, -2, "port");
  }
  return 1;
}

}  // namespace
}  // namespace sky

extern "C" int luaopen_sky_ssh_core(lua_State* L) {
  sky::class_register(L, sky::session_spec());
  static const luaL_Reg fns[] = {
      {"connect", sky::safe<sky::ssh_connect_lua>},
      {"sha256_file", sky::safe<sky::ssh_sha256_file>},
      {"shell_quote", sky::safe<sky::ssh_shell_quote>},
      {"run_many", sky::safe<sky::ssh_run_many>},
      {"parse_target", sky::safe<sky::ssh_parse_target>},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0, 3);
  luaL_register(L, nullptr, fns);
  return 1;
}

SKY_NATIVE_MODULE("sky.ssh.core", luaopen_sky_ssh_core);
