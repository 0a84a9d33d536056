// Value encoding (tagged, identity-tracked), frames and the handshake text of the worker protocol.
// The decoder treats its input as hostile: every read is bounds-checked, depth is limited, and
// code (bytecode, module loads, reducers) is only run when the caller allows it.
#include "wire/wire.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "host/bind.hpp"
#include "host/runtime.hpp"
#include "sky_config.h"

namespace sky::wire {
namespace {

enum Tag : uint8_t {
  TAG_NIL = 0,
  TAG_FALSE = 1,
  TAG_TRUE = 2,
  TAG_INT = 3,       // zigzag varint: a double with an exact integer value, not -0.0
  TAG_DOUBLE = 4,    // 8 bytes, the IEEE bits little-endian
  TAG_STRING = 5,    // varint length, bytes
  TAG_TABLE = 6,     // varint narr, narr values (t[1..narr]), key/value pairs, TAG_END, metatable
  TAG_REF = 7,       // varint id of an object sent before in this value
  TAG_FUNCTION = 8,  // string bytecode, u8 nups, environment (TAG_GLOBALS or a table), upvalues
  TAG_UPREF = 9,     // an upvalue shared with an earlier function: varint function id, varint n
  TAG_CFUNC = 10,    // string module, string field
  TAG_MODULE = 11,   // string name, u8 has_source, [string chunkname, string source]
  TAG_INT64 = 12,    // 8 bytes
  TAG_UINT64 = 13,   // 8 bytes
  TAG_USERDATA = 14, // string metatable name, string payload (a registered C++ codec)
  TAG_REDUCE = 15,   // function value, argument table; the receiver calls function(args...)
  TAG_GLOBALS = 16,  // the receiving side's globals (a function's environment)
  TAG_END = 17,
  TAG_GLOBALS_WITH = 18,  // globals plus the ones the function reads: varint n, n x (string name, value)
};

// Registry keys (addresses of these statics).
char kReducersKey;
char kInt64HelperKey;
char kGlobalsHelperKey;

std::mutex& codecs_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, UserdataCodec>& codecs() {
  static std::map<std::string, UserdataCodec> c;
  return c;
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_u64(std::string& out, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out.append(b, 8);
}

void put_string(std::string& out, std::string_view s) {
  put_varint(out, s.size());
  out.append(s.data(), s.size());
}

// The longest prefix of s of at most n bytes that does not cut a UTF-8 character.
size_t utf8_prefix_length(std::string_view s, size_t n) {
  if (n >= s.size()) return s.size();
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) --n;  // s[n] continues a character
  return n;
}

bool is_identifier(std::string_view s) {
  if (s.empty() || s.size() > 60) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (!(isalpha(c) || c == '_' || (i > 0 && isdigit(c)))) return false;
  }
  return true;
}

// Pushes the ffi helper that makes an int64/uint64 cdata from two 32-bit halves. Pushes 1.
void push_int64_helper(lua_State* L) {
  lua_pushlightuserdata(L, &kInt64HelperKey);
  lua_rawget(L, LUA_REGISTRYINDEX);  // [helper|nil]
  if (!lua_isnil(L, -1)) return;
  lua_pop(L, 1);
  static const char kSrc[] =
      "local ffi = require 'ffi'\n"
      "local i64, u64 = ffi.typeof('int64_t'), ffi.typeof('uint64_t')\n"
      "return function(hi, lo, unsigned)\n"
      "  if unsigned then return u64(hi) * 4294967296ULL + lo end\n"
      "  return i64(hi) * 4294967296LL + lo\n"
      "end\n";
  if (luaL_loadbuffer(L, kSrc, sizeof kSrc - 1, "=wire.int64") != 0 || lua_pcall(L, 0, 1, 0) != 0) {
    std::string msg = lua_tostring(L, -1) ? lua_tostring(L, -1) : "?";
    lua_pop(L, 1);
    throw WireError("cannot make 64-bit integers here: " + msg);
  }
  lua_pushlightuserdata(L, &kInt64HelperKey);
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);  // [helper]
}

// Pushes the helper that lists the globals a Lua function (and the functions nested in it) reads:
// the string constants of its GGET instructions, found with jit.util (cached per closure).
// Pushes 1: the helper, or false when this LuaJIT has no jit.util.
void push_globals_helper(lua_State* L) {
  lua_pushlightuserdata(L, &kGlobalsHelperKey);
  lua_rawget(L, LUA_REGISTRYINDEX);  // [helper|false|nil]
  if (!lua_isnil(L, -1)) return;
  lua_pop(L, 1);
  static const char kSrc[] =
      "local ok, ju = pcall(require, 'jit.util')\n"
      "if not ok then return false end\n"
      "local band, rshift = bit.band, bit.rshift\n"
      "local probe = loadstring('return sky_wire_probe_global')\n"
      "local GGET = band(ju.funcbc(probe, 1), 0xff)\n"
      "if ju.funck(probe, -rshift(ju.funcbc(probe, 1), 16) - 1) ~= 'sky_wire_probe_global' then return false end\n"
      "local cache = setmetatable({}, { __mode = 'k' })\n"
      "local function scan(f, names, seen)\n"
      "  if seen[f] then return end\n"
      "  seen[f] = true\n"
      "  local info = ju.funcinfo(f)\n"
      "  if not info.bytecodes then return end\n"
      "  for pc = 1, info.bytecodes do\n"
      "    local ins = ju.funcbc(f, pc)\n"
      "    if ins and band(ins, 0xff) == GGET then\n"
      "      local k = ju.funck(f, -rshift(ins, 16) - 1)\n"
      "      if type(k) == 'string' and not names[k] then names[k] = true names[#names + 1] = k end\n"
      "    end\n"
      "  end\n"
      "  if info.children then\n"
      "    for i = 1, info.gcconsts or 0 do\n"
      "      local k = ju.funck(f, -i)\n"
      "      if type(k) == 'proto' then scan(k, names, seen) end\n"
      "    end\n"
      "  end\n"
      "end\n"
      "return function(f)\n"
      "  local names = cache[f]\n"
      "  if not names then names = {} scan(f, names, {}) cache[f] = names end\n"
      "  return names\n"
      "end\n";
  if (luaL_loadbuffer(L, kSrc, sizeof kSrc - 1, "=wire.globals") != 0 || lua_pcall(L, 0, 1, 0) != 0) {
    lua_pop(L, 1);
    lua_pushboolean(L, 0);
  }
  lua_pushlightuserdata(L, &kGlobalsHelperKey);
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);  // [helper|false]
}

bool is_std_module(std::string_view n) {
  static const char* names[] = {"_G", "string", "table", "math", "io", "os", "debug", "coroutine",
                                "package", "jit", "bit", "ffi", "jit.opt", "jit.util", "jit.profile",
                                "table.new", "table.clear", "string.buffer"};
  for (const char* s : names)
    if (n == s) return true;
  return false;
}

// ---- encoder --------------------------------------------------------------------------------------

class Encoder {
 public:
  Encoder(lua_State* L, std::string& out, const EncodeOptions& opts) : L_(L), out_(out), opts_(opts) {}

  void value(int idx, int depth);

 private:
  // Throws "cannot send <root> → <path>: <what>". A long path (a deep table) keeps its first and
  // last steps around a count of the ones left out, so the message stays short and whole.
  [[noreturn]] void refuse(const std::string& what) {
    constexpr size_t kEnds = 6;
    std::vector<std::string> steps;
    if (!opts_.root.empty()) steps.push_back(opts_.root);
    for (size_t i = 0; i < path_.size(); ++i) {
      if (path_.size() > 2 * kEnds && i == kEnds) {
        steps.push_back("\xe2\x80\xa6 " + std::to_string(path_.size() - 2 * kEnds) + " more \xe2\x80\xa6");  // …
        i = path_.size() - kEnds - 1;
        continue;
      }
      steps.push_back(path_[i]);
    }
    std::string msg = "cannot send ";
    for (size_t i = 0; i < steps.size(); ++i) {
      if (i > 0) msg += " \xe2\x86\x92 ";  // →
      msg += steps[i];
    }
    msg += ": " + what;
    throw WireError(msg);
  }
  [[noreturn]] void refuse_code(const std::string& what) {
    refuse(what + " (only data may travel here: no functions, modules or userdata)");
  }

  // The value at idx travels by name when it is a loaded module.
  bool try_module(int idx);
  void encode_number(double d);
  void encode_table(int idx, int depth);
  void encode_function(int idx, int depth);
  void encode_read_globals(int idx, int depth);
  void encode_userdata(int idx, int depth);
  void encode_cdata(int idx);
  std::string userdata_description(int idx);
  bool assign_id(const void* p);  // false (and a TAG_REF written) when already sent

  lua_State* L_;
  std::string& out_;
  const EncodeOptions& opts_;
  std::vector<std::string> path_;
  std::unordered_map<const void*, uint32_t> ids_;
  uint32_t next_id_ = 0;
  std::unordered_map<const void*, std::pair<uint32_t, int>> upvalues_;  // upvalue id -> (function id, n)
  bool index_built_ = false;
  bool have_index_ = false;
  std::unordered_set<std::string> globals_sent_;  // globals already carried by an earlier function
};

bool Encoder::assign_id(const void* p) {
  auto it = ids_.find(p);
  if (it != ids_.end()) {
    out_.push_back(TAG_REF);
    put_varint(out_, it->second);
    return false;
  }
  ids_.emplace(p, next_id_++);
  return true;
}

// The C functions of loaded modules, by address: kept per state in the registry (scanning every
// module's fields costs tens of microseconds) and rebuilt when a C function is not found in it.
struct CfuncIndex {
  std::unordered_map<const void*, std::pair<std::string, std::string>> map;
};
char kCfuncIndexKey;

int cfunc_index_gc(lua_State* L) {
  static_cast<CfuncIndex*>(lua_touserdata(L, 1))->~CfuncIndex();
  return 0;
}

CfuncIndex& cfunc_index(lua_State* L, bool rebuild) {
  StackGuard guard(L);
  lua_pushlightuserdata(L, &kCfuncIndexKey);
  lua_rawget(L, LUA_REGISTRYINDEX);  // [idx|nil]
  CfuncIndex* idx = static_cast<CfuncIndex*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  if (idx && !rebuild) return *idx;
  if (!idx) {
    idx = new (lua_newuserdata(L, sizeof(CfuncIndex))) CfuncIndex();  // [ud]
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, cfunc_index_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushlightuserdata(L, &kCfuncIndexKey);
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);  // []
  }
  idx->map.clear();
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return *idx;
  }
  lua_getfield(L, -1, "loaded");  // [package, loaded]
  if (!lua_istable(L, -1)) {
    lua_pop(L, 2);
    return *idx;
  }
  for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {  // [package, loaded, name, mod]
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE) continue;
    std::string name = lua_tostring(L, -2);
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {  // [..., mod, field, v]
      if (lua_type(L, -2) != LUA_TSTRING || !lua_iscfunction(L, -1)) continue;
      const void* f = lua_topointer(L, -1);
      auto ct = idx->map.find(f);
      // Prefer the shortest module name that is not _G ("string.format", not "_G.string").
      if (ct == idx->map.end() || (ct->second.first == "_G" && name != "_G") ||
          (name != "_G" && ct->second.first.size() > name.size()))
        idx->map[f] = {name, lua_tostring(L, -2)};
    }
  }
  lua_pop(L, 2);
  return *idx;
}

// Pushes the reverse index of package.loaded (a weak-keyed table: module value -> name), cached
// in the registry and rebuilt when the number of loaded modules changed. Pushes 1 (nil when there
// is no package.loaded).
char kModIndexKey;
void push_module_index(lua_State* L) {
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) return;  // [nil-ish]
  lua_getfield(L, -1, "loaded");    // [package, loaded]
  lua_remove(L, -2);                // [loaded]
  if (!lua_istable(L, -1)) return;
  int count = 0;
  for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) ++count;
  lua_pushlightuserdata(L, &kModIndexKey);
  lua_rawget(L, LUA_REGISTRYINDEX);  // [loaded, cache|nil]
  if (lua_istable(L, -1)) {
    lua_rawgeti(L, -1, 1);  // [loaded, cache, count]
    bool fresh = lua_tointeger(L, -1) == count;
    lua_pop(L, 1);
    if (fresh) {
      lua_rawgeti(L, -1, 2);  // [loaded, cache, index]
      lua_replace(L, -3);
      lua_pop(L, 1);
      return;
    }
  }
  lua_pop(L, 1);                      // [loaded]
  lua_createtable(L, 2, 0);           // [loaded, cache]
  lua_pushinteger(L, count);
  lua_rawseti(L, -2, 1);
  lua_createtable(L, 0, count);       // [loaded, cache, index]
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  for (lua_pushnil(L); lua_next(L, -4); lua_pop(L, 1)) {  // [loaded, cache, index, name, mod]
    int t = lua_type(L, -1);
    if (lua_type(L, -2) != LUA_TSTRING || (t != LUA_TTABLE && t != LUA_TFUNCTION)) continue;
    lua_pushvalue(L, -1);
    lua_rawget(L, -4);  // [..., name, mod, old]
    bool better = lua_isnil(L, -1) || lua_objlen(L, -1) > lua_objlen(L, -3);
    lua_pop(L, 1);
    if (!better) continue;
    lua_pushvalue(L, -1);  // [..., name, mod, mod]
    lua_pushvalue(L, -3);  // [..., name, mod, mod, name]
    lua_rawset(L, -5);
  }
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, 2);  // cache[2] = index
  lua_pushlightuserdata(L, &kModIndexKey);
  lua_pushvalue(L, -3);
  lua_rawset(L, LUA_REGISTRYINDEX);  // [loaded, cache, index]
  lua_replace(L, -3);
  lua_pop(L, 1);  // [index]
}

bool Encoder::try_module(int idx) {
  if (!opts_.modules_by_name) return false;
  if (!index_built_) {
    index_built_ = true;
    push_module_index(L_);  // [index]
    have_index_ = lua_istable(L_, -1);
    lua_pop(L_, 1);
  }
  if (!have_index_) return false;
  std::string name;
  {
    StackGuard guard(L_);
    lua_pushlightuserdata(L_, &kModIndexKey);
    lua_rawget(L_, LUA_REGISTRYINDEX);  // [cache]
    lua_rawgeti(L_, -1, 2);             // [cache, index]
    lua_pushvalue(L_, idx);
    lua_rawget(L_, -2);                 // [cache, index, name|nil]
    if (lua_type(L_, -1) == LUA_TSTRING) name = lua_tostring(L_, -1);
    lua_pop(L_, 3);
  }
  if (name.empty()) return false;
  if (!opts_.allow_code) refuse_code("loaded module '" + name + "'");
  {
    // Still that module? (a replaced package.loaded entry leaves a stale name behind)
    StackGuard guard(L_);
    lua_getglobal(L_, "package");
    lua_getfield(L_, -1, "loaded");
    lua_getfield(L_, -1, name.c_str());
    bool same = lua_rawequal(L_, -1, idx);
    lua_pop(L_, 3);
    if (!same) return false;
  }
  out_.push_back(TAG_MODULE);
  put_string(out_, name);
  // A module loaded from a file (not embedded, not native, not a standard library) carries its
  // source once per connection, for a worker whose package.path cannot find it.
  std::string chunk, source;
  bool sent_before = opts_.modules_sent && opts_.modules_sent->count(name);
  if (!sent_before && !is_std_module(name) && !runtime_find_embedded(name.c_str())) {
    StackGuard guard(L_);
    lua_getglobal(L_, "package");                // [package]
    lua_getfield(L_, -1, "searchpath");          // [package, searchpath]
    if (lua_isfunction(L_, -1)) {
      lua_pushlstring(L_, name.data(), name.size());
      lua_getfield(L_, -3, "path");              // [package, searchpath, name, path]
      if (lua_pcall(L_, 2, 1, 0) == 0 && lua_type(L_, -1) == LUA_TSTRING) {
        std::string file = lua_tostring(L_, -1);
        std::ifstream in(file, std::ios::binary);
        if (in) {
          std::ostringstream ss;
          ss << in.rdbuf();
          source = ss.str();
          chunk = "@" + file;
        }
      }
      lua_pop(L_, 1);                            // [package]
    } else {
      lua_pop(L_, 1);
    }
    lua_pop(L_, 1);
  }
  if (!chunk.empty()) {
    out_.push_back(1);
    put_string(out_, chunk);
    put_string(out_, source);
    if (opts_.modules_sent) opts_.modules_sent->insert(name);
  } else {
    out_.push_back(0);
  }
  return true;
}

void Encoder::encode_number(double d) {
  if (std::isfinite(d) && std::fabs(d) < 9007199254740992.0 && d == std::floor(d) && !(d == 0 && std::signbit(d))) {
    int64_t i = static_cast<int64_t>(d);
    out_.push_back(TAG_INT);
    put_varint(out_, (static_cast<uint64_t>(i) << 1) ^ static_cast<uint64_t>(i >> 63));
    return;
  }
  uint64_t bits;
  memcpy(&bits, &d, 8);
  out_.push_back(TAG_DOUBLE);
  put_u64(out_, bits);
}

void Encoder::value(int idx, int depth) {
  if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L_) + idx + 1;
  if (depth > 200) refuse("nested deeper than 200 levels");
  if (!lua_checkstack(L_, 8)) refuse("out of Lua stack space");
  switch (lua_type(L_, idx)) {
    case LUA_TNIL: out_.push_back(TAG_NIL); return;
    case LUA_TBOOLEAN: out_.push_back(lua_toboolean(L_, idx) ? TAG_TRUE : TAG_FALSE); return;
    case LUA_TNUMBER: encode_number(lua_tonumber(L_, idx)); return;
    case LUA_TSTRING: {
      size_t n = 0;
      const char* s = lua_tolstring(L_, idx, &n);
      out_.push_back(TAG_STRING);
      put_string(out_, std::string_view(s, n));
      return;
    }
    case LUA_TTABLE: encode_table(idx, depth); return;
    case LUA_TFUNCTION: encode_function(idx, depth); return;
    case LUA_TUSERDATA: encode_userdata(idx, depth); return;
    case LUA_TLIGHTUSERDATA: refuse("light userdata (a raw pointer)");
    case LUA_TTHREAD: refuse("coroutine");
    case 10 /* LUA_TCDATA */: encode_cdata(idx); return;
    default: refuse(std::string("value of type ") + luaL_typename(L_, idx));
  }
}

void Encoder::encode_table(int idx, int depth) {
  idx = idx < 0 ? lua_gettop(L_) + idx + 1 : idx;
  if (try_module(idx)) return;
  if (!assign_id(lua_topointer(L_, idx))) return;
  out_.push_back(TAG_TABLE);
  int narr = 0;
  for (;;) {
    lua_rawgeti(L_, idx, narr + 1);
    bool present = !lua_isnil(L_, -1);
    lua_pop(L_, 1);
    if (!present) break;
    ++narr;
  }
  put_varint(out_, static_cast<uint64_t>(narr));
  for (int i = 1; i <= narr; ++i) {
    lua_rawgeti(L_, idx, i);  // [v]
    path_.push_back("[" + std::to_string(i) + "]");
    value(-1, depth + 1);
    path_.pop_back();
    lua_pop(L_, 1);
  }
  for (lua_pushnil(L_); lua_next(L_, idx); lua_pop(L_, 1)) {  // [k, v]
    if (lua_type(L_, -2) == LUA_TNUMBER) {
      double k = lua_tonumber(L_, -2);
      if (k >= 1 && k <= narr && k == std::floor(k)) continue;
    }
    std::string label;
    if (lua_type(L_, -2) == LUA_TSTRING) {
      size_t n = 0;
      const char* s = lua_tolstring(L_, -2, &n);
      std::string_view k(s, n);
      label = is_identifier(k) ? "field '" + std::string(k) + "'"
                               : "[\"" + std::string(k.substr(0, utf8_prefix_length(k, 40))) + "\"]";
    } else if (lua_type(L_, -2) == LUA_TNUMBER) {
      char b[64];
      snprintf(b, sizeof b, "[%.17g]", lua_tonumber(L_, -2));
      label = b;
    } else {
      label = std::string("[") + luaL_typename(L_, -2) + " key]";
    }
    path_.push_back("key " + label);
    value(-2, depth + 1);
    path_.back() = label;
    value(-1, depth + 1);
    path_.pop_back();
  }
  out_.push_back(TAG_END);
  if (lua_getmetatable(L_, idx)) {  // [mt]
    path_.push_back("metatable");
    value(-1, depth + 1);
    path_.pop_back();
    lua_pop(L_, 1);
  } else {
    out_.push_back(TAG_NIL);
  }
}

// lua_dump writer: appends to a std::string.
int dump_writer(lua_State*, const void* p, size_t sz, void* ud) {
  static_cast<std::string*>(ud)->append(static_cast<const char*>(p), sz);
  return 0;
}

// The environment of a function whose environment is the globals: TAG_GLOBALS, or
// TAG_GLOBALS_WITH and the globals it reads that the receiver would not have: values of the
// sender's own making (its script's global functions and tables), not C functions and not loaded
// modules (those exist there already).
void Encoder::encode_read_globals(int idx, int depth) {
  std::vector<std::string> names;
  {
    StackGuard guard(L_);
    push_globals_helper(L_);  // [helper|false]
    if (lua_isfunction(L_, -1)) {
      lua_pushvalue(L_, idx);
      if (lua_pcall(L_, 1, 1, 0) == 0 && lua_istable(L_, -1)) {  // [names]
        int n = static_cast<int>(lua_objlen(L_, -1));
        for (int i = 1; i <= n; ++i) {
          lua_rawgeti(L_, -1, i);
          if (lua_type(L_, -1) == LUA_TSTRING) names.emplace_back(lua_tostring(L_, -1));
          lua_pop(L_, 1);
        }
      }
    }
    lua_pop(L_, 1);
  }
  std::vector<std::string> capture;
  for (const std::string& name : names) {
    if (name == "_G" || globals_sent_.count(name)) continue;
    StackGuard guard(L_);
    lua_getfield(L_, LUA_GLOBALSINDEX, name.c_str());  // [v]
    int t = lua_type(L_, -1);
    bool keep = t != LUA_TNIL && !lua_iscfunction(L_, -1);
    if (keep && (t == LUA_TTABLE || t == LUA_TFUNCTION)) {
      lua_getglobal(L_, "package");
      if (lua_istable(L_, -1)) {
        lua_getfield(L_, -1, "loaded");  // [v, package, loaded]
        if (lua_istable(L_, -1)) {
          lua_getfield(L_, -1, name.c_str());
          if (lua_rawequal(L_, -1, -4)) keep = false;  // a module under its own name
          lua_pop(L_, 1);
        }
        lua_pop(L_, 1);
      }
      lua_pop(L_, 1);
    }
    lua_pop(L_, 1);
    if (keep) capture.push_back(name);
  }
  if (capture.empty()) {
    out_.push_back(TAG_GLOBALS);
    return;
  }
  out_.push_back(TAG_GLOBALS_WITH);
  put_varint(out_, capture.size());
  for (const std::string& name : capture) globals_sent_.insert(name);
  for (const std::string& name : capture) {
    put_string(out_, name);
    lua_getfield(L_, LUA_GLOBALSINDEX, name.c_str());  // [v]
    path_.push_back("global '" + name + "'");
    value(-1, depth + 1);
    path_.pop_back();
    lua_pop(L_, 1);
  }
}

void Encoder::encode_function(int idx, int depth) {
  idx = idx < 0 ? lua_gettop(L_) + idx + 1 : idx;
  if (lua_iscfunction(L_, idx)) {
    if (!opts_.allow_code) refuse_code("C function");
    const void* f = lua_topointer(L_, idx);
    CfuncIndex* ci = &cfunc_index(L_, false);
    auto it = ci->map.find(f);
    if (it == ci->map.end()) {
      ci = &cfunc_index(L_, true);
      it = ci->map.find(f);
    }
    if (it == ci->map.end()) refuse("C function (not a field of any loaded module)");
    out_.push_back(TAG_CFUNC);
    put_string(out_, it->second.first);
    put_string(out_, it->second.second);
    return;
  }
  if (try_module(idx)) return;  // (refused, naming the module, when only data may travel)
  if (!opts_.allow_code) refuse_code("function");
  const void* p = lua_topointer(L_, idx);
  if (ids_.count(p)) {
    assign_id(p);
    return;
  }
  uint32_t fid = next_id_;
  assign_id(p);
  std::string bc;
  lua_pushvalue(L_, idx);  // [f]
  int rc = lua_dump(L_, dump_writer, &bc);
  lua_pop(L_, 1);
  if (rc != 0 || bc.empty()) refuse("function whose bytecode cannot be dumped");
  out_.push_back(TAG_FUNCTION);
  put_string(out_, bc);
  int nups = 0;
  while (lua_getupvalue(L_, idx, nups + 1)) {
    lua_pop(L_, 1);
    ++nups;
  }
  if (nups > 255) refuse("function with more than 255 upvalues");
  out_.push_back(static_cast<char>(nups));
  lua_getfenv(L_, idx);  // [env]
  if (lua_rawequal(L_, -1, LUA_GLOBALSINDEX)) {
    encode_read_globals(idx, depth);
  } else {
    path_.push_back("environment");
    value(-1, depth + 1);
    path_.pop_back();
  }
  lua_pop(L_, 1);
  for (int n = 1; n <= nups; ++n) {
    const char* name = lua_getupvalue(L_, idx, n);  // [v]
    const void* uid = lua_upvalueid(L_, idx, n);
    auto it = upvalues_.find(uid);
    if (it != upvalues_.end()) {
      out_.push_back(TAG_UPREF);
      put_varint(out_, it->second.first);
      put_varint(out_, static_cast<uint64_t>(it->second.second));
    } else {
      upvalues_.emplace(uid, std::make_pair(fid, n));
      path_.push_back(std::string("upvalue '") + (name && *name ? name : "?") + "'");
      value(-1, depth + 1);
      path_.pop_back();
    }
    lua_pop(L_, 1);
  }
}

std::string Encoder::userdata_description(int idx) {
  StackGuard guard(L_);
  if (!lua_getmetatable(L_, idx)) return "userdata (no metatable, no serializer)";
  std::string name;
  lua_getfield(L_, -1, "__name");  // [mt, name]
  if (lua_type(L_, -1) == LUA_TSTRING) name = lua_tostring(L_, -1);
  lua_pop(L_, 1);
  if (name.empty()) {
    for (lua_pushnil(L_); lua_next(L_, LUA_REGISTRYINDEX); lua_pop(L_, 1)) {  // [mt, k, v]
      if (lua_type(L_, -2) == LUA_TSTRING && lua_rawequal(L_, -1, -3)) {
        name = lua_tostring(L_, -2);
        lua_pop(L_, 2);
        break;
      }
    }
  }
  lua_pop(L_, 1);
  if (name == "FILE*") return "userdata (FILE*: open file)";
  if (name.empty()) return "userdata (no serializer registered)";
  return "userdata (" + name + ", no serializer registered)";
}

void Encoder::encode_userdata(int idx, int depth) {
  idx = idx < 0 ? lua_gettop(L_) + idx + 1 : idx;
  if (!lua_getmetatable(L_, idx)) refuse(userdata_description(idx));  // [mt]
  int mt = lua_gettop(L_);
  // C++ codecs first.
  std::vector<std::pair<std::string, UserdataCodec>> list;
  {
    std::lock_guard<std::mutex> lock(codecs_mutex());
    for (auto& kv : codecs()) list.push_back(kv);
  }
  for (auto& [name, codec] : list) {
    luaL_getmetatable(L_, name.c_str());  // [mt, named]
    bool same = lua_rawequal(L_, -1, mt);
    lua_pop(L_, 1);
    if (!same) continue;
    lua_pop(L_, 1);  // []
    if (!opts_.allow_code && !codec.untrusted_ok)
      refuse_code("userdata (" + (codec.description.empty() ? name : codec.description) + ")");
    const void* p = lua_topointer(L_, idx);
    if (!assign_id(p)) return;
    std::string payload;
    try {
      payload = codec.encode(L_, idx);
    } catch (const WireError& e) {
      refuse(std::string("userdata (") + (codec.description.empty() ? name : codec.description) + "): " + e.what());
    }
    out_.push_back(TAG_USERDATA);
    put_string(out_, name);
    put_string(out_, payload);
    return;
  }
  // Lua reducers registered by metatable name.
  lua_pushlightuserdata(L_, &kReducersKey);
  lua_rawget(L_, LUA_REGISTRYINDEX);  // [mt, reducers|nil]
  if (lua_istable(L_, -1)) {
    for (lua_pushnil(L_); lua_next(L_, -2); lua_pop(L_, 1)) {  // [mt, reducers, name, fn]
      if (lua_type(L_, -2) != LUA_TSTRING) continue;
      luaL_getmetatable(L_, lua_tostring(L_, -2));  // [mt, reducers, name, fn, named]
      bool same = lua_rawequal(L_, -1, mt);
      lua_pop(L_, 1);
      if (!same) continue;
      std::string name = lua_tostring(L_, -2);
      if (!opts_.allow_code) {
        lua_settop(L_, mt - 1);
        refuse_code("userdata (" + name + ", sent through a reducer)");
      }
      const void* p = lua_topointer(L_, idx);
      if (!assign_id(p)) {
        lua_pop(L_, 4);
        return;
      }
      int base = lua_gettop(L_);  // fn on top
      lua_pushvalue(L_, -1);      // [..., fn, fn]
      lua_pushvalue(L_, idx);     // [..., fn, fn, u]
      if (lua_pcall(L_, 1, LUA_MULTRET, 0) != 0) {
        std::string msg = runtime_error_string(L_, -1);
        lua_settop(L_, mt - 1);
        refuse("userdata (" + name + "): its reducer failed: " + msg);
      }
      int nres = lua_gettop(L_) - base;  // [..., fn, rf, args...]
      if (nres < 1 || !lua_isfunction(L_, base + 1)) {
        lua_settop(L_, mt - 1);
        refuse("userdata (" + name + "): its reducer must return a function and its arguments");
      }
      out_.push_back(TAG_REDUCE);
      path_.push_back("reducer of userdata (" + name + ")");
      value(base + 1, depth + 1);
      lua_createtable(L_, nres - 1, 1);  // [..., rf, args..., t]
      for (int i = 2; i <= nres; ++i) {
        lua_pushvalue(L_, base + i);
        lua_rawseti(L_, -2, i - 1);
      }
      lua_pushinteger(L_, nres - 1);
      lua_setfield(L_, -2, "n");
      value(-1, depth + 1);
      path_.pop_back();
      lua_settop(L_, mt - 1);
      return;
    }
  }
  lua_settop(L_, mt - 1);
  refuse(userdata_description(idx));
}

void Encoder::encode_cdata(int idx) {
  lua_getglobal(L_, "tostring");
  lua_pushvalue(L_, idx);
  lua_call(L_, 1, 1);  // [str]
  std::string s = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "";
  lua_pop(L_, 1);
  auto ends_with = [&](const char* suf) {
    size_t n = strlen(suf);
    return s.size() > n && s.compare(s.size() - n, n, suf) == 0;
  };
  if (ends_with("ULL")) {
    out_.push_back(TAG_UINT64);
    put_u64(out_, strtoull(s.c_str(), nullptr, 10));
    return;
  }
  if (ends_with("LL")) {
    out_.push_back(TAG_INT64);
    put_u64(out_, static_cast<uint64_t>(strtoll(s.c_str(), nullptr, 10)));
    return;
  }
  size_t colon = s.find(':');
  refuse("cdata (" + s.substr(0, colon) + ")");
}

// ---- decoder --------------------------------------------------------------------------------------

class Decoder {
 public:
  Decoder(lua_State* L, std::string_view in, const DecodeOptions& opts, int refs)
      : L_(L), p_(in.data()), end_(in.data() + in.size()), opts_(opts), refs_(refs) {}

  void value(int depth);  // pushes 1
  bool at_end() const { return p_ == end_; }

 private:
  [[noreturn]] void bad(const std::string& what) { throw WireError("malformed value: " + what); }
  uint8_t byte() {
    if (p_ >= end_) bad("truncated");
    return static_cast<uint8_t>(*p_++);
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = byte();
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        if (shift == 63 && b > 1) bad("varint overflow");
        return v;
      }
    }
    bad("varint too long");
  }
  uint64_t u64() {
    if (end_ - p_ < 8) bad("truncated");
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p_[i])) << (8 * i);
    p_ += 8;
    return v;
  }
  std::string_view string() {
    uint64_t n = varint();
    if (n > static_cast<uint64_t>(end_ - p_)) bad("truncated string");
    std::string_view s(p_, n);
    p_ += n;
    return s;
  }
  uint32_t new_ref() {  // reserves an id; the caller stores the object with set_ref
    return next_id_++;
  }
  void set_ref(uint32_t id, int idx) {
    lua_pushvalue(L_, idx);
    lua_rawseti(L_, refs_, static_cast<int>(id) + 1);
  }
  void push_ref(uint64_t id) {
    if (id >= next_id_) bad("reference to an object not sent yet");
    lua_rawgeti(L_, refs_, static_cast<int>(id) + 1);
    if (lua_isnil(L_, -1)) bad("reference to an object still being rebuilt");
  }
  void need_code(const char* what) {
    if (!opts_.allow_code) throw WireError(std::string("refused to decode ") + what + " from untrusted bytes");
  }
  void table(int depth);
  void function(int depth);
  void module();
  void cfunction();
  void int64(bool unsigned_);
  void userdata();
  void reduce(int depth);

  lua_State* L_;
  const char* p_;
  const char* end_;
  const DecodeOptions& opts_;
  int refs_;
  uint32_t next_id_ = 0;
};

void Decoder::value(int depth) {
  if (depth > opts_.max_depth) bad("nested deeper than " + std::to_string(opts_.max_depth) + " levels");
  if (!lua_checkstack(L_, 8)) bad("out of Lua stack space");
  uint8_t tag = byte();
  switch (tag) {
    case TAG_NIL: lua_pushnil(L_); return;
    case TAG_FALSE: lua_pushboolean(L_, 0); return;
    case TAG_TRUE: lua_pushboolean(L_, 1); return;
    case TAG_INT: {
      uint64_t z = varint();
      int64_t i = static_cast<int64_t>(z >> 1) ^ -static_cast<int64_t>(z & 1);
      lua_pushnumber(L_, static_cast<double>(i));
      return;
    }
    case TAG_DOUBLE: {
      uint64_t bits = u64();
      double d;
      memcpy(&d, &bits, 8);
      lua_pushnumber(L_, d);
      return;
    }
    case TAG_STRING: {
      std::string_view s = string();
      lua_pushlstring(L_, s.data(), s.size());
      return;
    }
    case TAG_TABLE: table(depth); return;
    case TAG_REF: push_ref(varint()); return;
    case TAG_FUNCTION: function(depth); return;
    case TAG_CFUNC: cfunction(); return;
    case TAG_MODULE: module(); return;
    case TAG_INT64: int64(false); return;
    case TAG_UINT64: int64(true); return;
    case TAG_USERDATA: userdata(); return;
    case TAG_REDUCE: reduce(depth); return;
    default: bad("unknown tag " + std::to_string(tag));
  }
}

void Decoder::table(int depth) {
  uint64_t narr = varint();
  if (narr > static_cast<uint64_t>(end_ - p_)) bad("array longer than the input");
  lua_createtable(L_, static_cast<int>(narr), 0);  // [t]
  int t = lua_gettop(L_);
  set_ref(new_ref(), t);
  for (uint64_t i = 1; i <= narr; ++i) {
    value(depth + 1);
    lua_rawseti(L_, t, static_cast<int>(i));
  }
  for (;;) {
    if (p_ >= end_) bad("truncated table");
    if (static_cast<uint8_t>(*p_) == TAG_END) {
      ++p_;
      break;
    }
    value(depth + 1);  // [t, k]
    if (lua_isnil(L_, -1)) bad("table key is nil");
    if (lua_type(L_, -1) == LUA_TNUMBER && lua_tonumber(L_, -1) != lua_tonumber(L_, -1)) bad("table key is NaN");
    value(depth + 1);  // [t, k, v]
    lua_rawset(L_, t);
  }
  value(depth + 1);  // [t, mt]
  if (lua_istable(L_, -1)) {
    lua_setmetatable(L_, t);
  } else if (lua_isnil(L_, -1)) {
    lua_pop(L_, 1);
  } else {
    bad("metatable is not a table");
  }
}

void Decoder::function(int depth) {
  std::string_view bc = string();
  need_code("a function");
  if (bc.size() < 4 || bc[0] != '\x1b' || bc[1] != 'L' || bc[2] != 'J') bad("function is not LuaJIT bytecode");
  if (luaL_loadbuffer(L_, bc.data(), bc.size(), "=(wire)") != 0) {  // [f] or [msg]
    std::string msg = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "?";
    lua_pop(L_, 1);
    bad("function bytecode does not load: " + msg);
  }
  int f = lua_gettop(L_);
  set_ref(new_ref(), f);
  uint32_t fid = next_id_ - 1;
  (void)fid;
  int nups = byte();
  int have = 0;
  while (lua_getupvalue(L_, f, have + 1)) {
    lua_pop(L_, 1);
    ++have;
  }
  if (have != nups) bad("function has " + std::to_string(have) + " upvalues, the sender gave " + std::to_string(nups));
  if (p_ < end_ && (static_cast<uint8_t>(*p_) == TAG_GLOBALS || static_cast<uint8_t>(*p_) == TAG_GLOBALS_WITH)) {
    bool with = static_cast<uint8_t>(*p_) == TAG_GLOBALS_WITH;
    ++p_;
    if (opts_.env_index) lua_pushvalue(L_, opts_.env_index);
    else lua_pushvalue(L_, LUA_GLOBALSINDEX);  // [f, ..., env]
    if (with) {
      uint64_t n = varint();
      if (n > static_cast<uint64_t>(end_ - p_)) bad("more globals than bytes");
      for (uint64_t i = 0; i < n; ++i) {
        std::string_view name = string();
        lua_pushlstring(L_, name.data(), name.size());
        value(depth + 1);  // [f, ..., env, name, v]
        lua_rawset(L_, -3);
      }
    }
  } else {
    value(depth + 1);
    if (!lua_istable(L_, -1)) bad("function environment is not a table");
  }
  lua_setfenv(L_, f);
  for (int n = 1; n <= nups; ++n) {
    if (p_ < end_ && static_cast<uint8_t>(*p_) == TAG_UPREF) {
      ++p_;
      uint64_t gid = varint();
      uint64_t m = varint();
      push_ref(gid);  // [f, ..., g]
      if (!lua_isfunction(L_, -1) || lua_iscfunction(L_, -1)) bad("shared upvalue of a value that is not a Lua function");
      int gups = 0;
      while (lua_getupvalue(L_, -1 - 0, gups + 1)) {
        lua_pop(L_, 1);
        ++gups;
      }
      if (m < 1 || m > static_cast<uint64_t>(gups)) bad("shared upvalue index out of range");
      lua_upvaluejoin(L_, f, n, lua_gettop(L_), static_cast<int>(m));
      lua_pop(L_, 1);
    } else {
      value(depth + 1);  // [f, v]
      lua_setupvalue(L_, f, n);
    }
  }
}

void Decoder::module() {
  std::string name(string());
  uint8_t has_source = byte();
  std::string chunk, source;
  if (has_source > 1) bad("bad module flag");
  if (has_source) {
    chunk = std::string(string());
    source = std::string(string());
  }
  need_code("a module reference");
  lua_getglobal(L_, "package");
  if (!lua_istable(L_, -1)) bad("no package table");
  lua_getfield(L_, -1, "loaded");  // [package, loaded]
  lua_getfield(L_, -1, name.c_str());
  if (!lua_isnil(L_, -1)) {
    lua_replace(L_, -3);
    lua_pop(L_, 1);
    return;
  }
  lua_pop(L_, 1);  // [package, loaded]
  lua_getglobal(L_, "require");
  lua_pushlstring(L_, name.data(), name.size());
  if (lua_pcall(L_, 1, 1, 0) == 0) {  // [package, loaded, mod]
    lua_replace(L_, -3);
    lua_pop(L_, 1);
    return;
  }
  std::string require_error = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "?";
  lua_pop(L_, 1);
  if (!has_source) {
    lua_pop(L_, 2);
    throw WireError("module '" + name + "' is not available here: " + require_error);
  }
  if (luaL_loadbuffer(L_, source.data(), source.size(), chunk.c_str()) != 0) {
    std::string msg = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "?";
    lua_pop(L_, 3);
    throw WireError("module '" + name + "' sent as source does not load: " + msg);
  }
  lua_pushlstring(L_, name.data(), name.size());
  if (lua_pcall(L_, 1, 1, 0) != 0) {  // [package, loaded, ret]
    std::string msg = runtime_error_string(L_, -1);
    lua_pop(L_, 3);
    throw WireError("module '" + name + "' sent as source failed to run: " + msg);
  }
  if (lua_isnil(L_, -1)) {  // like require: a module that returned nothing is package.loaded[name] or true
    lua_pop(L_, 1);
    lua_getfield(L_, -1, name.c_str());
    if (lua_isnil(L_, -1)) {
      lua_pop(L_, 1);
      lua_pushboolean(L_, 1);
    }
  }
  lua_pushvalue(L_, -1);
  lua_setfield(L_, -3, name.c_str());  // [package, loaded, mod]
  lua_replace(L_, -3);
  lua_pop(L_, 1);
}

void Decoder::cfunction() {
  std::string mod(string());
  std::string field(string());
  need_code("a module function");
  lua_getglobal(L_, "package");
  if (!lua_istable(L_, -1)) bad("no package table");
  lua_getfield(L_, -1, "loaded");
  lua_getfield(L_, -1, mod.c_str());  // [package, loaded, mod]
  if (lua_isnil(L_, -1)) {
    lua_pop(L_, 1);
    lua_getglobal(L_, "require");
    lua_pushlstring(L_, mod.data(), mod.size());
    if (lua_pcall(L_, 1, 1, 0) != 0) {
      std::string msg = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "?";
      lua_pop(L_, 3);
      throw WireError("module '" + mod + "' (for its function '" + field + "') is not available here: " + msg);
    }
  }
  if (!lua_istable(L_, -1)) {
    lua_pop(L_, 3);
    throw WireError("module '" + mod + "' is not a table here (looking for its function '" + field + "')");
  }
  lua_getfield(L_, -1, field.c_str());  // [package, loaded, mod, f]
  if (!lua_isfunction(L_, -1)) {
    lua_pop(L_, 4);
    throw WireError("module '" + mod + "' has no function '" + field + "' here");
  }
  lua_replace(L_, -4);
  lua_pop(L_, 2);
}

void Decoder::int64(bool unsigned_) {
  uint64_t v = u64();
  push_int64_helper(L_);  // [helper]
  uint32_t hi = static_cast<uint32_t>(v >> 32);
  lua_pushnumber(L_, unsigned_ ? static_cast<double>(hi) : static_cast<double>(static_cast<int32_t>(hi)));
  lua_pushnumber(L_, static_cast<double>(static_cast<uint32_t>(v)));
  lua_pushboolean(L_, unsigned_);
  if (lua_pcall(L_, 3, 1, 0) != 0) {
    std::string msg = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "?";
    lua_pop(L_, 1);
    throw WireError("cannot make a 64-bit integer here: " + msg);
  }
}

void Decoder::userdata() {
  uint32_t id = new_ref();
  std::string name(string());
  std::string_view payload = string();
  UserdataCodec codec;
  {
    std::lock_guard<std::mutex> lock(codecs_mutex());
    auto it = codecs().find(name);
    if (it == codecs().end()) throw WireError("no codec for userdata '" + name + "' here");
    codec = it->second;
  }
  if (!opts_.allow_code && !codec.untrusted_ok)
    throw WireError("refused to decode userdata '" + name + "' from untrusted bytes");
  int top = lua_gettop(L_);
  codec.decode(L_, payload);
  if (lua_gettop(L_) != top + 1) {
    lua_settop(L_, top);
    throw WireError("codec for userdata '" + name + "' did not push one value");
  }
  set_ref(id, -1);
}

void Decoder::reduce(int depth) {
  uint32_t id = new_ref();
  need_code("a reduced value");
  value(depth + 1);  // [fn]
  if (!lua_isfunction(L_, -1)) bad("reducer is not a function");
  value(depth + 1);  // [fn, args]
  if (!lua_istable(L_, -1)) bad("reducer arguments are not a table");
  lua_getfield(L_, -1, "n");
  int n = static_cast<int>(lua_tointeger(L_, -1));
  lua_pop(L_, 1);
  if (n < 0 || n > 250) bad("reducer argument count out of range");
  if (!lua_checkstack(L_, n + 4)) bad("out of Lua stack space");
  int args = lua_gettop(L_);
  for (int i = 1; i <= n; ++i) lua_rawgeti(L_, args, i);
  lua_remove(L_, args);  // [fn, a1..an]
  if (lua_pcall(L_, n, 1, 0) != 0) {
    std::string msg = runtime_error_string(L_, -1);
    lua_pop(L_, 1);
    throw WireError("rebuilding a userdata failed: " + msg);
  }
  set_ref(id, -1);
}

}  // namespace

// ---- public API -------------------------------------------------------------------------------------

void encode(lua_State* L, int idx, std::string& out, const EncodeOptions& opts) {
  idx = idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
  int top = lua_gettop(L);
  try {
    Encoder e(L, out, opts);
    e.value(idx, 0);
  } catch (...) {
    lua_settop(L, top);
    throw;
  }
}

std::string encode(lua_State* L, int idx, const EncodeOptions& opts) {
  std::string out;
  encode(L, idx, out, opts);
  return out;
}

void decode(lua_State* L, std::string_view bytes, const DecodeOptions& opts) {
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 16)) throw WireError("out of Lua stack space");
  DecodeOptions o = opts;
  if (o.env_index < 0 && o.env_index > LUA_REGISTRYINDEX) o.env_index = top + o.env_index + 1;
  lua_newtable(L);  // [refs]
  try {
    Decoder d(L, bytes, o, top + 1);
    d.value(0);  // [refs, v]
    if (!d.at_end()) throw WireError("malformed value: trailing bytes");
  } catch (...) {
    lua_settop(L, top);
    throw;
  }
  lua_remove(L, top + 1);  // [v]
}

void register_userdata_codec(const std::string& metatable_name, UserdataCodec codec) {
  std::lock_guard<std::mutex> lock(codecs_mutex());
  codecs()[metatable_name] = std::move(codec);
}

// Lua-visible registration of reducers (used by lua_wire.cpp). Pops 1 (the function), pushes 0.
void register_reducer(lua_State* L, const char* metatable_name) {
  lua_pushlightuserdata(L, &kReducersKey);
  lua_rawget(L, LUA_REGISTRYINDEX);  // [fn, reducers|nil]
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushlightuserdata(L, &kReducersKey);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);  // [fn, reducers]
  }
  lua_insert(L, -2);                     // [reducers, fn]
  lua_setfield(L, -2, metatable_name);   // [reducers]
  lua_pop(L, 1);
}

void frame_append(std::string& out, uint8_t kind, std::string_view payload) {
  uint64_t len = payload.size() + 1;
  if (len > kMaxFrame) throw WireError("frame of " + std::to_string(len) + " bytes is over the limit of " + std::to_string(kMaxFrame));
  char h[kFrameHeader];
  for (int i = 0; i < 4; ++i) h[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  h[4] = static_cast<char>(kind);
  out.append(h, kFrameHeader);
  out.append(payload.data(), payload.size());
}

size_t frame_parse(std::string_view buf, uint8_t& kind, std::string_view& payload) {
  if (buf.size() < 4) return 0;
  uint32_t len = 0;
  for (int i = 0; i < 4; ++i) len |= static_cast<uint32_t>(static_cast<uint8_t>(buf[i])) << (8 * i);
  if (len == 0 || len > kMaxFrame) throw WireError("malformed frame: length " + std::to_string(len));
  if (buf.size() - 4 < len) return 0;
  kind = static_cast<uint8_t>(buf[4]);
  payload = buf.substr(kFrameHeader, len - 1);
  return 4 + static_cast<size_t>(len);
}

std::string frame_kind_name(uint8_t kind) {
  static const char* const names[] = {nullptr, "HELLO", "SETUP", "READY", "TASK", "RESULT", "MAP_FN", "BATCH",
                                      "BATCH_RESULT", "STDOUT", "STDERR", "SHUTDOWN", "BYE", "FAIL", "MAP_END",
                                      "CALL",    "REPLY"};
  if (kind >= 1 && kind < sizeof names / sizeof names[0]) return names[kind];
  return "kind " + std::to_string(kind);
}

namespace {

// Reads "<decimal>:" at the front of s (at most 15 digits, no sign, no leading zeros but "0").
// Returns false when s does not start so.
bool take_id(std::string_view& s, uint64_t& id) {
  size_t i = 0;
  id = 0;
  while (i < s.size() && i < 16 && s[i] >= '0' && s[i] <= '9') id = id * 10 + static_cast<uint64_t>(s[i++] - '0');
  if (i == 0 || i > 15 || i >= s.size() || s[i] != ':' || (i > 1 && s[0] == '0')) return false;
  s.remove_prefix(i + 1);
  return true;
}

}  // namespace

WorkerFrame worker_frame_parse(uint8_t kind, std::string_view payload) {
  WorkerFrame f;
  f.kind = kind;
  f.body = payload;
  switch (kind) {
    case FRAME_HELLO:
    case FRAME_READY:
    case FRAME_FAIL:
    case FRAME_STDOUT:
    case FRAME_STDERR:
    case FRAME_BYE: return f;
    case FRAME_RESULT:
      if (!take_id(f.body, f.id)) throw WireError("a RESULT frame without its task id (\"<id>:\")");
      return f;
    case FRAME_CALL:
      if (!take_id(f.body, f.id)) throw WireError("a CALL frame without its request id (\"<id>:\")");
      return f;
    case FRAME_BATCH_RESULT:
      if (!take_id(f.body, f.id) || !take_id(f.body, f.base))
        throw WireError("a BATCH_RESULT frame without its map id and first item (\"<map>:<item>:\")");
      return f;
    case FRAME_SETUP:
    case FRAME_TASK:
    case FRAME_MAP_FN:
    case FRAME_BATCH:
    case FRAME_SHUTDOWN:
    case FRAME_MAP_END:
    case FRAME_REPLY: throw WireError("a " + frame_kind_name(kind) + " frame, which only the driver sends");
    default: throw WireError("a frame of unknown kind " + std::to_string(kind));
  }
}

const Versions& local_versions() {
  static const Versions v = [] {
    Versions r;
    r.skyrun = SKY_VERSION;
    r.luajit = LUAJIT_VERSION;
    lua_State* L = luaL_newstate();
    std::string bc;
    if (L && luaL_loadbuffer(L, "return", 6, "=v") == 0) lua_dump(L, dump_writer, &bc);
    if (L) lua_close(L);
    static const char* hex = "0123456789abcdef";
    for (size_t i = 0; i < bc.size() && i < 5; ++i) {
      r.bytecode.push_back(hex[static_cast<uint8_t>(bc[i]) >> 4]);
      r.bytecode.push_back(hex[static_cast<uint8_t>(bc[i]) & 15]);
    }
    return r;
  }();
  return v;
}

std::string hello_encode(const Versions& v) {
  return "skyrun-wire " + std::to_string(v.wire) + "\nskyrun " + v.skyrun + "\nluajit " + v.luajit +
         "\nbytecode " + v.bytecode + "\n";
}

Versions hello_decode(std::string_view text) {
  auto preview = [&] {
    std::string p;
    for (char c : text.substr(0, 60)) p += (c >= 32 && c < 127) ? std::string(1, c) : std::string("?");
    return p;
  };
  Versions v;
  v.wire = 0;
  bool seen_magic = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos) continue;
    std::string_view key = line.substr(0, sp), val = line.substr(sp + 1);
    if (key == "skyrun-wire") {
      seen_magic = true;
      v.wire = static_cast<uint32_t>(strtoul(std::string(val).c_str(), nullptr, 10));
    } else if (key == "skyrun") {
      v.skyrun = val;
    } else if (key == "luajit") {
      v.luajit = val;
    } else if (key == "bytecode") {
      v.bytecode = val;
    }
  }
  if (!seen_magic || v.skyrun.empty()) throw WireError("not a skyrun worker greeting (got \"" + preview() + "\")");
  return v;
}

std::string versions_mismatch(const Versions& driver, const Versions& worker) {
  if (driver.wire == worker.wire && driver.skyrun == worker.skyrun && driver.luajit == worker.luajit &&
      driver.bytecode == worker.bytecode)
    return "";
  auto show = [](const Versions& v) {
    return "skyrun " + v.skyrun + " (" + v.luajit + ", bytecode " + v.bytecode + ", wire " + std::to_string(v.wire) + ")";
  };
  return "skyrun version mismatch: driver runs " + show(driver) + ", worker runs " + show(worker);
}

}  // namespace sky::wire
