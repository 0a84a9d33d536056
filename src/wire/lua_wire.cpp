// The native module "sky.wire": the value encoding, frames and handshake text, for Lua code (the
// pool, the worker loop, tests, fake workers). The encoding itself lives in wire.cpp.
#include <string>

#include "host/bind.hpp"
#include "host/modules.hpp"
#include "wire/wire.hpp"

namespace sky::wire {
void register_reducer(lua_State* L, const char* metatable_name);  // wire.cpp
}

namespace sky {
namespace {

// encode(value [, root [, sent [, data_only]]]) -> string. root names the value in "cannot send"
// paths; sent: a table {module name = true} of module sources already shipped (updated);
// data_only: refuse functions, modules and userdata, as an untrusting receiver would.
int wire_encode(lua_State* L) {
  lua_settop(L, 4);
  wire::EncodeOptions opts;
  if (!lua_isnil(L, 2)) opts.root = std::string(check_string_view(L, 2));
  opts.allow_code = !lua_toboolean(L, 4);
  std::unordered_set<std::string> sent;
  bool track = lua_istable(L, 3);
  if (track) {
    for (lua_pushnil(L); lua_next(L, 3); lua_pop(L, 1))
      if (lua_type(L, -2) == LUA_TSTRING) sent.insert(lua_tostring(L, -2));
    opts.modules_sent = &sent;
  }
  std::string out = wire::encode(L, 1, opts);
  if (track) {
    for (const std::string& name : sent) {
      lua_pushboolean(L, 1);
      lua_setfield(L, 3, name.c_str());
    }
  }
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

// decode(bytes [, env [, untrusted]]) -> value. env: the table decoded functions get as their
// environment; untrusted: refuse bytecode, module loads and reducers.
int wire_decode(lua_State* L) {
  std::string_view s = check_string_view(L, 1);
  wire::DecodeOptions opts;
  if (lua_istable(L, 2)) opts.env_index = 2;
  opts.allow_code = !lua_toboolean(L, 3);
  wire::decode(L, s, opts);
  return 1;
}

// register(metatable_name, reducer): reducer(u) returns a function and arguments that rebuild u
// on the receiving side.
int wire_register(lua_State* L) {
  const char* name = luaL_checkstring(L, 1);
  check_function(L, 2);
  lua_settop(L, 2);
  wire::register_reducer(L, name);
  return 0;
}

void push_versions(lua_State* L, const wire::Versions& v) {
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, v.wire);
  lua_setfield(L, -2, "wire");
  lua_pushstring(L, v.skyrun.c_str());
  lua_setfield(L, -2, "skyrun");
  lua_pushstring(L, v.luajit.c_str());
  lua_setfield(L, -2, "luajit");
  lua_pushstring(L, v.bytecode.c_str());
  lua_setfield(L, -2, "bytecode");
}

wire::Versions read_versions(lua_State* L, int idx) {
  wire::Versions v = wire::local_versions();
  if (!lua_istable(L, idx)) return v;
  lua_getfield(L, idx, "wire");
  if (lua_isnumber(L, -1)) v.wire = static_cast<uint32_t>(lua_tointeger(L, -1));
  lua_pop(L, 1);
  const char* keys[] = {"skyrun", "luajit", "bytecode"};
  std::string* fields[] = {&v.skyrun, &v.luajit, &v.bytecode};
  for (int i = 0; i < 3; ++i) {
    lua_getfield(L, idx, keys[i]);
    if (lua_type(L, -1) == LUA_TSTRING) *fields[i] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  return v;
}

int wire_versions(lua_State* L) {
  push_versions(L, wire::local_versions());
  return 1;
}

// hello([versions]) -> the greeting text (this process's versions, fields overridden by the table).
int wire_hello(lua_State* L) {
  std::string s = wire::hello_encode(read_versions(L, 1));
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

// parse_hello(text) -> versions table (error when text is not a greeting)
int wire_parse_hello(lua_State* L) {
  push_versions(L, wire::hello_decode(check_string_view(L, 1)));
  return 1;
}

// mismatch(driver_versions, worker_versions) -> message or nil
int wire_mismatch(lua_State* L) {
  std::string m = wire::versions_mismatch(read_versions(L, 1), read_versions(L, 2));
  if (m.empty()) lua_pushnil(L);
  else lua_pushlstring(L, m.data(), m.size());
  return 1;
}

// worker_frame(kind, payload) -> id, base, body: a frame from a worker, its header checked
// (id and base are 0 where the kind has none). Raises "a RESULT frame without its task id".
int wire_worker_frame(lua_State* L) {
  int64_t kind = check_int64(L, 1);
  std::string_view payload = check_string_view(L, 2);
  if (kind < 0 || kind > 255) throw Error("a frame of unknown kind " + std::to_string(kind));
  wire::WorkerFrame f = wire::worker_frame_parse(static_cast<uint8_t>(kind), payload);
  lua_pushnumber(L, static_cast<lua_Number>(f.id));    // [id]
  lua_pushnumber(L, static_cast<lua_Number>(f.base));  // [id, base]
  lua_pushlstring(L, f.body.data(), f.body.size());    // [id, base, body]
  return 3;
}

// frame(kind, payload) -> bytes
int wire_frame(lua_State* L) {
  int64_t kind = check_int64(L, 1);
  if (kind < 0 || kind > 255) luaL_argerror(L, 1, "frame kind must be 0..255");
  std::string out;
  wire::frame_append(out, static_cast<uint8_t>(kind), check_string_view(L, 2));
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

// unframe(buf [, pos]) -> kind, payload, next_pos; nil when buf holds no complete frame at pos
int wire_unframe(lua_State* L) {
  std::string_view buf = check_string_view(L, 1);
  int64_t pos = lua_isnoneornil(L, 2) ? 1 : check_int64(L, 2);
  if (pos < 1 || static_cast<size_t>(pos) > buf.size() + 1) luaL_argerror(L, 2, "position out of range");
  uint8_t kind = 0;
  std::string_view payload;
  size_t n = wire::frame_parse(buf.substr(static_cast<size_t>(pos - 1)), kind, payload);
  if (n == 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, kind);
  lua_pushlstring(L, payload.data(), payload.size());
  lua_pushinteger(L, static_cast<lua_Integer>(pos + n));
  return 3;
}

int luaopen_sky_wire(lua_State* L) {
  const luaL_Reg fns[] = {
      {"encode", safe<wire_encode>},   {"decode", safe<wire_decode>},
      {"register", safe<wire_register>}, {"versions", safe<wire_versions>},
      {"hello", safe<wire_hello>},     {"parse_hello", safe<wire_parse_hello>},
      {"mismatch", safe<wire_mismatch>}, {"frame", safe<wire_frame>},
      {"unframe", safe<wire_unframe>}, {"worker_frame", safe<wire_worker_frame>}, {nullptr, nullptr},
  };
  lua_newtable(L);
  luaL_register(L, nullptr, fns);
  // kinds: {HELLO = 1, ...} and {[1] = "HELLO", ...} (sky.protocol is this table)
  lua_createtable(L, 0 /* narr */, 28);  // [M, kinds]
  for (int k = 1; k < 256; ++k) {
    std::string name = wire::frame_kind_name(static_cast<uint8_t>(k));
    if (name.rfind("kind ", 0) == 0) break;
    lua_pushinteger(L, k);
    lua_setfield(L, -2, name.c_str());
    lua_pushstring(L, name.c_str());
    lua_rawseti(L, -2, k);
  }
  lua_setfield(L, -2, "kinds");  // [M]
  lua_pushinteger(L, wire::kWireVersion);
  lua_setfield(L, -2, "version");
  return 1;
}

}  // namespace
}  // namespace sky

SKY_NATIVE_MODULE("sky.wire", sky::luaopen_sky_wire);
