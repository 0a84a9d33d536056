// The binding layer's implementation: class metatables, argument checks, option tables.
#include "host/bind.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>

namespace sky {

namespace {
std::atomic<int64_t> g_live_handles{0};
constexpr const char* kSpecKey = "__skyrun_spec";  // metatable field: lightuserdata ClassSpec*
}  // namespace

[[noreturn]] void raise_error(lua_State* L, std::string_view msg) {
  lua_pushlstring(L, msg.data(), msg.size());
  lua_error(L);
  __builtin_unreachable();
}

namespace detail {
// The length of s without a UTF-8 character that a cut left incomplete at its end.
static size_t utf8_whole_length(const char* s, size_t n) {
  size_t lead = n;
  while (lead > 0 && n - lead < 4 && (static_cast<unsigned char>(s[lead - 1]) & 0xc0) == 0x80) --lead;
  if (lead == 0) return n;
  unsigned char c = static_cast<unsigned char>(s[lead - 1]);
  size_t want = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
  return n - (lead - 1) < want ? lead - 1 : n;
}

int report_exception(lua_State* L, const char* what) {
  // Called after the try block has been left: no C++ frame with live objects remains here.
  luaL_where(L, 1);                                         // [where]
  // safe<> cuts a long message to its buffer: never in the middle of a UTF-8 character
  if (what && *what) lua_pushlstring(L, what, utf8_whole_length(what, strlen(what)));  // [where, msg]
  else lua_pushstring(L, "unknown C++ exception");
  lua_concat(L, 2);                                         // [where..msg]
  return lua_error(L);
}
}  // namespace detail

// ---- arguments ---------------------------------------------------------------------------------

static const ClassSpec* spec_of(lua_State* L, int idx) {
  StackGuard guard(L);
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return nullptr;  // [mt]
  lua_getfield(L, -1, kSpecKey);                                                       // [mt, spec]
  auto* spec = static_cast<const ClassSpec*>(lua_touserdata(L, -1));
  lua_pop(L, 2);
  return spec;
}

const char* type_name_at(lua_State* L, int idx) {
  if (const ClassSpec* spec = spec_of(L, idx)) return spec->type_name;
  return luaL_typename(L, idx);
}

void arg_type_error(lua_State* L, int idx, const char* expected) {
  const char* msg = lua_pushfstring(L, "%s expected, got %s", expected, type_name_at(L, idx));
  luaL_argerror(L, idx, msg);
  __builtin_unreachable();
}

int64_t check_int64(lua_State* L, int idx) {
  int t = lua_type(L, idx);
  if (t == LUA_TNUMBER) {
    double d = lua_tonumber(L, idx);
    if (d != static_cast<double>(static_cast<int64_t>(d)) || d >= 9223372036854775808.0)
      luaL_argerror(L, idx, "number has no integer representation");
    return static_cast<int64_t>(d);
  }
  if (t == 10 /* LUA_TCDATA */) {
    // int64 cdata print as "123LL" / "123ULL"; parse that rather than depend on the FFI here.
    lua_getglobal(L, "tostring");
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);  // [str]
    const char* s = lua_tostring(L, -1);
    char* end = nullptr;
    long long v = s ? strtoll(s, &end, 10) : 0;
    bool ok = s && end != s && (strcmp(end, "LL") == 0 || strcmp(end, "ULL") == 0);
    lua_pop(L, 1);
    if (!ok) arg_type_error(L, idx, "integer");
    return v;
  }
  arg_type_error(L, idx, "number");
}

std::string_view check_string_view(lua_State* L, int idx) {
  if (lua_type(L, idx) != LUA_TSTRING) arg_type_error(L, idx, "string");
  size_t n = 0;
  const char* s = lua_tolstring(L, idx, &n);
  return {s, n};
}

bool opt_boolean(lua_State* L, int idx, bool def) {
  int t = lua_type(L, idx);
  if (t == LUA_TNONE || t == LUA_TNIL) return def;
  if (t != LUA_TBOOLEAN) arg_type_error(L, idx, "boolean");
  return lua_toboolean(L, idx);
}

void check_table(lua_State* L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE) arg_type_error(L, idx, "table");
}

void check_function(lua_State* L, int idx) {
  if (lua_type(L, idx) != LUA_TFUNCTION) arg_type_error(L, idx, "function");
}

// ---- classes -------------------------------------------------------------------------------------

static int handle_gc(lua_State* L) {
  auto* h = static_cast<Handle*>(lua_touserdata(L, 1));
  if (h && h->spec) {
    if (h->ptr) g_live_handles.fetch_sub(1, std::memory_order_relaxed);
    h->~Handle();
    h->spec = nullptr;
  }
  return 0;
}

static int handle_tostring(lua_State* L) {
  const ClassSpec* spec = spec_of(L, 1);
  auto* h = static_cast<Handle*>(lua_touserdata(L, 1));
  if (spec && h->ptr && spec->tostring) return spec->tostring(L);
  lua_pushfstring(L, "%s%s: %p", spec ? spec->type_name : "?", h && h->ptr ? "" : " (closed)", lua_topointer(L, 1));
  return 1;
}

// __index(self, key): methods first, then property getters, then the class's fallback.
static int handle_index(lua_State* L) {
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));  // [self, key, method?]
  if (!lua_isnil(L, -1)) return 1;
  lua_pop(L, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(2));  // [self, key, getter?]
  if (!lua_isnil(L, -1)) {
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_call(L, 2, 1);  // [self, key, value]
    return 1;
  }
  lua_pop(L, 1);
  const ClassSpec* spec = spec_of(L, 1);
  if (spec && spec->index_fallback) return spec->index_fallback(L);
  lua_pushnil(L);
  return 1;
}

// __newindex(self, key, value): only properties with a setter.
static int handle_newindex(lua_State* L) {
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));  // [self, key, value, setter?]
  if (lua_isnil(L, -1)) {
    const ClassSpec* spec = spec_of(L, 1);
    return luaL_error(L, "cannot set field '%s' of %s", lua_tostring(L, 2) ? lua_tostring(L, 2) : "?",
                      spec ? spec->type_name : "object");
  }
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_call(L, 3, 0);
  return 0;
}

void class_register(lua_State* L, const ClassSpec& spec) {
  StackGuard guard(L);
  if (!luaL_newmetatable(L, spec.metatable)) {  // [mt]
    lua_pop(L, 1);
    return;
  }
  lua_pushlightuserdata(L, const_cast<ClassSpec*>(&spec));
  lua_setfield(L, -2, kSpecKey);
  lua_pushstring(L, spec.metatable);
  lua_setfield(L, -2, "__name");
  lua_pushcfunction(L, handle_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, handle_tostring);
  lua_setfield(L, -2, "__tostring");
  if (spec.call) {
    lua_pushcfunction(L, spec.call);
    lua_setfield(L, -2, "__call");
  }
  if (spec.len) {
    lua_pushcfunction(L, spec.len);
    lua_setfield(L, -2, "__len");
  }
  lua_createtable(L, 0 /* narr */, static_cast<int>(spec.methods.size()));  // [mt, methods]
  for (const Method& m : spec.methods) {
    lua_pushcfunction(L, m.fn);
    lua_setfield(L, -2, m.name);
  }
  lua_createtable(L, 0, static_cast<int>(spec.properties.size()));  // [mt, methods, getters]
  lua_createtable(L, 0, static_cast<int>(spec.properties.size()));  // [mt, methods, getters, setters]
  for (const Property& p : spec.properties) {
    if (p.get) {
      lua_pushcfunction(L, p.get);
      lua_setfield(L, -3, p.name);
    }
    if (p.set) {
      lua_pushcfunction(L, p.set);
      lua_setfield(L, -2, p.name);
    }
  }
  lua_pushcclosure(L, handle_newindex, 1);  // [mt, methods, getters, newindex]
  lua_setfield(L, -4, "__newindex");        // [mt, methods, getters]
  lua_pushcclosure(L, handle_index, 2);     // [mt, index]
  lua_setfield(L, -2, "__index");           // [mt]
  lua_pop(L, 1);
}

void class_push_raw(lua_State* L, const ClassSpec& spec, std::shared_ptr<void> obj) {
  StackGuard guard(L, 1);
  void* mem = lua_newuserdata(L, sizeof(Handle));  // [ud]
  auto* h = new (mem) Handle{std::move(obj), &spec};
  if (h->ptr) g_live_handles.fetch_add(1, std::memory_order_relaxed);
  luaL_getmetatable(L, spec.metatable);  // [ud, mt]
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    class_register(L, spec);
    luaL_getmetatable(L, spec.metatable);
  }
  lua_setmetatable(L, -2);  // [ud]
}

Handle* class_test_handle(lua_State* L, int idx, const ClassSpec& spec) {
  return spec_of(L, idx) == &spec ? static_cast<Handle*>(lua_touserdata(L, idx)) : nullptr;
}

Handle& class_check_handle(lua_State* L, int idx, const ClassSpec& spec) {
  Handle* h = class_test_handle(L, idx, spec);
  if (!h) arg_type_error(L, idx, spec.type_name);
  if (!h->ptr) {
    const char* msg = lua_pushfstring(L, "%s is closed", spec.type_name);
    luaL_argerror(L, idx, msg);
  }
  return *h;
}

void class_close(lua_State* L, int idx, const ClassSpec& spec) {
  Handle& h = class_check_handle(L, idx, spec);
  h.ptr.reset();
  g_live_handles.fetch_sub(1, std::memory_order_relaxed);
}

int64_t class_live_handles() { return g_live_handles.load(std::memory_order_relaxed); }

// ---- options -------------------------------------------------------------------------------------

const char* opt_type_name(OptType t) {
  switch (t) {
    case OptType::Any: return "any value";
    case OptType::Boolean: return "a boolean";
    case OptType::Number: return "a number";
    case OptType::Integer: return "an integer";
    case OptType::String: return "a string";
    case OptType::Table: return "a table";
    case OptType::Function: return "a function";
    case OptType::StringOrTable: return "a string or a table";
    case OptType::NumberOrString: return "a number or a string";
  }
  return "?";
}

static size_t lcs_length(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string suggest_closest(std::string_view name, const std::vector<std::string>& candidates) {
  double best = 0.6;
  std::string out;
  for (const std::string& c : candidates) {
    double ratio = 2.0 * static_cast<double>(lcs_length(name, c)) / static_cast<double>(name.size() + c.size());
    if (ratio > best || (ratio == best && out.empty())) {
      best = ratio;
      out = c;
    }
  }
  return out;
}

bool opt_type_matches(lua_State* L, int idx, OptType t) {
  int lt = lua_type(L, idx);
  switch (t) {
    case OptType::Any: return true;
    case OptType::Boolean: return lt == LUA_TBOOLEAN;
    case OptType::Number: return lt == LUA_TNUMBER;
    case OptType::Integer: {
      if (lt != LUA_TNUMBER) return false;
      double d = lua_tonumber(L, idx);
      return d == static_cast<double>(static_cast<int64_t>(d));
    }
    case OptType::String: return lt == LUA_TSTRING;
    case OptType::Table: return lt == LUA_TTABLE;
    case OptType::Function: return lt == LUA_TFUNCTION;
    case OptType::StringOrTable: return lt == LUA_TSTRING || lt == LUA_TTABLE;
    case OptType::NumberOrString: return lt == LUA_TNUMBER || lt == LUA_TSTRING;
  }
  return false;
}

std::string unknown_option_message(std::string_view key, std::string_view where, const std::vector<std::string>& names) {
  std::string msg = "unknown option '" + std::string(key) + "' to '" + std::string(where) + "'";
  std::string hint = suggest_closest(key, names);
  if (!hint.empty()) msg += " (did you mean '" + hint + "'?)";
  return msg;
}

Options::Options(lua_State* L, int idx, const char* where, std::initializer_list<OptSpec> spec)
    : L_(L), idx_(0), where_(where) {
  int t = lua_type(L, idx);
  if (t == LUA_TNONE || t == LUA_TNIL) return;
  if (t != LUA_TTABLE) arg_type_error(L, idx, "table of options");
  idx_ = idx > 0 ? idx : lua_gettop(L) + idx + 1;
  lua_pushnil(L);  // [nil]
  while (lua_next(L, idx_)) {  // [key, value]
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pushfstring(L, "option names to '%s' must be strings (got %s)", where, luaL_typename(L, -2));
      lua_error(L);
    }
    const char* key = lua_tostring(L, -2);
    const OptSpec* found = nullptr;
    for (const OptSpec& s : spec)
      if (strcmp(s.name, key) == 0) found = &s;
    if (!found) {
      std::vector<std::string> names;
      for (const OptSpec& s : spec) names.emplace_back(s.name);
      std::string msg = unknown_option_message(key, where, names);
      lua_pushlstring(L, msg.data(), msg.size());
      lua_error(L);
    }
    if (!opt_type_matches(L, -1, found->type)) {
      lua_pushfstring(L, "option '%s' to '%s' must be %s (got %s)", key, where, opt_type_name(found->type),
                      type_name_at(L, -1));
      lua_error(L);
    }
    lua_pop(L, 1);  // [key]
  }
}

void Options::push(const char* key) const {
  if (!idx_) {
    lua_pushnil(L_);
    return;
  }
  lua_getfield(L_, idx_, key);
}

bool Options::has(const char* key) const {
  push(key);
  bool present = !lua_isnil(L_, -1);
  lua_pop(L_, 1);
  return present;
}

bool Options::boolean(const char* key, bool def) const {
  push(key);
  bool v = lua_isnil(L_, -1) ? def : lua_toboolean(L_, -1);
  lua_pop(L_, 1);
  return v;
}

double Options::number(const char* key, double def) const {
  push(key);
  double v = lua_isnil(L_, -1) ? def : lua_tonumber(L_, -1);
  lua_pop(L_, 1);
  return v;
}

int64_t Options::integer(const char* key, int64_t def) const {
  push(key);
  int64_t v = lua_isnil(L_, -1) ? def : static_cast<int64_t>(lua_tonumber(L_, -1));
  lua_pop(L_, 1);
  return v;
}

std::string Options::string(const char* key, const std::string& def) const {
  push(key);
  std::string v = def;
  if (!lua_isnil(L_, -1)) {
    size_t n = 0;
    const char* s = lua_tolstring(L_, -1, &n);
    if (s) v.assign(s, n);
  }
  lua_pop(L_, 1);
  return v;
}

}  // namespace sky
