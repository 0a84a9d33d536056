// libFuzzer entry: transformers.train_core's JSON reader (trainer_state.json, jsonl logs, data
// files) must turn any byte string into a Lua value or a Lua error, never crash; a value it
// accepts must encode and decode again to the same text. Build with -Dfuzz=enabled (clang), or:
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Isrc -Ibuild -I/usr/include/luajit-2.1 \
//     src/train/fuzz_train_json.cpp src/train/lua_train_core.cpp src/train/schedule.cpp \
//     src/train/tfevents.cpp src/host/bind.cpp -lluajit-5.1 -o fuzz_train_json
// Seeds: skyrun tests/host/json_fuzz_seeds.lua seeds && ./fuzz_train_json corpus seeds/train_json
// (nesting at, past and far past the 128-level limit).
// (it found: rapidjson's default number parsing is not exact, so a double read back from
// trainer_state.json could differ by an ulp; the reader now parses with full precision).
#include <lua.hpp>

#include "host/modules.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

extern "C" int luaopen_transformers_train_core(lua_State* L);

// The fuzzer links the module alone: its registration needs this list, which skyrun's host owns.
namespace sky {
std::vector<NativeModule>& native_modules() {
  static std::vector<NativeModule> modules;
  return modules;
}
}  // namespace sky

namespace {

lua_State* state() {
  static lua_State* L = [] {
    lua_State* s = luaL_newstate();
    luaL_openlibs(s);
    lua_pushcfunction(s, luaopen_transformers_train_core);
    lua_call(s, 0, 1);
    lua_setglobal(s, "tc");  // []
    return s;
  }();
  return L;
}

// Runs tc.json_encode(tc.json_decode(text)); returns false when decoding raised.
bool round(lua_State* L, const std::string& text, std::string& out) {
  lua_getglobal(L, "tc");
  lua_getfield(L, -1, "json_decode");  // [tc, decode]
  lua_pushlstring(L, text.data(), text.size());
  if (lua_pcall(L, 1, 1, 0) != 0) {
    lua_settop(L, 0);
    return false;
  }  // [tc, value]
  lua_getfield(L, -2, "json_encode");  // [tc, value, encode]
  lua_insert(L, -2);                   // [tc, encode, value]
  if (lua_pcall(L, 1, 1, 0) != 0) {
    // a decoded value always encodes (deep nesting is the one refusal)
    const char* msg = lua_tostring(L, -1);
    if (!msg || !strstr(msg, "nesting deeper")) __builtin_trap();
    lua_settop(L, 0);
    return false;
  }
  size_t n = 0;
  const char* s = lua_tolstring(L, -1, &n);
  out.assign(s, n);
  lua_settop(L, 0);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lua_State* L = state();
  std::string first, second;
  if (!round(L, std::string(reinterpret_cast<const char*>(data), size), first)) return 0;
  // encode(decode(x)) is a fixed point after one round (keys sorted, numbers shortest)
  if (!round(L, first, second) || first != second) __builtin_trap();
  return 0;
}
