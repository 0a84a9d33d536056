// The tokenizer pipeline: reading tokenizer.json (errors name the JSON path), the added
// vocabulary (special tokens, single_word/lstrip/rstrip/normalized), encode = added-token
// extraction + normalize + pre-tokenize + model + offsets, truncation, post-processing, padding,
// batches on threads, and decode.
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <algorithm>
#include <atomic>
#include <tuple>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "host/json.hpp"
#include "tokenize/components.hpp"

namespace sky::tok {

// ---- JsonAt ------------------------------------------------------------------------------------

namespace {
struct JsonError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* json_kind(const rapidjson::Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsBool()) return "a boolean";
  if (v.IsNumber()) return "a number";
  if (v.IsString()) return "a string";
  if (v.IsArray()) return "an array";
  return "an object";
}
}  // namespace

void JsonAt::fail(const std::string& what) const { throw JsonError((path.empty() ? std::string("(top level)") : path) + ": " + what); }

bool JsonAt::has(const char* key) const { return v.IsObject() && v.HasMember(key); }

void JsonAt::expect_object() const {
  if (!v.IsObject()) fail(std::string("expected an object, got ") + json_kind(v));
}

JsonAt JsonAt::at(const char* key) const {
  expect_object();
  auto it = v.FindMember(key);
  std::string p = path.empty() ? key : path + "." + key;
  if (it == v.MemberEnd()) throw JsonError(p + ": missing");
  return JsonAt{it->value, p};
}

std::optional<JsonAt> JsonAt::opt(const char* key) const {
  expect_object();
  auto it = v.FindMember(key);
  if (it == v.MemberEnd() || it->value.IsNull()) return std::nullopt;
  return JsonAt{it->value, path.empty() ? key : path + "." + key};
}

JsonAt JsonAt::at(size_t i) const {
  if (!v.IsArray()) fail(std::string("expected an array, got ") + json_kind(v));
  if (i >= v.Size()) fail("index " + std::to_string(i) + " out of range");
  return JsonAt{v[static_cast<rapidjson::SizeType>(i)], path + "[" + std::to_string(i) + "]"};
}

size_t JsonAt::size() const {
  if (!v.IsArray()) fail(std::string("expected an array, got ") + json_kind(v));
  return v.Size();
}

std::string JsonAt::str() const {
  if (!v.IsString()) fail(std::string("expected a string, got ") + json_kind(v));
  return std::string(v.GetString(), v.GetStringLength());
}
std::string JsonAt::str(const char* key) const { return at(key).str(); }
std::string JsonAt::str_or(const char* key, const std::string& def) const {
  auto o = opt(key);
  return o ? o->str() : def;
}
bool JsonAt::boolean_or(const char* key, bool def) const {
  auto o = opt(key);
  if (!o) return def;
  if (!o->v.IsBool()) o->fail(std::string("expected a boolean, got ") + json_kind(o->v));
  return o->v.GetBool();
}
double JsonAt::num() const {
  if (!v.IsNumber()) fail(std::string("expected a number, got ") + json_kind(v));
  return v.GetDouble();
}
uint64_t JsonAt::uint() const {
  if (!v.IsUint64()) fail(std::string("expected a non-negative integer, got ") + (v.IsNumber() ? "another number" : json_kind(v)));
  return v.GetUint64();
}
uint64_t JsonAt::uint_or(const char* key, uint64_t def) const {
  auto o = opt(key);
  return o ? o->uint() : def;
}
std::string JsonAt::type_name() const {
  expect_object();
  return at("type").str();
}

// ---- the added vocabulary ------------------------------------------------------------------------

namespace {

// A byte trie over the added tokens' patterns: leftmost-longest matching as daachorse does.
struct TokenTrie {
  struct Node {
    std::vector<std::pair<unsigned char, uint32_t>> next;
    int64_t id = -1;
  };
  std::vector<Node> nodes{Node{}};
  bool first[256] = {};
  bool empty = true;

  void add(std::string_view pattern, uint32_t id) {
    if (pattern.empty()) return;
    uint32_t n = 0;
    for (unsigned char c : pattern) {
      uint32_t child = UINT32_MAX;
      for (auto& [b, ch] : nodes[n].next)
        if (b == c) { child = ch; break; }
      if (child == UINT32_MAX) {
        child = static_cast<uint32_t>(nodes.size());
        nodes[n].next.push_back({c, child});
        nodes.push_back(Node{});
      }
      n = child;
    }
    nodes[n].id = id;
    first[static_cast<unsigned char>(pattern[0])] = true;
    empty = false;
  }
  // Longest pattern starting at i: (end, id) or end == 0.
  std::pair<size_t, int64_t> longest_at(std::string_view s, size_t i) const {
    uint32_t n = 0;
    std::pair<size_t, int64_t> best{0, -1};
    for (size_t k = i; k < s.size(); k++) {
      uint32_t child = UINT32_MAX;
      for (auto& [b, ch] : nodes[n].next)
        if (b == static_cast<unsigned char>(s[k])) { child = ch; break; }
      if (child == UINT32_MAX) break;
      n = child;
      if (nodes[n].id >= 0) best = {k + 1, nodes[n].id};
    }
    return best;
  }
};

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t p = s.size() - 1;
  while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) p--;
  size_t len;
  return uc_is_word(utf8_next(s, p, &len));
}
bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t len;
  return uc_is_word(utf8_next(s, 0, &len));
}
size_t space_leftmost_at_end(std::string_view s) {
  size_t e = s.size();
  while (e > 0) {
    size_t p = e - 1;
    while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) p--;
    size_t len;
    if (!uc_is_whitespace(utf8_next(s, p, &len))) break;
    e = p;
  }
  return e;
}
size_t space_rightmost_at_start(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t len;
    if (!uc_is_whitespace(utf8_next(s, i, &len))) break;
    i += len;
  }
  return i;
}

}  // namespace

struct Tokenizer::AddedVocab {
  std::unordered_map<std::string, uint32_t> map;  // content -> id
  std::map<uint32_t, AddedToken> rmap;            // id -> token
  std::unordered_map<uint32_t, std::string> normalized_cache;
  std::unordered_set<std::string> special_set;
  TokenTrie raw, norm;

  // HF AddedVocabulary::find_matches: (id or -1, begin, end) covering s.
  void find_matches(std::string_view s, const TokenTrie& trie, std::vector<std::tuple<int64_t, size_t, size_t>>& out) const {
    out.clear();
    if (s.empty()) { out.push_back({-1, 0, 0}); return; }
    if (trie.empty) { out.push_back({-1, 0, s.size()}); return; }
    size_t start_offset = 0;
    size_t i = 0;
    while (i < s.size()) {
      if (!trie.first[static_cast<unsigned char>(s[i])]) { i++; continue; }
      auto [end, id] = trie.longest_at(s, i);
      if (end == 0) { i++; continue; }
      size_t start = i, stop = end;
      i = end;  // the automaton resumes after the match
      const AddedToken& tok = rmap.at(static_cast<uint32_t>(id));
      if (tok.single_word) {
        bool start_space = start == 0 || !ends_with_word(s.substr(0, start));
        bool stop_space = stop == s.size() || !starts_with_word(s.substr(stop));
        if (!stop_space || !start_space) continue;
      }
      if (tok.lstrip) start = std::max(space_leftmost_at_end(s.substr(0, start)), start_offset);
      if (tok.rstrip) stop += space_rightmost_at_start(s.substr(stop));
      if (start_offset < start) out.push_back({-1, start_offset, start});
      out.push_back({id, start, stop});
      start_offset = stop;
    }
    if (start_offset != s.size()) out.push_back({-1, start_offset, s.size()});
  }
};

Tokenizer::Tokenizer() : av_(std::make_unique<AddedVocab>()) {}
Tokenizer::~Tokenizer() = default;

void Tokenizer::refresh_added() {
  av_->raw = TokenTrie{};
  av_->norm = TokenTrie{};
  for (auto& [id, tok] : av_->rmap) {
    if (tok.normalized) {
      auto it = av_->normalized_cache.find(id);
      av_->norm.add(it != av_->normalized_cache.end() ? it->second : tok.content, id);
    } else {
      av_->raw.add(tok.content, id);
    }
  }
  added_.clear();
  for (auto& [id, tok] : av_->rmap) {
    AddedToken t = tok;
    t.id = id;
    added_.push_back(t);
  }
}

size_t Tokenizer::add_tokens(const std::vector<AddedToken>& tokens) {
  size_t vs = model_->vocab_size();
  uint32_t next_id = static_cast<uint32_t>(vs);
  if (!av_->rmap.empty()) {
    uint32_t max = av_->rmap.rbegin()->first;
    next_id = (max >= vs || vs == 0) ? max + 1 : static_cast<uint32_t>(vs);
  }
  size_t added = 0;
  for (const AddedToken& token : tokens) {
    if (token.content.empty()) continue;
    auto known = av_->map.find(token.content);
    if (known != av_->map.end()) {
      auto r = av_->rmap.find(known->second);
      if (r != av_->rmap.end() && r->second.single_word == token.single_word && r->second.lstrip == token.lstrip &&
          r->second.rstrip == token.rstrip && r->second.normalized == token.normalized && r->second.special == token.special)
        continue;
    }
    uint32_t id;
    if (auto existing = token_to_id(token.content)) id = *existing;
    else id = next_id++;
    if (token.normalized && normalizer_) {
      Normalized n = Normalized::from_original(token.content);
      normalizer_->normalize(n);
      if (n.text != token.content) av_->normalized_cache[id] = n.text;
    }
    av_->map[token.content] = id;
    if (token.special) av_->special_set.insert(token.content);
    AddedToken t = token;
    t.id = id;
    av_->rmap[id] = t;
    added++;
  }
  refresh_added();
  return added;
}

std::optional<uint32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = av_->map.find(std::string(token));
  if (it != av_->map.end()) return it->second;
  return model_->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(uint32_t id) const {
  auto it = av_->rmap.find(id);
  if (it != av_->rmap.end()) {
    auto c = av_->normalized_cache.find(id);
    return c != av_->normalized_cache.end() ? c->second : it->second.content;
  }
  if (const std::string* s = model_->id_to_token(id)) return *s;
  return std::nullopt;
}

size_t Tokenizer::vocab_size(bool with_added) const {
  size_t n = model_->vocab_size();
  if (with_added)
    for (auto& [id, tok] : av_->rmap)
      if (!model_->id_to_token(id)) n++;
  return n;
}

bool Tokenizer::is_special_id(uint32_t id) const {
  auto t = id_to_token(id);
  return t && av_->special_set.count(*t);
}

size_t Tokenizer::num_special_tokens_to_add(bool is_pair) const {
  return post_processor_ ? post_processor_->added_tokens(is_pair) : 0;
}

// ---- loading -----------------------------------------------------------------------------------------

std::shared_ptr<Tokenizer> Tokenizer::from_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read tokenizer file " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  auto t = parse(ss.str(), path);
  t->original_json_ = ss.str();
  return t;
}

static Direction direction_from(const JsonAt& j, const char* key) {
  std::string d = j.str_or(key, "Right");
  if (d == "Right") return Direction::Right;
  if (d == "Left") return Direction::Left;
  j.at(key).fail("expected \"Right\" or \"Left\"");
}

std::shared_ptr<Tokenizer> Tokenizer::from_json(std::string_view json, const std::string& source) {
  auto t = parse(json, source);
  t->json_.assign(json);
  t->original_json_.assign(json);
  return t;
}

std::shared_ptr<Tokenizer> Tokenizer::parse(std::string_view json, const std::string& source) {
  rapidjson::Document doc;
  // Invalid UTF-8 is refused here (as serde_json does), so every string after this is valid.
  if (JsonParsed r = json_parse<rapidjson::kParseFullPrecisionFlag | rapidjson::kParseValidateEncodingFlag>(doc, json); !r)
    throw std::runtime_error(source + ": invalid JSON at byte " + std::to_string(r.offset) + ": " + r.reason());
  std::shared_ptr<Tokenizer> t(new Tokenizer());
  t->source_ = source;
  try {
    JsonAt root{doc, ""};
    root.expect_object();
    if (auto v = root.opt("version")) {
      if (v->str() != "1.0") v->fail("unknown tokenizer version '" + v->str() + "'");
    }
    if (auto n = root.opt("normalizer")) t->normalizer_ = normalizer_from_json(*n);
    if (auto p = root.opt("pre_tokenizer")) t->pre_tokenizer_ = pre_tokenizer_from_json(*p);
    t->model_ = model_from_json(root.at("model"));
    if (auto p = root.opt("post_processor")) t->post_processor_ = post_processor_from_json(*p);
    if (auto d = root.opt("decoder")) t->decoder_ = decoder_from_json(*d);
    if (auto tr = root.opt("truncation")) {
      Truncation x;
      x.max_length = tr->uint_or("max_length", 512);
      x.stride = tr->uint_or("stride", 0);
      std::string s = tr->str_or("strategy", "LongestFirst");
      if (s == "LongestFirst") x.strategy = TruncationStrategy::LongestFirst;
      else if (s == "OnlyFirst") x.strategy = TruncationStrategy::OnlyFirst;
      else if (s == "OnlySecond") x.strategy = TruncationStrategy::OnlySecond;
      else tr->at("strategy").fail("unknown truncation strategy '" + s + "'");
      x.direction = direction_from(*tr, "direction");
      t->truncation_ = x;
    }
    if (auto pd = root.opt("padding")) {
      Padding x;
      JsonAt st = pd->at("strategy");
      if (st.v.IsString()) {
        if (st.str() != "BatchLongest") st.fail("unknown padding strategy '" + st.str() + "'");
      } else if (st.has("Fixed")) {
        x.to_longest = false;
        x.length = st.at("Fixed").uint();
      } else {
        st.fail("expected \"BatchLongest\" or {\"Fixed\": n}");
      }
      x.direction = direction_from(*pd, "direction");
      x.pad_to_multiple_of = pd->uint_or("pad_to_multiple_of", 0);
      x.pad_id = static_cast<uint32_t>(pd->uint_or("pad_id", 0));
      x.pad_type_id = static_cast<uint32_t>(pd->uint_or("pad_type_id", 0));
      x.pad_token = pd->str_or("pad_token", "[PAD]");
      t->padding_ = x;
    }
    std::vector<AddedToken> tokens;
    if (auto at = root.opt("added_tokens")) {
      for (size_t i = 0; i < at->size(); i++) {
        JsonAt e = at->at(i);
        e.expect_object();
        AddedToken a;
        a.content = e.str("content");
        a.id = static_cast<uint32_t>(e.uint_or("id", 0));
        a.special = e.boolean_or("special", false);
        a.single_word = e.boolean_or("single_word", false);
        a.lstrip = e.boolean_or("lstrip", false);
        a.rstrip = e.boolean_or("rstrip", false);
        a.normalized = e.boolean_or("normalized", !a.special);
        tokens.push_back(a);
      }
    }
    t->add_tokens(tokens);
  } catch (const JsonError& e) {
    throw std::runtime_error(source + ": " + e.what());
  }
  return t;
}

std::string Tokenizer::to_json() const {
  rapidjson::Document doc;
  if (!json_parse<rapidjson::kParseFullPrecisionFlag>(doc, original_json_) || !doc.IsObject())
    throw std::runtime_error(source_ + ": the loaded JSON cannot be read again");
  auto& alloc = doc.GetAllocator();
  rapidjson::Value added(rapidjson::kArrayType);
  std::vector<const AddedToken*> sorted;
  for (const auto& a : added_) sorted.push_back(&a);
  std::stable_sort(sorted.begin(), sorted.end(), [](auto* x, auto* y) { return x->id < y->id; });
  for (const AddedToken* a : sorted) {
    rapidjson::Value e(rapidjson::kObjectType);
    e.AddMember("id", a->id, alloc);
    e.AddMember("content", rapidjson::Value(a->content.c_str(), static_cast<rapidjson::SizeType>(a->content.size()), alloc), alloc);
    e.AddMember("single_word", a->single_word, alloc);
    e.AddMember("lstrip", a->lstrip, alloc);
    e.AddMember("rstrip", a->rstrip, alloc);
    e.AddMember("normalized", a->normalized, alloc);
    e.AddMember("special", a->special, alloc);
    added.PushBack(e, alloc);
  }
  if (doc.HasMember("added_tokens")) doc["added_tokens"] = added;
  else doc.AddMember("added_tokens", added, alloc);
  if (!post_processor_json_.empty()) {
    rapidjson::Document pp(&alloc);
    if (!json_parse(pp, post_processor_json_)) throw std::runtime_error("post_processor: the JSON cannot be read again");
    rapidjson::Value v(pp, alloc);
    if (doc.HasMember("post_processor")) doc["post_processor"] = v;
    else doc.AddMember("post_processor", v, alloc);
  }
  rapidjson::StringBuffer buf;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buf);
  w.SetIndent(' ', 2);
  doc.Accept(w);
  return std::string(buf.GetString(), buf.GetSize());
}

void Tokenizer::set_post_processor_json(std::string_view json) {
  rapidjson::Document doc;
  if (JsonParsed r = json_parse<rapidjson::kParseValidateEncodingFlag>(doc, json); !r)
    throw std::runtime_error("post_processor: invalid JSON at byte " + std::to_string(r.offset) + ": " + r.reason());
  try {
    post_processor_ = post_processor_from_json(JsonAt{doc, "post_processor"});
  } catch (const JsonError& e) {
    throw std::runtime_error(e.what());
  }
  post_processor_json_.assign(json);
}

// ---- encoding --------------------------------------------------------------------------------------

void Tokenizer::extract_added(std::string_view text, std::vector<Split>& splits) const {
  thread_local std::vector<std::tuple<int64_t, size_t, size_t>> m;
  splits.clear();
  Normalized whole = Normalized::from_original(text);
  // Pass 1: tokens matched on the original text.
  std::vector<Split> first;
  av_->find_matches(whole.text, av_->raw, m);
  if (m.size() == 1 && std::get<0>(m[0]) < 0) {
    first.push_back(Split{std::move(whole), -1});
  } else {
    for (auto& [id, b, e] : m) first.push_back(Split{whole.slice(b, e), id});
  }
  // Pass 2: normalize the rest, then match the normalized tokens.
  for (auto& s : first) {
    if (s.added_id >= 0) {
      if (!s.n.text.empty()) splits.push_back(std::move(s));
      continue;
    }
    if (normalizer_) normalizer_->normalize(s.n);
    av_->find_matches(s.n.text, av_->norm, m);
    if (m.size() == 1 && std::get<0>(m[0]) < 0) {
      if (!s.n.text.empty()) splits.push_back(std::move(s));
      continue;
    }
    for (auto& [id, b, e] : m) {
      if (b == e) continue;
      splits.push_back(Split{s.n.slice(b, e), id});
    }
  }
}

namespace {
// Byte offsets in the original text to char offsets (HF BytesToCharOffsetConverter).
struct CharOffsets {
  std::vector<uint32_t> map;  // byte -> char index; empty when the text is ASCII
  size_t len = 0;
  explicit CharOffsets(std::string_view s) : len(s.size()) {
    bool ascii = true;
    for (char c : s)
      if (static_cast<unsigned char>(c) >= 0x80) { ascii = false; break; }
    if (ascii) return;
    map.resize(s.size());
    uint32_t ci = 0;
    for (size_t i = 0; i < s.size(); i++) {
      if (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) ci++;
      map[i] = ci;
    }
  }
  Offsets convert(Offsets o) const {
    if (map.empty() || o.first >= len) return o;
    uint32_t start = map[o.first];
    if (o.second < len) return {start, map[o.second]};
    uint32_t last = o.second >= 1 && o.second - 1 < len ? map[o.second - 1] : start;
    return {start, last + 1};
  }
};
}  // namespace

Encoding Tokenizer::encode_sequence(std::string_view text, uint32_t type_id, bool want_tokens) const {
  std::string fixed;
  if (!utf8_valid(text)) {
    fixed = utf8_lossy(text);
    text = fixed;
  }
  thread_local std::vector<Split> splits;
  thread_local std::vector<Token> toks;
  extract_added(text, splits);
  if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(splits);
  // Char offsets only when asked for (want_tokens): the ids never need them.
  CharOffsets conv(want_tokens ? text : std::string_view());
  Encoding e;
  e.ids.reserve(text.size() / 3 + 4);
  for (auto& s : splits) {
    if (s.added_id >= 0) {
      e.ids.push_back(static_cast<uint32_t>(s.added_id));
      if (want_tokens) e.tokens.push_back(s.n.text);
      e.offsets.push_back(conv.convert(s.n.orig));
      continue;
    }
    toks.clear();
    model_->tokenize(s.n.text, toks);
    for (auto& t : toks) {
      e.ids.push_back(t.id);
      if (want_tokens) {
        if (!t.value.empty()) {
          e.tokens.push_back(std::move(t.value));
        } else {
          const std::string* v = model_->id_to_token(t.id);
          e.tokens.push_back(v ? *v : std::string());
        }
      }
      e.offsets.push_back(conv.convert(s.n.original_range(t.offsets.first, t.offsets.second)));
    }
  }
  size_t n = e.ids.size();
  e.type_ids.assign(n, type_id);
  e.special_tokens_mask.assign(n, 0);
  e.attention_mask.assign(n, 1);
  e.sequence_ids.assign(n, 0);
  return e;
}

namespace {
void encoding_truncate(Encoding& e, size_t max_len, Direction dir) {
  if (e.size() <= max_len) return;
  auto cut = [&](auto& v) {
    if (v.size() < e.ids.size()) return;
    if (dir == Direction::Right) v.resize(max_len);
    else v.erase(v.begin(), v.end() - static_cast<std::ptrdiff_t>(max_len));
  };
  cut(e.type_ids);
  cut(e.tokens);
  cut(e.offsets);
  cut(e.special_tokens_mask);
  cut(e.attention_mask);
  cut(e.sequence_ids);
  cut(e.ids);
}

void encoding_pad(Encoding& e, size_t target, const Padding& p) {
  if (e.size() >= target) return;
  size_t k = target - e.size();
  bool left = p.direction == Direction::Left;
  auto pad = [&](auto& v, auto value) {
    if (v.size() < e.ids.size()) return;
    if (left) v.insert(v.begin(), k, value);
    else v.insert(v.end(), k, value);
  };
  pad(e.type_ids, p.pad_type_id);
  pad(e.tokens, p.pad_token);
  pad(e.offsets, Offsets{0, 0});
  pad(e.special_tokens_mask, uint8_t(1));
  pad(e.attention_mask, uint8_t(0));
  pad(e.sequence_ids, int32_t(-1));
  pad(e.ids, p.pad_id);
}
}  // namespace

void Tokenizer::truncate_encodings(Encoding& a, Encoding* b, const Truncation& t) {
  if (t.max_length == 0) {
    encoding_truncate(a, 0, t.direction);
    if (b) encoding_truncate(*b, 0, t.direction);
    return;
  }
  size_t total = a.size() + (b ? b->size() : 0);
  if (total <= t.max_length) return;
  size_t to_remove = total - t.max_length;
  switch (t.strategy) {
    case TruncationStrategy::LongestFirst:
      if (b) {
        size_t n1 = a.size(), n2 = b->size();
        bool swap = false;
        if (n1 > n2) { std::swap(n1, n2); swap = true; }
        // As HF tokenizers 0.23.2 behaves (measured through npm): when even the shorter one is
        // over the budget, the first sequence gets the smaller half, whichever is longer.
        bool both_long = n1 > t.max_length;
        if (both_long) n2 = n1;
        else n2 = std::max(n1, t.max_length - n1);
        if (n1 + n2 > t.max_length) {
          n1 = t.max_length / 2;
          n2 = n1 + t.max_length % 2;
        }
        if (swap && !both_long) std::swap(n1, n2);
        encoding_truncate(a, n1, t.direction);
        encoding_truncate(*b, n2, t.direction);
      } else {
        encoding_truncate(a, t.max_length, t.direction);
      }
      break;
    case TruncationStrategy::OnlyFirst:
    case TruncationStrategy::OnlySecond: {
      Encoding* target = t.strategy == TruncationStrategy::OnlyFirst ? &a : b;
      if (!target) throw std::runtime_error("truncation only_second needs a second sequence");
      if (target->size() <= to_remove)
        throw std::runtime_error("truncation: the sequence to truncate is too short for max_length " + std::to_string(t.max_length));
      encoding_truncate(*target, target->size() - to_remove, t.direction);
      break;
    }
  }
}

void Tokenizer::pad_encodings(std::vector<Encoding>& encs, const Padding& p) {
  if (encs.empty()) return;
  size_t len = p.length;
  if (p.to_longest) {
    len = 0;
    for (auto& e : encs) len = std::max(len, e.size());
  }
  if (p.pad_to_multiple_of > 0 && len % p.pad_to_multiple_of > 0) len += p.pad_to_multiple_of - len % p.pad_to_multiple_of;
  for (auto& e : encs) encoding_pad(e, len, p);
}

Encoding Tokenizer::post_process(Encoding a, std::optional<Encoding> b, const EncodeOptions& opts) const {
  if (opts.truncation) {
    Truncation t = *opts.truncation;
    size_t added = opts.add_special_tokens ? num_special_tokens_to_add(b.has_value()) : 0;
    t.max_length = t.max_length > added ? t.max_length - added : 0;
    if (added > 0 && opts.truncation->max_length <= added) t.max_length = 0;
    truncate_encodings(a, b ? &*b : nullptr, t);
  }
  std::vector<Encoding> encs;
  encs.push_back(std::move(a));
  if (b) encs.push_back(std::move(*b));
  for (size_t i = 0; i < encs.size(); i++) encs[i].sequence_ids.assign(encs[i].size(), static_cast<int32_t>(i));
  if (post_processor_) post_processor_->process(encs, opts.add_special_tokens);
  if (encs.size() > 1) default_process(encs);
  if (opts.padding) pad_encodings(encs, *opts.padding);
  return std::move(encs[0]);
}

Encoding Tokenizer::encode(std::string_view text, const EncodeOptions& opts) const {
  return post_process(encode_sequence(text, 0, opts.want_tokens), std::nullopt, opts);
}

Encoding Tokenizer::encode_pair(std::string_view a, std::string_view b, const EncodeOptions& opts) const {
  return post_process(encode_sequence(a, 0, opts.want_tokens), encode_sequence(b, 1, opts.want_tokens), opts);
}

std::vector<Encoding> Tokenizer::encode_batch(const std::vector<std::string_view>& texts,
                                              const std::vector<std::string_view>* pairs, const EncodeOptions& opts,
                                              int threads) const {
  if (pairs && pairs->size() != texts.size()) throw std::runtime_error("text and text_pair batches differ in length");
  std::vector<Encoding> out(texts.size());
  EncodeOptions one = opts;
  one.padding.reset();
  auto work = [&](size_t b, size_t e) {
    for (size_t i = b; i < e; i++)
      out[i] = pairs ? encode_pair(texts[i], (*pairs)[i], one) : encode(texts[i], one);
  };
  size_t n = texts.size();
  size_t nt = std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(std::max(threads, 1)), n / 8 + 1));
  if (nt <= 1) {
    work(0, n);
  } else {
    std::vector<std::thread> pool;
    std::vector<std::exception_ptr> errors(nt);
    // Interleaved chunks keep the threads busy when lengths vary.
    std::atomic<size_t> next{0};
    const size_t chunk = 16;
    for (size_t k = 0; k < nt; k++) {
      pool.emplace_back([&, k]() {
        try {
          for (;;) {
            size_t b = next.fetch_add(chunk);
            if (b >= n) break;
            work(b, std::min(n, b + chunk));
          }
        } catch (...) {
          errors[k] = std::current_exception();
        }
      });
    }
    for (auto& th : pool) th.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }
  if (opts.padding) pad_encodings(out, *opts.padding);
  return out;
}

// ---- decoding --------------------------------------------------------------------------------------

std::string Tokenizer::decode(const std::vector<uint32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (uint32_t id : ids) {
    auto t = id_to_token(id);
    if (!t) continue;
    if (skip_special_tokens && av_->special_set.count(*t)) continue;
    tokens.push_back(std::move(*t));
  }
  if (!decoder_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); i++) {
      if (i) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  decoder_->decode_chain(tokens);
  std::string out;
  for (auto& t : tokens) out += t;
  return out;
}

}  // namespace sky::tok
