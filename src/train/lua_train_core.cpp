// transformers.train_core: the Trainer's native pieces that need no LibTorch, for Lua:
// lr schedule factors, TensorBoard event files, JSON (trainer_state.json, jsonl logs).
// Everything torch-backed lives in skyrun.train (lua_train.cpp).
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>

#include "host/bind.hpp"
#include "host/modules.hpp"
#include "train/schedule.hpp"
#include "train/tfevents.hpp"

namespace sky::train {
namespace {

// lr_factor(kind, step, warmup, total [, num_cycles [, min_lr_rate]]) -> number
int core_lr_factor(lua_State* L) {
  Schedule s;
  s.kind = schedule_kind_from_name(std::string(check_string_view(L, 1)));
  int64_t step = check_int64(L, 2);
  s.warmup_steps = check_int64(L, 3);
  s.total_steps = check_int64(L, 4);
  s.num_cycles = luaL_optnumber(L, 5, 0.5);
  s.min_lr_rate = luaL_optnumber(L, 6, 0.0);
  lua_pushnumber(L, schedule_factor(s, step));
  return 1;
}

// monotonic() -> seconds (CLOCK_MONOTONIC), for run times and tokens/s
int core_monotonic(lua_State* L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9);
  return 1;
}

int core_crc32c(lua_State* L) {
  std::string_view s = check_string_view(L, 1);
  lua_pushnumber(L, crc32c(s.data(), s.size()));
  lua_pushnumber(L, crc32c_masked(s.data(), s.size()));
  return 2;
}

// ---- TensorBoard writer ---------------------------------------------------------------------

extern const ClassSpec kTbSpec;

int tb_open(lua_State* L) {
  std::string dir(check_string_view(L, 1));
  class_push(L, kTbSpec, std::make_shared<TfEventWriter>(dir));
  return 1;
}

double now_seconds() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

// w:add_scalar(tag, value, step [, wall_time])
int tb_add_scalar(lua_State* L) {
  auto& w = class_check<TfEventWriter>(L, 1, kTbSpec);
  std::string_view tag = check_string_view(L, 2);
  double v = luaL_checknumber(L, 3);
  int64_t step = check_int64(L, 4);
  double wall = luaL_optnumber(L, 5, now_seconds());
  w.add_scalar(tag, static_cast<float>(v), step, wall);
  return 0;
}

int tb_flush(lua_State* L) {
  class_check<TfEventWriter>(L, 1, kTbSpec).flush();
  return 0;
}

int tb_close(lua_State* L) {
  class_check<TfEventWriter>(L, 1, kTbSpec).close();
  class_close(L, 1, kTbSpec);
  return 0;
}

int tb_path(lua_State* L) {
  const std::string& p = class_check<TfEventWriter>(L, 1, kTbSpec).path();
  lua_pushlstring(L, p.data(), p.size());
  return 1;
}

const ClassSpec kTbSpec = {
    "skyrun.TfEventWriter",
    "TfEventWriter",
    {{"add_scalar", safe<tb_add_scalar>}, {"flush", safe<tb_flush>}, {"close", safe<tb_close>}},
    {{"path", safe<tb_path>, nullptr}},
};

// ---- JSON ------------------------------------------------------------------------------------
// json_null is a unique light userdata. Tables: a table whose metatable has __jsontype="array",
// or whose keys are exactly 1..n (n > 0), is an array; others are objects (string keys only).

const char kNullKey = 0;
void* json_null() { return const_cast<char*>(&kNullKey); }

template <class Writer>
void json_write(lua_State* L, int idx, Writer& w, int depth) {
  if (depth > 100) luaL_error(L, "json_encode: nesting deeper than 100 (a cycle?)");
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
      if (lua_touserdata(L, idx) == json_null()) { w.Null(); return; }
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
          json_write(L, -1, w, depth + 1);
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
        } else luaL_error(L, "json_encode: object keys must be strings (got %s)", luaL_typename(L, -2));
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
        json_write(L, -1, w, depth + 1);
        lua_pop(L, 1);
      }
      w.EndObject();
      return;
    }
    default: break;
  }
  luaL_error(L, "json_encode: cannot encode a %s", luaL_typename(L, idx));
}

// json_encode(value [, indent]) -> string
int core_json_encode(lua_State* L) {
  luaL_checkany(L, 1);
  int indent = static_cast<int>(luaL_optinteger(L, 2, 0));
  rapidjson::StringBuffer buf;
  if (indent > 0) {
    rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buf);
    w.SetIndent(' ', static_cast<unsigned>(indent));
    json_write(L, 1, w, 0);
  } else {
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    json_write(L, 1, w, 0);
  }
  lua_pushlstring(L, buf.GetString(), buf.GetSize());
  return 1;
}

void json_push(lua_State* L, const rapidjson::Value& v, int depth) {
  luaL_checkstack(L, 4, "json_decode: too deep");
  if (depth > 200) luaL_error(L, "json_decode: nesting deeper than 200");
  if (v.IsNull()) lua_pushlightuserdata(L, json_null());
  else if (v.IsBool()) lua_pushboolean(L, v.GetBool());
  else if (v.IsNumber()) lua_pushnumber(L, v.GetDouble());
  else if (v.IsString()) lua_pushlstring(L, v.GetString(), v.GetStringLength());
  else if (v.IsArray()) {
    lua_createtable(L, static_cast<int>(v.Size()), 0);
    int i = 1;
    for (const auto& e : v.GetArray()) {
      json_push(L, e, depth + 1);
      lua_rawseti(L, -2, i++);
    }
  } else {
    lua_createtable(L, 0, static_cast<int>(v.MemberCount()));
    for (const auto& m : v.GetObject()) {
      lua_pushlstring(L, m.name.GetString(), m.name.GetStringLength());
      json_push(L, m.value, depth + 1);
      lua_rawset(L, -3);
    }
  }
}

// json_decode(text [, what]) -> value; nulls become json_null. Errors name `what` and the offset.
int core_json_decode(lua_State* L) {
  std::string_view s = check_string_view(L, 1);
  const char* what = luaL_optstring(L, 2, "JSON text");
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseNanAndInfFlag | rapidjson::kParseFullPrecisionFlag>(s.data(), s.size());  // exact doubles
  if (doc.HasParseError())
    luaL_error(L, "%s: invalid JSON at offset %d: %s", what, static_cast<int>(doc.GetErrorOffset()),
               rapidjson::GetParseError_En(doc.GetParseError()));
  json_push(L, doc, 0);
  return 1;
}

}  // namespace
}  // namespace sky::train

extern "C" int luaopen_transformers_train_core(lua_State* L) {
  static const luaL_Reg fns[] = {
      {"lr_factor", sky::safe<sky::train::core_lr_factor>},
      {"crc32c", sky::safe<sky::train::core_crc32c>},
      {"monotonic", sky::safe<sky::train::core_monotonic>},
      {"tb_open", sky::safe<sky::train::tb_open>},
      {"json_encode", sky::safe<sky::train::core_json_encode>},
      {"json_decode", sky::safe<sky::train::core_json_decode>},
      {nullptr, nullptr},
  };
  sky::class_register(L, sky::train::kTbSpec);
  lua_createtable(L, 0, 8);  // [M]
  luaL_register(L, nullptr, fns);
  lua_pushlightuserdata(L, sky::train::json_null());  // [M, null]
  lua_setfield(L, -2, "json_null");                   // [M]
  return 1;
}

SKY_NATIVE_MODULE("transformers.train_core", luaopen_transformers_train_core);
