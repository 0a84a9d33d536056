// The native module "sky.core": host services the Lua side of skyrun builds on (option checks,
// version information, terminal queries). Plain functions; no state of its own.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "host/clock.hpp"
#include "host/bind.hpp"
#include "host/modules.hpp"
#include "host/torch_loader.hpp"
#include "sky_config.h"

namespace sky {
namespace {

// A schema type: one of bind's OptType names, or several joined by '|' ("boolean|string").
struct SchemaType {
  std::vector<OptType> alternatives;
  std::string words;  // "a boolean or a string"
};

SchemaType parse_schema_type(lua_State* L, const char* key, const char* spec) {
  static const struct {
    const char* name;
    OptType type;
  } names[] = {{"any", OptType::Any},           {"boolean", OptType::Boolean}, {"number", OptType::Number},
               {"integer", OptType::Integer},   {"string", OptType::String},   {"table", OptType::Table},
               {"function", OptType::Function}};
  SchemaType out;
  std::string_view rest(spec);
  while (true) {
    size_t bar = rest.find('|');
    std::string_view part = rest.substr(0, bar);
    bool found = false;
    for (const auto& n : names) {
      if (part == n.name) {
        out.alternatives.push_back(n.type);
        if (!out.words.empty()) out.words += " or ";
        out.words += opt_type_name(n.type);
        found = true;
      }
    }
    if (!found) luaL_error(L, "check_options: schema entry '%s' has unknown type '%s'", key, spec);
    if (bar == std::string_view::npos) break;
    rest.remove_prefix(bar + 1);
  }
  return out;
}

// check_options(opts, schema, where [, level]) -> opts (or an empty table for nil)
// schema maps each accepted name to a type: "any", "boolean", "number", "integer", "string",
// "table", "function", or several joined by '|' ("boolean|string"), or "seconds" (a positive finite number: a
// timeout; NaN, infinities, 0 and negatives are refused showing the value). The error blames
// `level` (default 2: the caller of the function that checks its options).
int core_check_options(lua_State* L) {
  luaL_checktype(L, 2, LUA_TTABLE);
  const char* where = luaL_checkstring(L, 3);
  int level = static_cast<int>(luaL_optinteger(L, 4, 2));
  if (lua_isnoneornil(L, 1)) {
    lua_newtable(L);
    return 1;
  }
  if (lua_type(L, 1) != LUA_TTABLE) {
    luaL_where(L, level);
    lua_pushfstring(L, "options to '%s' must be a table (got %s)", where, type_name_at(L, 1));
    lua_concat(L, 2);
    return lua_error(L);
  }
  lua_pushnil(L);
  while (lua_next(L, 1)) {  // [key, value]
    if (lua_type(L, -2) != LUA_TSTRING) {
      luaL_where(L, level);
      lua_pushfstring(L, "option names to '%s' must be strings (got %s)", where, luaL_typename(L, -3));
      lua_concat(L, 2);
      return lua_error(L);
    }
    const char* key = lua_tostring(L, -2);
    lua_getfield(L, 2, key);  // [key, value, type]
    if (lua_isnil(L, -1)) {
      std::vector<std::string> names;
      for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1))
        if (lua_type(L, -2) == LUA_TSTRING) names.emplace_back(lua_tostring(L, -2));
      std::string msg = unknown_option_message(key, where, names);
      luaL_where(L, level);
      lua_pushlstring(L, msg.data(), msg.size());
      lua_concat(L, 2);
      return lua_error(L);
    }
    const char* tname = luaL_checkstring(L, -1);
    if (strcmp(tname, "seconds") == 0) {
      double d = lua_tonumber(L, -2);
      if (lua_type(L, -2) != LUA_TNUMBER || !(d > 0) || !std::isfinite(d)) {
        char got[64];
        if (lua_type(L, -2) == LUA_TNUMBER && d != d) snprintf(got, sizeof got, "nan");  // 0/0 prints "-nan"
        else if (lua_type(L, -2) == LUA_TNUMBER) snprintf(got, sizeof got, "%.17g", d);
        else snprintf(got, sizeof got, "%s", type_name_at(L, -2));
        luaL_where(L, level);
        lua_pushfstring(L, "option '%s' to '%s' must be a positive number of seconds (got %s)", key, where, got);
        lua_concat(L, 2);
        return lua_error(L);
      }
      lua_pop(L, 2);  // [key]
      continue;
    }
    SchemaType t = parse_schema_type(L, key, tname);
    bool ok = false;
    for (OptType alt : t.alternatives) ok = ok || opt_type_matches(L, -2, alt);
    if (!ok) {
      luaL_where(L, level);
      lua_pushfstring(L, "option '%s' to '%s' must be %s (got %s)", key, where, t.words.c_str(), type_name_at(L, -3));
      lua_concat(L, 2);
      return lua_error(L);
    }
    lua_pop(L, 2);  // [key]
  }
  lua_settop(L, 1);
  return 1;
}

// suggest(name, {candidates...}) -> closest candidate or nil
int core_suggest(lua_State* L) {
  const char* name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  std::vector<std::string> names;
  int n = static_cast<int>(lua_objlen(L, 2));
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, 2, i);
    if (lua_type(L, -1) == LUA_TSTRING) names.emplace_back(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  std::string hint = suggest_closest(name, names);
  if (hint.empty()) lua_pushnil(L);
  else lua_pushlstring(L, hint.data(), hint.size());
  return 1;
}

int core_version(lua_State* L) {
  lua_createtable(L, 0, 3);
  lua_pushstring(L, SKY_VERSION);
  lua_setfield(L, -2, "skyrun");
  lua_pushstring(L, LUAJIT_VERSION);
  lua_setfield(L, -2, "luajit");
  lua_pushboolean(L, torch_module_built());
  lua_setfield(L, -2, "torch_built");
  return 1;
}

// monotonic() -> seconds of the one monotonic clock (host/clock.hpp)
int core_monotonic(lua_State* L) {
  lua_pushnumber(L, monotonic_seconds());
  return 1;
}

// isatty([fd = 1]) -> whether the descriptor is a terminal
int core_isatty(lua_State* L) {
  lua_pushboolean(L, isatty(static_cast<int>(luaL_optinteger(L, 1, 1))));
  return 1;
}

// Throws a C++ exception from inside a binding: the boundary test's subject.
int core_debug_throw(lua_State* L) {
  std::string msg = luaL_optstring(L, 1, "C++ exception from sky.core.debug_throw");
  throw std::runtime_error(msg);
}

}  // namespace
}  // namespace sky

extern "C" int luaopen_sky_core(lua_State* L) {
  static const luaL_Reg fns[] = {
      {"check_options", sky::safe<sky::core_check_options>},
      {"suggest", sky::safe<sky::core_suggest>},
      {"version", sky::safe<sky::core_version>},
      {"isatty", sky::safe<sky::core_isatty>},
      {"monotonic", sky::safe<sky::core_monotonic>},
      {"debug_throw", sky::safe<sky::core_debug_throw>},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0, sizeof(fns) / sizeof(fns[0]) - 1);
  luaL_register(L, nullptr, fns);
  return 1;
}

SKY_NATIVE_MODULE("sky.core", luaopen_sky_core);
