// The native module "sky.fs": host/fs.hpp for Lua, in place of os.execute("mkdir -p ...") and
// io.popen("ls ..."). Writes raise (a failed write must never pass unnoticed); reads of what may
// be absent answer nil, err as io.open does.
//   fs.makedirs(path [, mode])            mkdir -p (mode: integer or octal string, default "777")
//   fs.remove_tree(path) -> removed       rm -rf, links removed and never followed
//   fs.listdir(path) -> {names} | nil, err    sorted, without "." and ".."
//   fs.stat(path) / fs.lstat(path) -> {kind=, size=, mtime=, mode=} | nil, err
//   fs.read(path [, {follow_links=}]) -> data | nil, err
//   fs.write_atomic(path, data [, mode])  temp file created with mode, fsync, rename (default "644")
#include <errno.h>

#include <string>

#include "host/bind.hpp"
#include "host/fs.hpp"
#include "host/modules.hpp"

namespace sky {
namespace {

// A mode is an integer (0x1a4, 420) or an octal string ("644", "0600"): Lua has no octal literals.
mode_t opt_mode(lua_State* L, int idx, mode_t def) {
  if (lua_isnoneornil(L, idx)) return def;
  int64_t m;
  if (lua_type(L, idx) == LUA_TSTRING) {
    std::string_view s = check_string_view(L, idx);
    m = 0;
    bool ok = !s.empty() && s.size() <= 5;
    for (char c : s) {
      ok = ok && c >= '0' && c <= '7';
      m = m * 8 + (c - '0');
    }
    if (!ok) raise_error(L, "bad mode '" + std::string(s) + "' (expected octal digits, e.g. \"0600\")");
  } else {
    m = check_int64(L, idx);
  }
  if (m < 0 || m > 07777) raise_error(L, "bad mode " + std::to_string(m) + " (expected 0 to 07777)");
  return static_cast<mode_t>(m);
}

std::string path_arg(lua_State* L, int idx) {
  std::string_view p = check_string_view(L, idx);
  if (p.find('\0') != std::string_view::npos) raise_error(L, "a path cannot contain a NUL byte");
  return std::string(p);
}

int push_fail(lua_State* L, const fs::FsError& e) {
  lua_pushnil(L);
  lua_pushstring(L, e.what());
  lua_pushinteger(L, e.code);
  return 3;
}

int fs_makedirs(lua_State* L) {
  fs::make_dirs(path_arg(L, 1), opt_mode(L, 2, 0777));
  return 0;
}

int fs_remove_tree(lua_State* L) {
  lua_pushboolean(L, fs::remove_tree(path_arg(L, 1)));
  return 1;
}

int fs_listdir(lua_State* L) {
  std::string path = path_arg(L, 1);
  try {
    std::vector<std::string> names = fs::list_dir(path);
    lua_createtable(L, static_cast<int>(names.size()), 0);  // [names]
    for (size_t i = 0; i < names.size(); ++i) {
      lua_pushlstring(L, names[i].data(), names[i].size());
      lua_rawseti(L, -2, static_cast<int>(i + 1));
    }
    return 1;
  } catch (const fs::FsError& e) {
    return push_fail(L, e);
  }
}

int push_stat(lua_State* L, bool follow) {
  std::string path = path_arg(L, 1);
  std::optional<fs::Stat> st;
  try {
    st = fs::stat(path, follow);
  } catch (const fs::FsError& e) {
    return push_fail(L, e);
  }
  if (!st) {
    lua_pushnil(L);
    lua_pushstring(L, ("'" + path + "' does not exist").c_str());
    lua_pushinteger(L, ENOENT);
    return 3;
  }
  lua_createtable(L, 0, 4);  // [st]
  lua_pushstring(L, fs::kind_name(st->kind));
  lua_setfield(L, -2, "kind");
  lua_pushnumber(L, static_cast<lua_Number>(st->size));
  lua_setfield(L, -2, "size");
  lua_pushnumber(L, st->mtime);
  lua_setfield(L, -2, "mtime");
  lua_pushinteger(L, static_cast<lua_Integer>(st->mode));
  lua_setfield(L, -2, "mode");
  return 1;
}

int fs_stat(lua_State* L) { return push_stat(L, true); }
int fs_lstat(lua_State* L) { return push_stat(L, false); }

int fs_read(lua_State* L) {
  std::string path = path_arg(L, 1);
  Options o(L, 2, "sky.fs.read", {{"follow_links", OptType::Boolean}});
  try {
    std::string data = fs::read_file(path, o.boolean("follow_links", true));
    lua_pushlstring(L, data.data(), data.size());
    return 1;
  } catch (const fs::FsError& e) {
    return push_fail(L, e);
  }
}

int fs_write_atomic(lua_State* L) {
  std::string path = path_arg(L, 1);
  std::string_view data = check_string_view(L, 2);
  fs::write_file_atomic(path, data, opt_mode(L, 3, 0644));
  return 0;
}

}  // namespace
}  // namespace sky

extern "C" int luaopen_sky_fs(lua_State* L) {
  static const luaL_Reg fns[] = {
      {"makedirs", sky::safe<sky::fs_makedirs>},
      {"remove_tree", sky::safe<sky::fs_remove_tree>},
      {"listdir", sky::safe<sky::fs_listdir>},
      {"stat", sky::safe<sky::fs_stat>},
      {"lstat", sky::safe<sky::fs_lstat>},
      {"read", sky::safe<sky::fs_read>},
      {"write_atomic", sky::safe<sky::fs_write_atomic>},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0, sizeof(fns) / sizeof(fns[0]) - 1);  // [M]
  luaL_register(L, nullptr, fns);
  return 1;
}

SKY_NATIVE_MODULE("sky.fs", luaopen_sky_fs);
