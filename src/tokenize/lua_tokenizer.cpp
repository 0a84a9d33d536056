// Lua binding of the tokenizer: `require "tokenizers.core"` gives from_file/from_string and the
// skyrun.Tokenizer class (encode to HF-shaped tables, decode, vocabulary lookups). The HF call
// shapes (AutoTokenizer, tok(text, opts), special-token attributes) live in
// lua/transformers/tokenization.lua on top of this.
#include <lua.hpp>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "host/bind.hpp"
#include "host/json.hpp"
#include "host/modules.hpp"
#include "tokenize/tokenizer.hpp"
#include "wire/wire.hpp"

namespace sky {
namespace {

using tok::Encoding;
using tok::Tokenizer;

extern const ClassSpec kTokenizerSpec;

Tokenizer& check_tok(lua_State* L) { return class_check<Tokenizer>(L, 1, kTokenizerSpec); }

int tok_from_file(lua_State* L) {
  std::string path(check_string_view(L, 1));
  class_push(L, kTokenizerSpec, Tokenizer::from_file(path));
  return 1;
}

int tok_from_string(lua_State* L) {
  std::string_view json = check_string_view(L, 1);
  std::string name = lua_isnoneornil(L, 2) ? "tokenizer.json" : std::string(check_string_view(L, 2));
  class_push(L, kTokenizerSpec, Tokenizer::from_json(json, name));
  return 1;
}

// Reads t[key] (t at idx) as an integer, or def when nil. Pushes 0.
int64_t field_int(lua_State* L, int idx, const char* key, int64_t def) {
  lua_getfield(L, idx, key);  // [v]
  int64_t v = lua_isnil(L, -1) ? def : check_int64(L, -1);
  lua_pop(L, 1);
  return v;
}
bool field_bool(lua_State* L, int idx, const char* key, bool def) {
  lua_getfield(L, idx, key);  // [v]
  bool v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}
std::string field_string(lua_State* L, int idx, const char* key, const std::string& def) {
  lua_getfield(L, idx, key);  // [v]
  std::string v = def;
  if (lua_type(L, -1) == LUA_TSTRING) v.assign(lua_tostring(L, -1), lua_objlen(L, -1));
  lua_pop(L, 1);
  return v;
}

// Texts at idx: a string (single) or a list of strings (batch). Views stay valid while the
// values sit on the Lua stack / in the table.
bool read_texts(lua_State* L, int idx, const char* what, std::vector<std::string_view>& out) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t n;
    const char* s = lua_tolstring(L, idx, &n);
    out.emplace_back(s, n);
    return false;
  }
  if (!lua_istable(L, idx)) throw Error(std::string(what) + " must be a string or a list of strings");
  size_t n = lua_objlen(L, idx);
  out.reserve(n);
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, static_cast<int>(i));  // [s]
    if (lua_type(L, -1) != LUA_TSTRING) {
      lua_pop(L, 1);
      throw Error(std::string(what) + "[" + std::to_string(i) + "] must be a string (got " + type_name_at(L, -1) + ")");
    }
    size_t len;
    const char* s = lua_tolstring(L, -1, &len);
    out.emplace_back(s, len);  // the table keeps the string alive
    lua_pop(L, 1);
  }
  return true;
}

template <class V>
void push_int_list(lua_State* L, const V& v) {
  lua_createtable(L, static_cast<int>(v.size()), 0);  // [t]
  for (size_t i = 0; i < v.size(); i++) {
    lua_pushnumber(L, static_cast<lua_Number>(v[i]));
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
}

void push_offsets(lua_State* L, const Encoding& e) {
  lua_createtable(L, static_cast<int>(e.offsets.size()), 0);  // [t]
  for (size_t i = 0; i < e.offsets.size(); i++) {
    lua_createtable(L, 2, 0);  // [t, pair]
    lua_pushnumber(L, e.offsets[i].first);
    lua_rawseti(L, -2, 1);
    lua_pushnumber(L, e.offsets[i].second);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, static_cast<int>(i + 1));  // [t]
  }
}

void push_tokens(lua_State* L, const Encoding& e) {
  lua_createtable(L, static_cast<int>(e.tokens.size()), 0);  // [t]
  for (size_t i = 0; i < e.tokens.size(); i++) {
    lua_pushlstring(L, e.tokens[i].data(), e.tokens[i].size());
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
}

struct Want {
  bool attention_mask, type_ids, offsets, tokens, special_tokens_mask;
};

// Sets result[key] to the field of each encoding (a list, or a list of lists when batched).
template <class F>
void set_field(lua_State* L, const std::vector<Encoding>& encs, bool batched, const char* key, F push) {
  if (batched) {
    lua_createtable(L, static_cast<int>(encs.size()), 0);  // [res, list]
    for (size_t i = 0; i < encs.size(); i++) {
      push(encs[i]);
      lua_rawseti(L, -2, static_cast<int>(i + 1));
    }
  } else {
    push(encs[0]);
  }
  lua_setfield(L, -2, key);  // [res]
}

// tok:encode(texts, pairs|nil, opts) -> { input_ids, attention_mask, token_type_ids, ... }
// opts (built by tokenization.lua): add_special_tokens, truncation = {max_length, stride,
// strategy, direction}, padding = {length|nil, pad_to_multiple_of, direction, pad_id,
// pad_type_id, pad_token}, return_* booleans, threads.
int tok_encode(lua_State* L) {
  Tokenizer& t = check_tok(L);
  std::vector<std::string_view> texts, pairs;
  bool batched = read_texts(L, 2, "text", texts);
  bool has_pairs = !lua_isnoneornil(L, 3);
  if (has_pairs) {
    bool pb = read_texts(L, 3, "text_pair", pairs);
    if (pb != batched) throw Error("text and text_pair must both be strings or both be lists");
  }
  tok::EncodeOptions o;
  Want w{true, false, false, false, false};
  int threads = 1;
  if (lua_istable(L, 4)) {
    o.add_special_tokens = field_bool(L, 4, "add_special_tokens", true);
    w.attention_mask = field_bool(L, 4, "return_attention_mask", true);
    w.type_ids = field_bool(L, 4, "return_token_type_ids", false);
    w.offsets = field_bool(L, 4, "return_offsets_mapping", false);
    w.tokens = field_bool(L, 4, "return_tokens", false);
    w.special_tokens_mask = field_bool(L, 4, "return_special_tokens_mask", false);
    threads = static_cast<int>(field_int(L, 4, "threads", 1));
    lua_getfield(L, 4, "truncation");  // [tr]
    if (lua_istable(L, -1)) {
      tok::Truncation tr;
      int idx = lua_gettop(L);
      int64_t ml = field_int(L, idx, "max_length", 512);
      if (ml < 0) throw Error("max_length must not be negative");
      tr.max_length = static_cast<size_t>(ml);
      tr.stride = static_cast<size_t>(field_int(L, idx, "stride", 0));
      std::string s = field_string(L, idx, "strategy", "longest_first");
      if (s == "longest_first") tr.strategy = tok::TruncationStrategy::LongestFirst;
      else if (s == "only_first") tr.strategy = tok::TruncationStrategy::OnlyFirst;
      else if (s == "only_second") tr.strategy = tok::TruncationStrategy::OnlySecond;
      else throw Error("unknown truncation strategy '" + s + "' (longest_first, only_first, only_second)");
      tr.direction = field_string(L, idx, "direction", "right") == "left" ? tok::Direction::Left : tok::Direction::Right;
      o.truncation = tr;
    }
    lua_pop(L, 1);                  // []
    lua_getfield(L, 4, "padding");  // [pd]
    if (lua_istable(L, -1)) {
      tok::Padding p;
      int idx = lua_gettop(L);
      int64_t len = field_int(L, idx, "length", -1);
      p.to_longest = len < 0;
      p.length = len < 0 ? 0 : static_cast<size_t>(len);
      p.pad_to_multiple_of = static_cast<size_t>(field_int(L, idx, "pad_to_multiple_of", 0));
      p.direction = field_string(L, idx, "direction", "right") == "left" ? tok::Direction::Left : tok::Direction::Right;
      p.pad_id = static_cast<uint32_t>(field_int(L, idx, "pad_id", 0));
      p.pad_type_id = static_cast<uint32_t>(field_int(L, idx, "pad_type_id", 0));
      p.pad_token = field_string(L, idx, "pad_token", "");
      o.padding = p;
    }
    lua_pop(L, 1);  // []
  }
  o.want_tokens = w.tokens || w.offsets;
  std::vector<Encoding> encs = t.encode_batch(texts, has_pairs ? &pairs : nullptr, o, threads);

  lua_createtable(L, 0, 4);  // [res]
  set_field(L, encs, batched, "input_ids", [&](const Encoding& e) { push_int_list(L, e.ids); });
  if (w.attention_mask) set_field(L, encs, batched, "attention_mask", [&](const Encoding& e) { push_int_list(L, e.attention_mask); });
  if (w.type_ids) set_field(L, encs, batched, "token_type_ids", [&](const Encoding& e) { push_int_list(L, e.type_ids); });
  if (w.special_tokens_mask)
    set_field(L, encs, batched, "special_tokens_mask", [&](const Encoding& e) { push_int_list(L, e.special_tokens_mask); });
  if (w.offsets) set_field(L, encs, batched, "offset_mapping", [&](const Encoding& e) { push_offsets(L, e); });
  if (w.tokens) set_field(L, encs, batched, "tokens", [&](const Encoding& e) { push_tokens(L, e); });
  return 1;
}

std::vector<uint32_t> read_ids(lua_State* L, int idx, const char* what) {
  if (!lua_istable(L, idx)) throw Error(std::string(what) + " must be a list of token ids");
  size_t n = lua_objlen(L, idx);
  std::vector<uint32_t> ids;
  ids.reserve(n);
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, static_cast<int>(i));  // [id]
    if (!lua_isnumber(L, -1)) {
      lua_pop(L, 1);
      throw Error(std::string(what) + "[" + std::to_string(i) + "] must be a token id (an integer)");
    }
    int64_t v = check_int64(L, -1);
    lua_pop(L, 1);
    if (v < 0 || v > UINT32_MAX) throw Error(std::string(what) + "[" + std::to_string(i) + "] is not a valid token id");
    ids.push_back(static_cast<uint32_t>(v));
  }
  return ids;
}

// tok:decode(ids, skip_special_tokens) -> string
int tok_decode(lua_State* L) {
  Tokenizer& t = check_tok(L);
  std::vector<uint32_t> ids = read_ids(L, 2, "ids");
  std::string s = t.decode(ids, lua_toboolean(L, 3));
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

int tok_token_to_id(lua_State* L) {
  Tokenizer& t = check_tok(L);
  auto id = t.token_to_id(check_string_view(L, 2));
  if (id) lua_pushnumber(L, *id);
  else lua_pushnil(L);
  return 1;
}

int tok_id_to_token(lua_State* L) {
  Tokenizer& t = check_tok(L);
  int64_t id = check_int64(L, 2);
  auto s = id >= 0 && id <= UINT32_MAX ? t.id_to_token(static_cast<uint32_t>(id)) : std::nullopt;
  if (s) lua_pushlstring(L, s->data(), s->size());
  else lua_pushnil(L);
  return 1;
}

int tok_vocab_size(lua_State* L) {
  Tokenizer& t = check_tok(L);
  lua_pushnumber(L, static_cast<lua_Number>(t.vocab_size(opt_boolean(L, 2, true))));
  return 1;
}

int tok_num_special_tokens_to_add(lua_State* L) {
  Tokenizer& t = check_tok(L);
  lua_pushnumber(L, static_cast<lua_Number>(t.num_special_tokens_to_add(lua_toboolean(L, 2))));
  return 1;
}

// tok:added_tokens() -> { {content=, id=, special=, single_word=, lstrip=, rstrip=, normalized=}, ... }
int tok_added_tokens(lua_State* L) {
  Tokenizer& t = check_tok(L);
  const auto& list = t.added_tokens();
  lua_createtable(L, static_cast<int>(list.size()), 0);  // [t]
  for (size_t i = 0; i < list.size(); i++) {
    const auto& a = list[i];
    lua_createtable(L, 0, 7);  // [t, e]
    lua_pushlstring(L, a.content.data(), a.content.size());
    lua_setfield(L, -2, "content");
    lua_pushnumber(L, a.id);
    lua_setfield(L, -2, "id");
    lua_pushboolean(L, a.special);
    lua_setfield(L, -2, "special");
    lua_pushboolean(L, a.single_word);
    lua_setfield(L, -2, "single_word");
    lua_pushboolean(L, a.lstrip);
    lua_setfield(L, -2, "lstrip");
    lua_pushboolean(L, a.rstrip);
    lua_setfield(L, -2, "rstrip");
    lua_pushboolean(L, a.normalized);
    lua_setfield(L, -2, "normalized");
    lua_rawseti(L, -2, static_cast<int>(i + 1));  // [t]
  }
  return 1;
}

// tok:add_tokens({ {content=, special=, ...} | "text", ... }) -> number added
int tok_add_tokens(lua_State* L) {
  Tokenizer& t = check_tok(L);
  check_table(L, 2);
  bool special_default = lua_toboolean(L, 3);
  std::vector<tok::AddedToken> list;
  size_t n = lua_objlen(L, 2);
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, static_cast<int>(i));  // [e]
    tok::AddedToken a;
    a.special = special_default;
    a.normalized = !special_default;
    if (lua_type(L, -1) == LUA_TSTRING) {
      a.content.assign(lua_tostring(L, -1), lua_objlen(L, -1));
    } else if (lua_istable(L, -1)) {
      int idx = lua_gettop(L);
      a.content = field_string(L, idx, "content", "");
      a.special = field_bool(L, idx, "special", special_default);
      a.single_word = field_bool(L, idx, "single_word", false);
      a.lstrip = field_bool(L, idx, "lstrip", false);
      a.rstrip = field_bool(L, idx, "rstrip", false);
      a.normalized = field_bool(L, idx, "normalized", !a.special);
    } else {
      lua_pop(L, 1);
      throw Error("add_tokens: entry " + std::to_string(i) + " must be a string or a table with content");
    }
    lua_pop(L, 1);  // []
    list.push_back(std::move(a));
  }
  lua_pushnumber(L, static_cast<lua_Number>(t.add_tokens(list)));
  return 1;
}

// tok:set_post_processor(json): a tokenizer.json "post_processor" object as JSON text.
int tok_set_post_processor(lua_State* L) {
  Tokenizer& t = check_tok(L);
  t.set_post_processor_json(check_string_view(L, 2));
  return 0;
}

// tok:to_json() -> tokenizer.json text with the added tokens and post-processor as they are now
int tok_to_json(lua_State* L) {
  Tokenizer& t = check_tok(L);
  std::string s = t.to_json();
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

int tok_source(lua_State* L) {
  Tokenizer& t = check_tok(L);
  lua_pushlstring(L, t.source().data(), t.source().size());
  return 1;
}

int tok_tostring(lua_State* L) {
  Tokenizer& t = check_tok(L);
  lua_pushfstring(L, "Tokenizer(%s, %d tokens)", t.source().c_str(), static_cast<int>(t.vocab_size(true)));
  return 1;
}

const ClassSpec kTokenizerSpec = {
    "skyrun.Tokenizer",
    "Tokenizer",
    {
        {"encode", safe<tok_encode>},
        {"decode", safe<tok_decode>},
        {"token_to_id", safe<tok_token_to_id>},
        {"id_to_token", safe<tok_id_to_token>},
        {"vocab_size", safe<tok_vocab_size>},
        {"num_special_tokens_to_add", safe<tok_num_special_tokens_to_add>},
        {"added_tokens", safe<tok_added_tokens>},
        {"add_tokens", safe<tok_add_tokens>},
        {"source", safe<tok_source>},
        {"to_json", safe<tok_to_json>},
        {"set_post_processor", safe<tok_set_post_processor>},
    },
    {},
    safe<tok_tostring>,
};

// Pushes a JSON value as Lua (null: nil). Pushes 1.
void push_json(lua_State* L, const rapidjson::Value& v, int depth) {
  if (depth > 200) throw Error("JSON nested too deeply");
  luaL_checkstack(L, 4, "push_json");
  if (v.IsNull()) lua_pushnil(L);
  else if (v.IsBool()) lua_pushboolean(L, v.GetBool());
  else if (v.IsNumber()) lua_pushnumber(L, v.GetDouble());
  else if (v.IsString()) lua_pushlstring(L, v.GetString(), v.GetStringLength());
  else if (v.IsArray()) {
    lua_createtable(L, static_cast<int>(v.Size()), 0);  // [t]
    for (rapidjson::SizeType i = 0; i < v.Size(); i++) {
      push_json(L, v[i], depth + 1);                     // [t, x]
      lua_rawseti(L, -2, static_cast<int>(i + 1));       // [t]
    }
  } else {
    lua_createtable(L, 0, static_cast<int>(v.MemberCount()));  // [t]
    for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
      lua_pushlstring(L, it->name.GetString(), it->name.GetStringLength());  // [t, k]
      push_json(L, it->value, depth + 1);                                     // [t, k, v]
      lua_rawset(L, -3);                                                       // [t]
    }
  }
}

// read_json(path) -> table | nil when the file does not exist; errors name the file and offset.
int tok_read_json(lua_State* L) {
  std::string path(check_string_view(L, 1));
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    lua_pushnil(L);
    return 1;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  rapidjson::Document d;
  if (JsonParsed r = json_parse(d, text); !r)
    throw Error(path + ": invalid JSON at byte " + std::to_string(r.offset) + ": " + r.reason());
  push_json(L, d, 0);
  return 1;
}

int tok_hardware_threads(lua_State* L) {
  lua_pushnumber(L, std::max(1u, std::thread::hardware_concurrency()));
  return 1;
}

// ---- travelling to workers (src/wire): a tokenizer goes as its file path (or its JSON text when
// built from a string) plus its added tokens, and is loaded again on the other side.

void put_u32(std::string& out, uint32_t v) {
  for (int k = 0; k < 4; k++) out.push_back(static_cast<char>((v >> (8 * k)) & 0xFF));
}
void put_str(std::string& out, std::string_view s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}
struct Reader {
  std::string_view b;
  size_t p = 0;
  uint32_t u32() {
    if (p + 4 > b.size()) throw wire::WireError("tokenizer: truncated bytes");
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) v |= static_cast<uint32_t>(static_cast<unsigned char>(b[p + k])) << (8 * k);
    p += 4;
    return v;
  }
  std::string_view str() {
    uint32_t n = u32();
    if (n > b.size() - p) throw wire::WireError("tokenizer: truncated bytes");
    std::string_view s = b.substr(p, n);
    p += n;
    return s;
  }
};

std::string tokenizer_wire_encode(lua_State* L, int idx) {
  Handle* h = class_test_handle(L, idx, kTokenizerSpec);
  if (!h || !h->ptr) throw wire::WireError("tokenizer is closed");
  const Tokenizer& t = *static_cast<Tokenizer*>(h->ptr.get());
  std::string out;
  out.push_back(t.from_file_path() ? 'F' : 'J');
  put_str(out, t.from_file_path() ? t.source() : t.json_text());
  put_str(out, t.source());
  const auto& added = t.added_tokens();
  put_str(out, t.post_processor_override());
  put_u32(out, static_cast<uint32_t>(added.size()));
  for (const auto& a : added) {
    put_str(out, a.content);
    put_u32(out, (a.special ? 1u : 0u) | (a.single_word ? 2u : 0u) | (a.lstrip ? 4u : 0u) | (a.rstrip ? 8u : 0u) |
                     (a.normalized ? 16u : 0u));
  }
  return out;
}

void tokenizer_wire_decode(lua_State* L, std::string_view bytes) {
  Reader r{bytes};
  if (bytes.empty()) throw wire::WireError("tokenizer: empty bytes");
  char kind = bytes[0];
  r.p = 1;
  std::string payload(r.str());
  std::string source(r.str());
  std::string post(r.str());
  uint32_t n = r.u32();
  std::vector<tok::AddedToken> added;
  for (uint32_t i = 0; i < n; i++) {
    tok::AddedToken a;
    a.content.assign(r.str());
    uint32_t f = r.u32();
    a.special = f & 1, a.single_word = f & 2, a.lstrip = f & 4, a.rstrip = f & 8, a.normalized = f & 16;
    added.push_back(std::move(a));
  }
  std::shared_ptr<Tokenizer> t;
  try {
    t = kind == 'F' ? Tokenizer::from_file(payload) : Tokenizer::from_json(payload, source);
  } catch (const std::exception& e) {
    throw wire::WireError(std::string("tokenizer could not be loaded here: ") + e.what());
  }
  t->add_tokens(added);
  if (!post.empty()) t->set_post_processor_json(post);
  class_register(L, kTokenizerSpec);
  class_push(L, kTokenizerSpec, t);
}

const bool kWireCodecRegistered = [] {
  wire::register_userdata_codec("skyrun.Tokenizer", {tokenizer_wire_encode, tokenizer_wire_decode, "tokenizer"});
  return true;
}();

}  // namespace
}  // namespace sky

extern "C" int luaopen_tokenizers_core(lua_State* L) {
  sky::class_register(L, sky::kTokenizerSpec);
  static const luaL_Reg fns[] = {
      {"from_file", sky::safe<sky::tok_from_file>},
      {"from_string", sky::safe<sky::tok_from_string>},
      {"hardware_threads", sky::tok_hardware_threads},
      {"read_json", sky::safe<sky::tok_read_json>},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0, 3);  // [m]
  luaL_register(L, nullptr, fns);
  return 1;
}

SKY_NATIVE_MODULE("tokenizers.core", luaopen_tokenizers_core);
