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
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "host/bind.hpp"
#include "host/fs.hpp"
#include "host/json.hpp"
#include "host/lua_json.hpp"
#include "host/modules.hpp"
#include "train/schedule.hpp"
#include "train/tfevents.hpp"

namespace sky::train {
namespace {

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

// ---- JSON (the Lua -> JSON writer is host/lua_json.hpp's) ------------------------------------

void* json_null() { return lua_json_null(); }

// json_encode(value [, indent]) -> string
int core_json_encode(lua_State* L) {
  luaL_checkany(L, 1);
  std::string text = lua_json_encode(L, 1, static_cast<int>(luaL_optinteger(L, 2, 0)), "json_encode");
  lua_pushlstring(L, text.data(), text.size());
  return 1;
}

void json_push(lua_State* L, const rapidjson::Value& v, int depth) {
  luaL_checkstack(L, 4, "json_decode: too deep");  // json_parse keeps depth <= kJsonMaxDepth
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
  JsonParsed r = json_parse<rapidjson::kParseNanAndInfFlag | rapidjson::kParseFullPrecisionFlag>(doc, s);  // exact doubles
  if (!r) raise_error(L, std::string(what) + ": invalid JSON at offset " + std::to_string(r.offset) + ": " + r.reason());
  json_push(L, doc, 0);
  return 1;
}

// write_file_atomic(path, text): sky.fs's atomic write (a temporary file renamed over path, so a
// reader or a crash never sees half a file). Errors name the path.
int core_write_file_atomic(lua_State* L) {
  fs::write_file_atomic(std::string(check_string_view(L, 1)), check_string_view(L, 2));
  return 0;
}

}  // namespace
}  // namespace sky::train

extern "C" int luaopen_transformers_train_core(lua_State* L) {
  static const luaL_Reg fns[] = {
      {"crc32c", sky::safe<sky::train::core_crc32c>},
      {"tb_open", sky::safe<sky::train::tb_open>},
      {"json_encode", sky::safe<sky::train::core_json_encode>},
      {"json_decode", sky::safe<sky::train::core_json_decode>},
      {"write_file_atomic", sky::safe<sky::train::core_write_file_atomic>},
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
