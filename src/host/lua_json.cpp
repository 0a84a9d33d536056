// Lua values as JSON text (see lua_json.hpp).
#include "host/lua_json.hpp"

#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace sky {

namespace {

const char kNullKey = 0;

template <class Writer>
void write(lua_State* L, int idx, Writer& w, int depth, const char* who) {
  if (depth > 100) luaL_error(L, "%s: nesting deeper than 100 (a cycle?)", who);
  idx = idx > 0 ? idx : lua_gettop(L) + idx + 1;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: w.Null(); return;
    case LUA_TBOOLEAN: w.Bool(lua_toboolean(L, idx)); return;
    case LUA_TNUMBER: {
      double d = lua_tonumber(L, idx);
      if (std::isnan(d)) { w.RawValue("NaN", 3, rapidjson::kNumberType); return; }
      if (std::isinf(d)) { d > 0 ? w.RawValue("Infinity", 8, rapidjson::kNumberType) : w.RawValue("-Infinity", 9, rapidjson::kNumberType); return; }
      if (d == std::floor(d) && std::fabs(d) < 9007199254740992.0) w.Int64(static_cast<int64_t>(d));
      else w.Double(d);
      return;
    }
    case LUA_TSTRING: {
      size_t n;
      const char* s = lua_tolstring(L, idx, &n);
      w.String(s, static_cast<rapidjson::SizeType>(n));
      return;
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == lua_json_null()) { w.Null(); return; }
      break;
    case LUA_TTABLE: {
      bool is_array = false;
      if (luaL_getmetafield(L, idx, "__jsontype")) {  // [type]
        is_array = strcmp(lua_tostring(L, -1) ? lua_tostring(L, -1) : "", "array") == 0;
        lua_pop(L, 1);
      }
      size_t n = lua_objlen(L, idx);
      if (!is_array && n > 0) {
        size_t count = 0;
        for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) ++count;
        is_array = count == n;
      }
      if (is_array) {
        w.StartArray();
        for (size_t i = 1; i <= n; ++i) {
          lua_rawgeti(L, idx, static_cast<int>(i));
          write(L, -1, w, depth + 1, who);
          lua_pop(L, 1);
        }
        w.EndArray();
        return;
      }
      // objects: keys sorted, so files are stable
      std::vector<std::string> keys;
      for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        if (lua_type(L, -2) == LUA_TSTRING) keys.emplace_back(lua_tostring(L, -2));
        else if (lua_type(L, -2) == LUA_TNUMBER) {
          lua_pushvalue(L, -2);
          keys.emplace_back(lua_tostring(L, -1));
          lua_pop(L, 1);
        } else luaL_error(L, "%s: object keys must be strings (got %s)", who, luaL_typename(L, -2));
      }
      std::sort(keys.begin(), keys.end());
      w.StartObject();
      for (const std::string& k : keys) {
        w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
        lua_getfield(L, idx, k.c_str());
        if (lua_isnil(L, -1)) {  // numeric key stored as number
          lua_pop(L, 1);
          lua_pushnumber(L, strtod(k.c_str(), nullptr));
          lua_rawget(L, idx);
        }
        write(L, -1, w, depth + 1, who);
        lua_pop(L, 1);
      }
      w.EndObject();
      return;
    }
    default: break;
  }
  luaL_error(L, "%s: cannot encode a %s", who, luaL_typename(L, idx));
}

}  // namespace

void* lua_json_null() { return const_cast<char*>(&kNullKey); }

std::string lua_json_encode(lua_State* L, int idx, int indent, const char* who) {
  idx = idx > 0 ? idx : lua_gettop(L) + idx + 1;
  rapidjson::StringBuffer buf;
  if (indent > 0) {
    rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buf);
    w.SetIndent(' ', static_cast<unsigned>(indent));
    write(L, idx, w, 0, who);
  } else {
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    write(L, idx, w, 0, who);
  }
  return std::string(buf.GetString(), buf.GetSize());
}

}  // namespace sky
