// Lua binding of the Jinja2 engine: `require "jinja.core"` gives template(source) (a
// skyrun.JinjaTemplate with render and render_chat) and json(text) (a skyrun.JinjaValue: JSON
// parsed with its key order, to pass where order matters). Lua tables become Python values:
// arrays (keys 1..n, or __jsontype = "array") are lists, other tables dicts with sorted keys,
// integral numbers ints. Errors read "<Python exception>: <message>", as jinja2 raises them.
#include <lua.hpp>

#include <algorithm>
#include <cmath>

#include "host/bind.hpp"
#include "host/lua_json.hpp"
#include "host/modules.hpp"
#include "jinja/internal.hpp"

namespace sky {
namespace {

using jinja::Value;

extern const ClassSpec kTemplateSpec;
extern const ClassSpec kValueSpec;

// Runs f, turning a jinja error into "<Type>: <message>".
template <class F>
auto guarded(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const jinja::Error& e) {
    throw Error(e.type() + ": " + e.what());
  }
}

Value to_value(lua_State* L, int idx, int depth);

Value table_to_value(lua_State* L, int idx, int depth) {
  bool array = false, object = false;
  if (luaL_getmetafield(L, idx, "__jsontype")) {  // [type]
    const char* t = lua_tostring(L, -1);
    array = t && std::string_view(t) == "array";
    object = t && std::string_view(t) == "object";
    lua_pop(L, 1);
  }
  size_t n = lua_objlen(L, idx);
  size_t count = 0;
  bool integer_keys = true;
  lua_pushnil(L);  // [k]
  while (lua_next(L, idx)) {  // [k, v]
    count++;
    if (lua_type(L, -2) != LUA_TNUMBER) integer_keys = false;
    lua_pop(L, 1);  // [k]
  }
  if (!object && (array || (integer_keys && count == n))) {
    jinja::List items;
    items.reserve(n);
    for (size_t i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, static_cast<int>(i));  // [v]
      items.push_back(to_value(L, -1, depth + 1));
      lua_pop(L, 1);
    }
    return Value::list(std::move(items));
  }
  std::vector<std::pair<std::string, Value>> entries;
  lua_pushnil(L);  // [k]
  while (lua_next(L, idx)) {  // [k, v]
    std::string key;
    if (lua_type(L, -2) == LUA_TSTRING) {
      size_t len;
      const char* s = lua_tolstring(L, -2, &len);
      key.assign(s, len);
    } else if (lua_type(L, -2) == LUA_TNUMBER) {
      double d = lua_tonumber(L, -2);
      key = d == std::floor(d) ? std::to_string(static_cast<int64_t>(d)) : jinja::py_float_repr(d);
    } else {
      lua_pop(L, 2);
      throw Error(std::string("a table key of type ") + luaL_typename(L, -1) + " cannot become a template value");
    }
    entries.emplace_back(std::move(key), to_value(L, -1, depth + 1));
    lua_pop(L, 1);  // [k]
  }
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  jinja::Dict d;
  for (auto& [k, v] : entries) d.entries.emplace_back(Value::string(k), std::move(v));
  return Value::dict(std::move(d));
}

// The Lua value at idx as a template value. Pushes 0.
Value to_value(lua_State* L, int idx, int depth) {
  if (depth > 100) throw Error("a table nested deeper than 100 levels (a cycle?) cannot become a template value");
  idx = idx > 0 ? idx : lua_gettop(L) + idx + 1;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: case LUA_TNONE: return Value::none();
    case LUA_TBOOLEAN: return Value::boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER: {
      double d = lua_tonumber(L, idx);
      if (d == std::floor(d) && std::fabs(d) < 9.2e18) return Value::integer(static_cast<int64_t>(d));
      return Value::number(d);
    }
    case LUA_TSTRING: {
      size_t n;
      const char* s = lua_tolstring(L, idx, &n);
      return Value::string(std::string(s, n));
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == lua_json_null()) return Value::none();
      break;
    case LUA_TUSERDATA:
      if (Handle* h = class_test_handle(L, idx, kValueSpec)) return *static_cast<Value*>(h->ptr.get());
      break;
    case LUA_TTABLE: {
      StackGuard guard(L);
      return table_to_value(L, idx, depth);
    }
    default: break;
  }
  throw Error(std::string("a ") + type_name_at(L, idx) + " cannot become a template value");
}

jinja::Dict to_dict(lua_State* L, int idx, const char* what) {
  if (lua_isnoneornil(L, idx)) return {};
  Value v = to_value(L, idx, 0);
  if (v.is_list() && v.items().empty()) return {};
  if (!v.is_dict()) throw Error(std::string(what) + " must be a table of names to values");
  return v.dict();
}

jinja::RenderOptions render_options(lua_State* L, int idx) {
  Options o(L, idx, "render", {{"now", OptType::Number}, {"track_generation", OptType::Boolean}});
  jinja::RenderOptions r;
  if (o.has("now")) r.now = static_cast<std::time_t>(o.number("now", 0));
  r.track_generation = o.boolean("track_generation", false);
  return r;
}

// Pushes the spans as a list of {start, end} (0-based, end exclusive). Pushes 1.
void push_spans(lua_State* L, const std::vector<std::pair<size_t, size_t>>& spans) {
  lua_createtable(L, static_cast<int>(spans.size()), 0);  // [list]
  for (size_t i = 0; i < spans.size(); i++) {
    lua_createtable(L, 2, 0);  // [list, span]
    lua_pushinteger(L, static_cast<lua_Integer>(spans[i].first));
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, static_cast<lua_Integer>(spans[i].second));
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, static_cast<int>(i + 1));  // [list]
  }
}

int jinja_template(lua_State* L) {
  std::string_view src = check_string_view(L, 1);
  auto t = guarded([&] { return jinja::Template::parse(src); });
  class_push(L, kTemplateSpec, t);
  return 1;
}

int jinja_json(lua_State* L) {
  std::string_view text = check_string_view(L, 1);
  auto v = std::make_shared<Value>(guarded([&] { return jinja::json_parse(text); }));
  class_push(L, kValueSpec, v);
  return 1;
}

// tpl:render(vars [, {now=, track_generation=}]) -> text, spans (byte offsets)
int tpl_render(lua_State* L) {
  auto& t = class_check<jinja::Template>(L, 1, kTemplateSpec);
  jinja::Dict vars = to_dict(L, 2, "render's variables");
  jinja::RenderOptions opts = render_options(L, 3);
  jinja::RenderResult r = guarded([&] { return t.render(vars, opts); });
  lua_pushlstring(L, r.text.data(), r.text.size());
  push_spans(L, r.generation_spans);
  return 2;
}

// tpl:render_chat({messages=, tools=, documents=, add_generation_prompt=, continue_final_message=,
// extra=} [, opts]) -> text, spans in code points (Python's str offsets)
int tpl_render_chat(lua_State* L) {
  auto& t = class_check<jinja::Template>(L, 1, kTemplateSpec);
  check_table(L, 2);
  jinja::ChatInputs in;
  {
    Options o(L, 2, "render_chat",
              {{"messages", OptType::Any}, {"tools", OptType::Any}, {"documents", OptType::Any},
               {"add_generation_prompt", OptType::Boolean}, {"continue_final_message", OptType::Boolean},
               {"extra", OptType::Any}});
    o.push("messages");  // [m]
    in.messages = to_value(L, -1, 0);
    lua_pop(L, 1);
    o.push("tools");  // [t]
    in.tools = to_value(L, -1, 0);
    lua_pop(L, 1);
    o.push("documents");  // [d]
    in.documents = to_value(L, -1, 0);
    lua_pop(L, 1);
    o.push("extra");  // [e]
    in.extra = to_dict(L, lua_gettop(L), "extra");
    lua_pop(L, 1);
    in.add_generation_prompt = o.boolean("add_generation_prompt", false);
    in.continue_final_message = o.boolean("continue_final_message", false);
  }
  jinja::RenderOptions opts = render_options(L, 3);
  jinja::RenderResult r = guarded([&] { return jinja::render_chat(t, in, opts); });
  jinja::spans_to_code_points(r.text, r.generation_spans);
  lua_pushlstring(L, r.text.data(), r.text.size());
  push_spans(L, r.generation_spans);
  return 2;
}

int tpl_source(lua_State* L) {
  auto& t = class_check<jinja::Template>(L, 1, kTemplateSpec);
  lua_pushlstring(L, t.source().data(), t.source().size());
  return 1;
}

// value:dumps([{indent=, ensure_ascii=, sort_keys=}]) -> JSON text as Python's json.dumps writes it
int value_dumps(lua_State* L) {
  auto& v = class_check<Value>(L, 1, kValueSpec);
  Options o(L, 2, "dumps", {{"indent", OptType::Integer}, {"ensure_ascii", OptType::Boolean}, {"sort_keys", OptType::Boolean}});
  jinja::JsonOptions jo;
  if (o.has("indent")) jo.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, o.integer("indent", 0))), ' ');
  jo.ensure_ascii = o.boolean("ensure_ascii", false);
  jo.sort_keys = o.boolean("sort_keys", false);
  std::string s = guarded([&] { return jinja::json_dumps(v, jo); });
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

int value_tostring(lua_State* L) {
  auto& v = class_check<Value>(L, 1, kValueSpec);
  std::string s = "JinjaValue(" + jinja::py_repr(v) + ")";
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

// value:kind() -> "list" | "dict" | "str" | "int" | "float" | "bool" | "NoneType"
int value_kind(lua_State* L) {
  auto& v = class_check<Value>(L, 1, kValueSpec);
  lua_pushstring(L, jinja::py_type_name(v));
  return 1;
}

// value:len() -> Python's len() of a list, dict or string
int value_len(lua_State* L) {
  auto& v = class_check<Value>(L, 1, kValueSpec);
  lua_pushinteger(L, static_cast<lua_Integer>(guarded([&] { return jinja::py_len(v); })));
  return 1;
}

// value:get(key_or_index) -> a JinjaValue for a list item (1-based) or a dict key, or nil
int value_get(lua_State* L) {
  auto& v = class_check<Value>(L, 1, kValueSpec);
  const Value* found = nullptr;
  if (v.is_sequence()) {
    int64_t i = check_int64(L, 2);
    if (i >= 1 && static_cast<size_t>(i) <= v.items().size()) found = &v.items()[static_cast<size_t>(i - 1)];
  } else if (v.is_dict()) {
    found = v.dict().find(check_string_view(L, 2));
  }
  if (!found) {
    lua_pushnil(L);
    return 1;
  }
  class_push(L, kValueSpec, std::make_shared<Value>(*found));
  return 1;
}

// value:lua() -> the value as plain Lua data (dict key order is lost)
void push_lua(lua_State* L, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Bool: lua_pushboolean(L, v.as_bool()); return;
    case Value::Kind::Int: lua_pushnumber(L, static_cast<lua_Number>(v.as_int())); return;
    case Value::Kind::Float: lua_pushnumber(L, v.as_double()); return;
    case Value::Kind::String: lua_pushlstring(L, v.str().data(), v.str().size()); return;
    case Value::Kind::List: case Value::Kind::Tuple: {
      lua_createtable(L, static_cast<int>(v.items().size()), 0);  // [t]
      for (size_t i = 0; i < v.items().size(); i++) {
        push_lua(L, v.items()[i]);
        lua_rawseti(L, -2, static_cast<int>(i + 1));
      }
      return;
    }
    case Value::Kind::Dict: {
      lua_createtable(L, 0, static_cast<int>(v.dict().size()));  // [t]
      for (const auto& [k, x] : v.dict().entries) {
        std::string key = jinja::py_str(k);
        lua_pushlstring(L, key.data(), key.size());
        push_lua(L, x);
        lua_rawset(L, -3);
      }
      return;
    }
    case Value::Kind::None: lua_pushlightuserdata(L, lua_json_null()); return;
    default: lua_pushnil(L); return;
  }
}

int value_lua(lua_State* L) {
  auto& v = class_check<Value>(L, 1, kValueSpec);
  push_lua(L, v);
  return 1;
}

const ClassSpec kTemplateSpec{
    "skyrun.JinjaTemplate",
    "JinjaTemplate",
    {{"render", safe<tpl_render>}, {"render_chat", safe<tpl_render_chat>}, {"source", safe<tpl_source>}},
    {},
};

const ClassSpec kValueSpec{
    "skyrun.JinjaValue",
    "JinjaValue",
    {{"dumps", safe<value_dumps>}, {"kind", safe<value_kind>}, {"len", safe<value_len>}, {"get", safe<value_get>},
     {"lua", safe<value_lua>}},
    {},
    safe<value_tostring>,
};

}  // namespace
}  // namespace sky

extern "C" int luaopen_jinja_core(lua_State* L) {
  sky::class_register(L, sky::kTemplateSpec);
  sky::class_register(L, sky::kValueSpec);
  static const luaL_Reg fns[] = {
      {"template", sky::safe<sky::jinja_template>},
      {"json", sky::safe<sky::jinja_json>},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0, 2);  // [m]
  luaL_register(L, nullptr, fns);
  return 1;
}

SKY_NATIVE_MODULE("jinja.core", luaopen_jinja_core);
