// Lua values as JSON text, for files we write (configs, trainer_state.json, jsonl logs).
// Tables: one whose metatable has __jsontype="array", or whose keys are exactly 1..n (n > 0), is
// an array; others are objects with their keys sorted, so files are stable. NaN and infinities are
// written as Python's json writes them; lua_json_null() (a light userdata) is null.
#pragma once

#include <lua.hpp>

#include <string>

namespace sky {

void* lua_json_null();
// Errors (a cycle, a function, a key that is not a string or number) are Lua errors that start
// with `who`.
std::string lua_json_encode(lua_State* L, int idx, int indent = 0, const char* who = "json_encode");

}  // namespace sky
