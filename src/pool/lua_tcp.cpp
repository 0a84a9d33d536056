// The native module "sky.pool.tcp": the driver's listener for workers that dial in over TCP
// (tcp_transport.hpp), used by lua/sky/providers/slurm.lua. The pool's secret stays inside the
// Rendezvous: Lua can start launchers that receive it, never read it.
#include <poll.h>

#include <algorithm>
#include <chrono>

#include "host/bind.hpp"
#include "host/modules.hpp"
#include "pool/tcp_transport.hpp"

namespace sky::pool {
namespace {

extern const ClassSpec kRendezvousSpec;

std::shared_ptr<Rendezvous> check_rv(lua_State* L, int idx) {
  return class_check_shared<Rendezvous>(L, idx, kRendezvousSpec);
}

// listen{address = "10.0.0.1", port = 0, dead_after = 4} -> Rendezvous
int tcp_listen(lua_State* L) {
  Options o(L, 1, "sky.pool.tcp.listen",
            {{"address", OptType::String}, {"port", OptType::Integer}, {"dead_after", OptType::Number}});
  std::string address = o.string("address", "");
  if (address.empty()) throw Error("sky.pool.tcp.listen: option 'address' is required (the address workers dial)");
  int64_t port = o.integer("port", 0);
  if (port < 0 || port > 65535) throw Error("sky.pool.tcp.listen: option 'port' must be 0-65535");
  try {
    class_push(L, kRendezvousSpec,
               std::make_shared<Rendezvous>(address, static_cast<int>(port), o.number("dead_after", 4)));
  } catch (const TransportError& e) {
    throw Error(e.what());
  }
  return 1;
}

// rv:address() -> "10.0.0.1", port
int rv_address(lua_State* L) {
  auto rv = check_rv(L, 1);
  lua_pushstring(L, rv->address().c_str());
  lua_pushinteger(L, rv->port());
  return 2;
}

// rv:spawn{argv = {"/usr/bin/srun", ...}, id = "w1", label = "node 1 (...)", cwd = } -> Connection
int rv_spawn(lua_State* L) {
  auto rv = check_rv(L, 1);
  Options o(L, 2, "rendezvous:spawn",
            {{"argv", OptType::Table}, {"id", OptType::String}, {"label", OptType::String}, {"cwd", OptType::String}});
  LocalSpawn spec;
  spec.label = o.string("label", "worker");
  spec.cwd = o.string("cwd", "");
  spec.stop_signal = SIGTERM;  // srun, on SIGTERM, kills the step on its node before it exits
  o.push("argv");              // [argv|nil]
  if (!lua_istable(L, -1)) throw Error("rendezvous:spawn: option 'argv' is required");
  int n = static_cast<int>(lua_objlen(L, -1));
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, -1, i);  // [argv, arg]
    if (lua_type(L, -1) != LUA_TSTRING) throw Error("rendezvous:spawn: argv[" + std::to_string(i) + "] must be a string");
    spec.argv.emplace_back(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (spec.argv.empty()) throw Error("rendezvous:spawn: argv is empty");
  try {
    connection_push(L, Rendezvous::spawn(rv, spec, o.string("id", "")));
  } catch (const TransportError& e) {
    throw Error(e.what());
  }
  return 1;
}

// rv:holds() -> {label, ...} of the keepers connected now
int rv_holds(lua_State* L) {
  auto labels = check_rv(L, 1)->holds();
  lua_createtable(L, static_cast<int>(labels.size()), 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    lua_pushstring(L, labels[i].c_str());
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

// rv:wait_hold(label, timeout_s) -> true once a keeper with that label is connected, false after timeout_s
int rv_wait_hold(lua_State* L) {
  auto rv = check_rv(L, 1);
  std::string label(check_string_view(L, 2));
  double timeout = luaL_checknumber(L, 3);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
  for (;;) {
    for (const std::string& h : rv->holds()) {
      if (h == label) {
        lua_pushboolean(L, 1);
        return 1;
      }
    }
    double left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    pollfd p{rv->wait_fd(), POLLIN, 0};
    // EINTR returns to Lua at once: a Ctrl-C's pending interrupt then raises there.
    if (poll(&p, 1, static_cast<int>(std::min(left, 0.25) * 1000) + 1) < 0) break;
  }
  lua_pushboolean(L, 0);
  return 1;
}

int rv_close(lua_State* L) {
  class_close(L, 1, kRendezvousSpec);
  return 0;
}

int rv_tostring(lua_State* L) {
  Handle* h = class_test_handle(L, 1, kRendezvousSpec);
  if (!h || !h->ptr) {
    lua_pushstring(L, "Rendezvous (closed)");
    return 1;
  }
  auto* rv = static_cast<Rendezvous*>(h->ptr.get());
  std::string s = "Rendezvous: " + rv->address() + ":" + std::to_string(rv->port());
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

const ClassSpec kRendezvousSpec{
    "skyrun.Rendezvous",
    "Rendezvous",
    {{"address", safe<rv_address>},
     {"spawn", safe<rv_spawn>},
     {"holds", safe<rv_holds>},
     {"wait_hold", safe<rv_wait_hold>},
     {"close", safe<rv_close>}},
    {},
    rv_tostring,
};

int luaopen_sky_pool_tcp(lua_State* L) {
  class_register(L, kRendezvousSpec);
  const luaL_Reg fns[] = {{"listen", safe<tcp_listen>}, {nullptr, nullptr}};
  lua_newtable(L);
  luaL_register(L, nullptr, fns);
  return 1;
}

}  // namespace
}  // namespace sky::pool

SKY_NATIVE_MODULE("sky.pool.tcp", sky::pool::luaopen_sky_pool_tcp);
