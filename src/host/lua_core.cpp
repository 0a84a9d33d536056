// The native module "sky.core": host services the Lua side of skyrun builds on (option checks,
// version information, terminal queries). Plain functions; no state of its own.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "host/bind.hpp"
#include "host/modules.hpp"
#include "host/torch_loader.hpp"
#include "sky_config.h"

namespace sky {
namespace {

OptType parse_opt_type(lua_State* L, const char* key, const char* t) {
  static const struct {
    const char* name;
    OptType type;
  } names[] = {{"any", OptType::Any},           {"boolean", OptType::Boolean},
               {"number", OptType::Number},     {"integer", OptType::Integer},
               {"string", OptType::String},     {"table", OptType::Table},
               {"function", OptType::Function}, {"string|table", OptType::StringOrTable},
               {"number|string", OptType::NumberOrString}};
  for (const auto& n : names)
    if (strcmp(n.name, t) == 0) return n.type;
  luaL_error(L, "check_options: schema entry '%s' has unknown type '%s'", key, t);
  return OptType::Any;
}

bool type_matches(lua_State* L, int idx, OptType t) {
  int lt = lua_type(L, idx);
  switch (t) {
    case OptType::Any: return true;
    case OptType::Boolean: return lt == LUA_TBOOLEAN;
    case OptType::Number: return lt == LUA_TNUMBER;
    case OptType::Integer: return lt == LUA_TNUMBER && lua_tonumber(L, idx) == static_cast<double>(static_cast<int64_t>(lua_tonumber(L, idx)));
    case OptType::String: return lt == LUA_TSTRING;
    case OptType::Table: return lt == LUA_TTABLE;
    case OptType::Function: return lt == LUA_TFUNCTION;
    case OptType::StringOrTable: return lt == LUA_TSTRING || lt == LUA_TTABLE;
    case OptType::NumberOrString: return lt == LUA_TNUMBER || lt == LUA_TSTRING;
  }
  return false;
}

// check_options(opts, schema, where [, level]) -> opts (or an empty table for nil)
// schema maps each accepted name to a type: "any", "boolean", "number", "integer", "string",
// "table", "function", "string|table", "number|string", "seconds" (a positive finite number: a
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
      std::string hint = suggest_closest(key, names);
      luaL_where(L, level);
      if (hint.empty())
        lua_pushfstring(L, "unknown option '%s' to '%s'", key, where);
      else
        lua_pushfstring(L, "unknown option '%s' to '%s' (did you mean '%s'?)", key, where, hint.c_str());
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
    OptType t = parse_opt_type(L, key, tname);
    if (!type_matches(L, -2, t)) {
      luaL_where(L, level);
      lua_pushfstring(L, "option '%s' to '%s' must be %s (got %s)", key, where, opt_type_name(t), type_name_at(L, -3));
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

int core_torch_describe(lua_State* L) {
  std::string s = torch_module_describe();
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

int core_isatty(lua_State* L) {
  lua_pushboolean(L, isatty(static_cast<int>(luaL_optinteger(L, 1, 1))));
  return 1;
}

// Throws a C++ exception from inside a binding: the boundary test's subject.
int core_debug_throw(lua_State* L) {
  std::string msg = luaL_optstring(L, 1, "C++ exception from sky.core.debug_throw");
  throw std::runtime_error(msg);
}

int core_live_handles(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(class_live_handles()));
  return 1;
}

}  // namespace
}  // namespace sky

extern "C" int luaopen_sky_core(lua_State* L) {
  static const luaL_Reg fns[] = {
      {"check_options", sky::safe<sky::core_check_options>},
      {"suggest", sky::safe<sky::core_suggest>},
      {"version", sky::safe<sky::core_version>},
      {"torch_describe", sky::safe<sky::core_torch_describe>},
      {"isatty", sky::safe<sky::core_isatty>},
      {"debug_throw", sky::safe<sky::core_debug_throw>},
      {"live_handles", sky::safe<sky::core_live_handles>},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0, sizeof(fns) / sizeof(fns[0]) - 1);
  luaL_register(L, nullptr, fns);
  return 1;
}

SKY_NATIVE_MODULE("sky.core", luaopen_sky_core);
