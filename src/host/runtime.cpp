// The LuaJIT state: standard libraries, module searchers, the protected-call helper.
#include "host/runtime.hpp"

#include <cstring>
#include <string_view>

#include "host/bind.hpp"
#include "host/modules.hpp"
#include "host/torch_loader.hpp"

extern "C" const sky::EmbeddedModule sky_embedded_lua[];
extern "C" const unsigned long sky_embedded_lua_count;

namespace sky {

const EmbeddedModule* runtime_find_embedded(const char* name) {
  for (unsigned long i = 0; i < sky_embedded_lua_count; ++i)
    if (strcmp(sky_embedded_lua[i].name, name) == 0) return &sky_embedded_lua[i];
  return nullptr;
}

// package.loaders entry: modules compiled into the binary. Pushes a loader or a message.
static int search_embedded(lua_State* L) {
  const char* name = luaL_checkstring(L, 1);
  const EmbeddedModule* m = runtime_find_embedded(name);
  if (!m) {
    lua_pushfstring(L, "\n\tno module '%s' embedded in skyrun", name);
    return 1;
  }
  if (luaL_loadbuffer(L, m->source, m->size, m->chunkname) != 0) return lua_error(L);  // [loader]
  lua_pushstring(L, m->chunkname + 1);  // [loader, path]: the second value, as file searchers give
  return 2;
}

// package.loaders entry: LibTorch-backed native modules, named "skyrun.<x>", living in the
// embedded shared module that is loaded on the first such require.
static int search_torch_impl(lua_State* L) {
  const char* name = luaL_checkstring(L, 1);
  if (strncmp(name, "skyrun.", 7) != 0) {
    lua_pushfstring(L, "\n\tno LibTorch module '%s'", name);
    return 1;
  }
  std::string symbol = std::string("luaopen_") + name;
  for (char& c : symbol)
    if (c == '.') c = '_';
  std::string err;
  lua_CFunction open = torch_module_symbol(symbol.c_str(), err);
  if (!open) {
    lua_pushfstring(L, "\n\t%s", err.c_str());
    return 1;
  }
  lua_pushcfunction(L, open);
  return 1;
}

static void install_searchers(lua_State* L) {
  StackGuard guard(L);
  lua_getglobal(L, "package");        // [package]
  lua_getfield(L, -1, "loaders");     // [package, loaders]  (LuaJIT: 5.1 name)
  // Order: preload, embedded, LibTorch modules, then Lua and C paths.
  int n = static_cast<int>(lua_objlen(L, -1));
  for (int i = n; i >= 2; --i) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 2);
  }
  lua_pushcfunction(L, search_embedded);
  lua_rawseti(L, -2, 2);
  lua_pushcfunction(L, safe<search_torch_impl>);
  lua_rawseti(L, -2, 3);
  lua_pop(L, 1);                      // [package]
  lua_getfield(L, -1, "preload");     // [package, preload]
  for (const NativeModule& m : native_modules()) {
    lua_pushcfunction(L, m.open);
    lua_setfield(L, -2, m.name);
  }
  lua_pop(L, 2);
}

lua_State* runtime_new_state() {
  lua_State* L = luaL_newstate();
  if (!L) return nullptr;
  luaL_openlibs(L);
  install_searchers(L);
  return L;
}

void runtime_free_state(lua_State* L) {
  if (L) lua_close(L);
}

void runtime_add_script_dir(lua_State* L, const std::string& dir) {
  StackGuard guard(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");  // [package, path]
  std::string prefix = dir.empty() ? std::string("./") : dir + "/";
  std::string path = prefix + "?.lua;" + prefix + "?/init.lua;" + (lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
  lua_pop(L, 1);
  lua_pushlstring(L, path.data(), path.size());
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
}

std::string runtime_error_string(lua_State* L, int idx) {
  int t = lua_type(L, idx);
  if (t == LUA_TSTRING || t == LUA_TNUMBER) return lua_tostring(L, idx);
  if (luaL_callmeta(L, idx, "__tostring")) {  // [str]
    std::string s = lua_isstring(L, -1) ? lua_tostring(L, -1) : "(error object's __tostring returned no string)";
    lua_pop(L, 1);
    return s;
  }
  if (t == LUA_TNIL) return "nil";
  return std::string("(error object is a ") + luaL_typename(L, idx) + " value)";
}

// Message handler: message + traceback as one string. Errors that carry their own traceback
// (remote task errors) are tables with __tostring; they are rendered the same way.
static int traceback_handler(lua_State* L) {
  std::string msg = runtime_error_string(L, 1);
  luaL_traceback(L, L, msg.c_str(), 1);  // [err, tb]
  return 1;
}

bool runtime_pcall(lua_State* L, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs;  // the function's index
  lua_pushcfunction(L, traceback_handler);
  lua_insert(L, base);  // [handler, fn, args...]
  int status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  return status == 0;
}

static void interrupt_hook(lua_State* L, lua_Debug*) {
  lua_sethook(L, nullptr, 0, 0);
  luaL_error(L, "interrupted!");
}

void runtime_interrupt(lua_State* L) {
  lua_sethook(L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

bool runtime_interrupt_pending(lua_State* L) { return lua_gethook(L) == interrupt_hook; }

bool runtime_interrupt_take(lua_State* L) {
  if (!runtime_interrupt_pending(L)) return false;
  lua_sethook(L, nullptr, 0, 0);
  return true;
}

}  // namespace sky
