// The LuaJIT state skyrun runs: creation with the embedded modules, the module searchers,
// the one protected-call helper every host-to-Lua call goes through, and error rendering.
#pragma once

#include <lua.hpp>

#include <string>

namespace sky {

// A native module linked into the binary, offered through package.preload.
struct NativeModule {
  const char* name;
  lua_CFunction open;
};

// A Lua module compiled into the binary (generated from lua/ at build time).
struct EmbeddedModule {
  const char* name;       // "sky.plugins.torch"
  const char* chunkname;  // "@lua/sky/plugins/torch.lua"
  const char* source;
  unsigned long size;
};

// Opens a state with the standard libraries, the embedded Lua modules, the native modules and the
// searcher that loads LibTorch-backed modules ("skyrun.*") on first use. nullptr on out of memory.
lua_State* runtime_new_state();
void runtime_free_state(lua_State* L);

// Adds `<dir>/?.lua;<dir>/?/init.lua` in front of package.path (the script's own folder).
void runtime_add_script_dir(lua_State* L, const std::string& dir);

// Calls the function below nargs arguments with a traceback handler. On success leaves nresults
// values; on failure leaves one string "message\nstack traceback:..." and returns false.
// Pops the function and arguments either way.
bool runtime_pcall(lua_State* L, int nargs, int nresults);

// The message of the error value at idx as a string (tables with __tostring honoured).
std::string runtime_error_string(lua_State* L, int idx);

// Embedded module lookup (nullptr when absent).
const EmbeddedModule* runtime_find_embedded(const char* name);

// Called from a signal handler: makes the running Lua code raise "interrupted!" at its next hook.
void runtime_interrupt(lua_State* L);
// True between a runtime_interrupt and the error it raises: native code running a long operation
// (a download) polls it to stop early on Ctrl-C.
bool runtime_interrupt_pending(lua_State* L);
// Disarms a pending interrupt (true when one was pending): native code that already stopped
// because of it raises its own error, which must not be followed by another from the hook.
bool runtime_interrupt_take(lua_State* L);

}  // namespace sky
