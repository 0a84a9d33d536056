// Models of HF tokenizers: BPE (merges in both JSON forms, byte_fallback, ignore_merges,
// continuing_subword_prefix, end_of_word_suffix, a word cache), WordPiece, Unigram (Viterbi as
// HF's encode_optimized, fused unknowns), WordLevel.
#include <algorithm>
#include <limits>
#include <mutex>
#include <queue>
#include <stdexcept>
#include <unordered_map>

#include "tokenize/components.hpp"

namespace sky::tok {

namespace {

struct StrHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept {
    // FNV-1a: short tokens, no need for more.
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};
using Vocab = std::unordered_map<std::string, uint32_t, StrHash, std::equal_to<>>;

// The vocab object of a model ({"token": id, ...}) and its reverse table.
void read_vocab(const JsonAt& j, Vocab& vocab, std::vector<std::string>& rev) {
  j.expect_object();
  vocab.reserve(j.v.MemberCount());
  for (auto it = j.v.MemberBegin(); it != j.v.MemberEnd(); ++it) {
    std::string key(it->name.GetString(), it->name.GetStringLength());
    if (!it->value.IsUint()) JsonAt{it->value, j.path + "[\"" + key + "\"]"}.fail("expected a non-negative integer id");
    uint32_t id = it->value.GetUint();
    if (id > 50'000'000) JsonAt{it->value, j.path + "[\"" + key + "\"]"}.fail("id out of range");
    vocab[key] = id;
    if (rev.size() <= id) rev.resize(id + 1);
    rev[id] = key;
  }
}

template <class M>
std::optional<uint32_t> vocab_find(const M& vocab, std::string_view s) {
  auto it = vocab.find(s);
  if (it == vocab.end()) return std::nullopt;
  return it->second;
}

// ---- BPE --------------------------------------------------------------------------------------------

struct Symbol {
  uint32_t id;
  int32_t prev, next;
  uint32_t start, len;  // bytes in the word
};

struct MergeCandidate {
  uint32_t rank, pos, new_id;
  bool operator>(const MergeCandidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

struct BPE : Model {
  Vocab vocab;
  std::vector<std::string> rev;
  std::unordered_map<uint64_t, std::pair<uint32_t, uint32_t>> merges;  // (a<<32|b) -> (rank, new id)
  std::optional<std::string> unk_token;
  std::string prefix, suffix;  // continuing_subword_prefix, end_of_word_suffix
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  uint32_t byte_ids[256];
  bool has_byte_ids = false;

  // Word cache: word -> (id, byte length) pieces. Sharded to let threads share it.
  static constexpr size_t kShards = 16;
  static constexpr size_t kMaxPerShard = 8192;
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<std::pair<uint32_t, uint32_t>>, StrHash, std::equal_to<>> map;
  };
  mutable Shard shards[kShards];

  std::optional<uint32_t> token_to_id(std::string_view t) const override { return vocab_find(vocab, t); }
  const std::string* id_to_token(uint32_t id) const override { return id < rev.size() && !rev[id].empty() ? &rev[id] : nullptr; }
  size_t vocab_size() const override { return vocab.size(); }

  void merge_word(std::string_view w, std::vector<std::pair<uint32_t, uint32_t>>& pieces) const {
    thread_local std::vector<Symbol> syms;
    thread_local std::string buf;
    syms.clear();
    std::optional<std::pair<uint32_t, uint32_t>> unk;  // (id, len)
    auto add = [&](uint32_t id, uint32_t len) {
      uint32_t start = syms.empty() ? 0 : syms.back().start + syms.back().len;
      int32_t idx = static_cast<int32_t>(syms.size());
      syms.push_back({id, idx - 1, idx + 1, start, len});
    };
    size_t i = 0;
    while (i < w.size()) {
      size_t len;
      utf8_next(w, i, &len);
      bool first = i == 0, last = i + len >= w.size();
      std::string_view s = w.substr(i, len);
      std::optional<uint32_t> id;
      if ((first || prefix.empty()) && (!last || suffix.empty())) {
        id = vocab_find(vocab, s);
      } else {
        buf.clear();
        if (!first) buf += prefix;
        buf += s;
        if (last) buf += suffix;
        id = vocab_find(vocab, buf);
        s = buf;
      }
      if (id) {
        if (unk) { add(unk->first, unk->second); unk.reset(); }
        add(*id, static_cast<uint32_t>(len));
      } else {
        bool done = false;
        if (byte_fallback && has_byte_ids) {
          bool all = true;
          for (unsigned char b : s) all = all && byte_ids[b] != UINT32_MAX;
          if (all) {
            // HF gives each byte token length 1 of the char's bytes (prefix/suffix bytes included).
            for (unsigned char b : s) add(byte_ids[b], 1);
            done = true;
          }
        }
        if (!done && unk_token) {
          auto uid = vocab_find(vocab, *unk_token);
          if (!uid) throw std::runtime_error("BPE: unk_token '" + *unk_token + "' is not in the vocabulary");
          if (unk && fuse_unk) {
            unk->second += static_cast<uint32_t>(len);
          } else {
            if (unk) add(unk->first, unk->second);
            unk = std::make_pair(*uid, static_cast<uint32_t>(len));
          }
        }
      }
      i += len;
    }
    if (unk) add(unk->first, unk->second);
    if (!syms.empty()) syms.back().next = -1;

    // Merge by rank, leftmost first (HF Word::merge_all without dropout).
    thread_local std::vector<MergeCandidate> heap;
    heap.clear();
    auto cmp = std::greater<MergeCandidate>();
    auto lookup = [&](uint32_t a, uint32_t b) -> const std::pair<uint32_t, uint32_t>* {
      auto it = merges.find((uint64_t(a) << 32) | b);
      return it == merges.end() ? nullptr : &it->second;
    };
    for (size_t k = 0; k + 1 < syms.size(); k++) {
      if (auto m = lookup(syms[k].id, syms[k + 1].id)) heap.push_back({m->first, uint32_t(k), m->second});
    }
    std::make_heap(heap.begin(), heap.end(), cmp);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), cmp);
      MergeCandidate top = heap.back();
      heap.pop_back();
      Symbol& cur = syms[top.pos];
      if (cur.len == 0 || cur.next == -1) continue;
      size_t next_pos = static_cast<size_t>(cur.next);
      Symbol right = syms[next_pos];
      auto m = lookup(cur.id, right.id);
      if (!m || m->second != top.new_id) continue;
      cur.id = top.new_id;
      cur.len += right.len;
      cur.next = right.next;
      syms[next_pos].len = 0;  // tag the right part as removed
      if (right.next > -1 && static_cast<size_t>(right.next) < syms.size()) syms[right.next].prev = static_cast<int32_t>(top.pos);
      if (cur.prev >= 0) {
        if (auto pm = lookup(syms[cur.prev].id, cur.id)) {
          heap.push_back({pm->first, uint32_t(cur.prev), pm->second});
          std::push_heap(heap.begin(), heap.end(), cmp);
        }
      }
      if (cur.next >= 0 && static_cast<size_t>(cur.next) < syms.size()) {
        if (auto nm = lookup(cur.id, syms[cur.next].id)) {
          heap.push_back({nm->first, top.pos, nm->second});
          std::push_heap(heap.begin(), heap.end(), cmp);
        }
      }
    }
    pieces.clear();
    for (auto& s : syms)
      if (s.len != 0) pieces.push_back({s.id, s.len});
  }

  void tokenize(std::string_view text, std::vector<Token>& out) const override {
    if (text.empty()) return;
    if (ignore_merges) {
      if (auto id = vocab_find(vocab, text)) {
        out.push_back({*id, {0, uint32_t(text.size())}, {}});
        return;
      }
    }
    thread_local std::vector<std::pair<uint32_t, uint32_t>> pieces;
    Shard& sh = shards[StrHash()(text) % kShards];
    bool hit = false;
    {
      std::lock_guard<std::mutex> lock(sh.mu);
      auto it = sh.map.find(text);
      if (it != sh.map.end()) {
        pieces = it->second;
        hit = true;
      }
    }
    if (!hit) {
      merge_word(text, pieces);
      if (text.size() < 256) {
        std::lock_guard<std::mutex> lock(sh.mu);
        if (sh.map.size() < kMaxPerShard) sh.map.emplace(std::string(text), pieces);
      }
    }
    uint32_t pos = 0;
    for (auto& [id, len] : pieces) {
      out.push_back({id, {pos, pos + len}, {}});
      pos += len;
    }
  }
};

// ---- WordPiece ---------------------------------------------------------------------------------------

struct WordPiece : Model {
  Vocab vocab;
  std::vector<std::string> rev;
  std::string unk_token = "[UNK]";
  std::string prefix = "##";
  size_t max_chars = 100;

  std::optional<uint32_t> token_to_id(std::string_view t) const override { return vocab_find(vocab, t); }
  const std::string* id_to_token(uint32_t id) const override { return id < rev.size() && !rev[id].empty() ? &rev[id] : nullptr; }
  size_t vocab_size() const override { return vocab.size(); }

  uint32_t unk_id() const {
    auto id = vocab_find(vocab, unk_token);
    if (!id) throw std::runtime_error("WordPiece: unk_token '" + unk_token + "' is not in the vocabulary");
    return *id;
  }

  void tokenize(std::string_view text, std::vector<Token>& out) const override {
    if (utf8_count(text) > max_chars) {
      out.push_back({unk_id(), {0, uint32_t(text.size())}, {}});
      return;
    }
    thread_local std::string buf;
    size_t first = out.size();
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.size();
      std::optional<uint32_t> found;
      while (start < end) {
        std::string_view sub = text.substr(start, end - start);
        if (start > 0) {
          buf.assign(prefix);
          buf.append(sub);
          found = vocab_find(vocab, buf);
        } else {
          found = vocab_find(vocab, sub);
        }
        if (found) break;
        // Drop the last char of the substring.
        size_t p = end - 1;
        while (p > start && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) p--;
        end = p;
      }
      if (!found) {
        out.resize(first);
        out.push_back({unk_id(), {0, uint32_t(text.size())}, {}});
        return;
      }
      out.push_back({*found, {uint32_t(start), uint32_t(end)}, {}});
      start = end;
    }
  }
};

// ---- WordLevel ---------------------------------------------------------------------------------------

struct WordLevel : Model {
  Vocab vocab;
  std::vector<std::string> rev;
  std::string unk_token = "<unk>";
  std::optional<uint32_t> token_to_id(std::string_view t) const override { return vocab_find(vocab, t); }
  const std::string* id_to_token(uint32_t id) const override { return id < rev.size() && !rev[id].empty() ? &rev[id] : nullptr; }
  size_t vocab_size() const override { return vocab.size(); }
  void tokenize(std::string_view text, std::vector<Token>& out) const override {
    if (auto id = vocab_find(vocab, text)) {
      out.push_back({*id, {0, uint32_t(text.size())}, {}});
      return;
    }
    auto unk = vocab_find(vocab, unk_token);
    if (!unk) throw std::runtime_error("WordLevel: unk_token '" + unk_token + "' is not in the vocabulary");
    out.push_back({*unk, {0, uint32_t(text.size())}, {}});
  }
};

// ---- Unigram -----------------------------------------------------------------------------------------

struct Unigram : Model {
  std::vector<std::pair<std::string, double>> pieces;
  Vocab ids;
  std::optional<uint32_t> unk_id;
  bool byte_fallback = false;
  double min_score = 0;
  // Byte trie: child of (node, byte) and the piece id ending at a node.
  std::unordered_map<uint64_t, uint32_t> children;
  std::vector<int32_t> node_piece{-1};

  std::optional<uint32_t> token_to_id(std::string_view t) const override { return vocab_find(ids, t); }
  const std::string* id_to_token(uint32_t id) const override { return id < pieces.size() ? &pieces[id].first : nullptr; }
  size_t vocab_size() const override { return pieces.size(); }

  void build() {
    min_score = std::numeric_limits<double>::infinity();
    for (size_t id = 0; id < pieces.size(); id++) {
      const std::string& p = pieces[id].first;
      ids[p] = static_cast<uint32_t>(id);
      if (pieces[id].second < min_score) min_score = pieces[id].second;
      uint32_t node = 0;
      for (unsigned char c : p) {
        uint64_t key = (uint64_t(node) << 8) | c;
        auto it = children.find(key);
        if (it == children.end()) {
          uint32_t nn = static_cast<uint32_t>(node_piece.size());
          node_piece.push_back(-1);
          children.emplace(key, nn);
          node = nn;
        } else {
          node = it->second;
        }
      }
      if (!p.empty()) node_piece[node] = static_cast<int32_t>(id);  // a duplicate piece: the last wins, as HF
    }
  }

  void tokenize(std::string_view s, std::vector<Token>& out) const override {
    if (s.empty()) return;
    struct Best { double score = 0; int64_t starts_at = -1; uint32_t id = 0; };
    thread_local std::vector<Best> best;
    best.assign(s.size() + 1, Best{});
    double unk_score = min_score - 10.0;
    size_t start = 0;
    while (start < s.size()) {
      double base = best[start].score;
      bool single = false;
      size_t mblen;
      utf8_next(s, start, &mblen);
      uint32_t node = 0;
      for (size_t k = start; k < s.size(); k++) {
        auto it = children.find((uint64_t(node) << 8) | static_cast<unsigned char>(s[k]));
        if (it == children.end()) break;
        node = it->second;
        if (node_piece[node] < 0) continue;
        size_t key_pos = k + 1;
        uint32_t id = static_cast<uint32_t>(node_piece[node]);
        double cand = pieces[id].second + base;
        Best& t = best[key_pos];
        if (t.starts_at < 0 || cand > t.score) {
          t.score = cand;
          t.starts_at = static_cast<int64_t>(start);
          t.id = id;
        }
        if (key_pos - start == mblen) single = true;
      }
      if (!single) {
        if (!unk_id) throw std::runtime_error("Unigram: the vocabulary has no unk_id for an unknown character");
        Best& t = best[start + mblen];
        double cand = unk_score + base;
        if (t.starts_at < 0 || cand > t.score) {
          t.score = cand;
          t.starts_at = static_cast<int64_t>(start);
          t.id = *unk_id;
        }
      }
      start += mblen;
    }
    // Backtrack, fusing consecutive unknowns.
    thread_local std::vector<std::pair<size_t, size_t>> spans;
    spans.clear();
    size_t end = s.size();
    std::optional<size_t> unk_end;
    while (end > 0) {
      const Best& node = best[end];
      size_t st = static_cast<size_t>(node.starts_at);
      if (unk_id && node.id == *unk_id) {
        if (!unk_end) unk_end = end;
      } else {
        if (unk_end) { spans.push_back({end, *unk_end}); unk_end.reset(); }
        spans.push_back({st, end});
      }
      end = st;
    }
    if (unk_end) spans.push_back({0, *unk_end});
    for (size_t k = spans.size(); k-- > 0;) {
      auto [b, e] = spans[k];
      std::string_view piece = s.substr(b, e - b);
      auto id = vocab_find(ids, piece);
      if (id) {
        out.push_back({*id, {uint32_t(b), uint32_t(e)}, {}});
        continue;
      }
      if (byte_fallback) {
        bool all = true;
        char name[8];
        std::vector<uint32_t> bytes;
        for (unsigned char c : piece) {
          snprintf(name, sizeof name, "<0x%02X>", c);
          auto bid = vocab_find(ids, name);
          if (!bid) { all = false; break; }
          bytes.push_back(*bid);
        }
        if (all) {
          for (uint32_t bid : bytes) out.push_back({bid, {uint32_t(b), uint32_t(e)}, {}});
          continue;
        }
      }
      out.push_back({*unk_id, {uint32_t(b), uint32_t(e)}, std::string(piece)});
    }
  }
};

std::optional<std::string> opt_string(const JsonAt& j, const char* key) {
  auto v = j.opt(key);
  if (!v) return std::nullopt;
  return v->str();
}

}  // namespace

std::unique_ptr<Model> model_from_json(const JsonAt& j) {
  j.expect_object();
  std::string type;
  if (j.has("type")) {
    type = j.str("type");
  } else if (j.has("merges")) {
    type = "BPE";
  } else if (j.has("continuing_subword_prefix") || j.has("max_input_chars_per_word")) {
    type = "WordPiece";
  } else if (j.has("vocab") && j.at("vocab").v.IsArray()) {
    type = "Unigram";
  } else {
    type = "WordLevel";
  }
  if (type == "BPE") {
    auto m = std::make_unique<BPE>();
    read_vocab(j.at("vocab"), m->vocab, m->rev);
    m->unk_token = opt_string(j, "unk_token");
    m->prefix = opt_string(j, "continuing_subword_prefix").value_or("");
    m->suffix = opt_string(j, "end_of_word_suffix").value_or("");
    m->fuse_unk = j.boolean_or("fuse_unk", false);
    m->byte_fallback = j.boolean_or("byte_fallback", false);
    m->ignore_merges = j.boolean_or("ignore_merges", false);
    if (auto d = j.opt("dropout")) {
      if (d->num() != 0.0) d->fail("not supported yet: BPE dropout");
    }
    char name[8];
    m->has_byte_ids = false;
    for (int b = 0; b < 256; b++) {
      snprintf(name, sizeof name, "<0x%02X>", b);
      auto id = vocab_find(m->vocab, name);
      m->byte_ids[b] = id ? *id : UINT32_MAX;
      m->has_byte_ids = m->has_byte_ids || id.has_value();
    }
    JsonAt merges = j.at("merges");
    size_t n = merges.size();
    m->merges.reserve(n);
    for (size_t i = 0; i < n; i++) {
      JsonAt e = merges.at(i);
      std::string a, b;
      if (e.v.IsString()) {
        std::string s = e.str();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) e.fail("expected a merge \"a b\"");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.v.IsArray()) {
        if (e.size() != 2) e.fail("expected a merge [a, b]");
        a = e.at(size_t(0)).str();
        b = e.at(size_t(1)).str();
      } else {
        e.fail("expected a merge as \"a b\" or [a, b]");
      }
      auto ia = vocab_find(m->vocab, a);
      if (!ia) e.fail("merge names a token that is not in the vocabulary: '" + a + "'");
      auto ib = vocab_find(m->vocab, b);
      if (!ib) e.fail("merge names a token that is not in the vocabulary: '" + b + "'");
      std::string joined = a + (b.size() >= m->prefix.size() ? b.substr(m->prefix.size()) : std::string());
      auto in = vocab_find(m->vocab, joined);
      if (!in) e.fail("the merged token '" + joined + "' is not in the vocabulary");
      m->merges[(uint64_t(*ia) << 32) | *ib] = {uint32_t(i), *in};
    }
    return m;
  }
  if (type == "WordPiece") {
    auto m = std::make_unique<WordPiece>();
    read_vocab(j.at("vocab"), m->vocab, m->rev);
    m->unk_token = j.str_or("unk_token", "[UNK]");
    m->prefix = j.str_or("continuing_subword_prefix", "##");
    m->max_chars = j.uint_or("max_input_chars_per_word", 100);
    return m;
  }
  if (type == "WordLevel") {
    auto m = std::make_unique<WordLevel>();
    read_vocab(j.at("vocab"), m->vocab, m->rev);
    m->unk_token = j.str_or("unk_token", "<unk>");
    return m;
  }
  if (type == "Unigram") {
    auto m = std::make_unique<Unigram>();
    JsonAt vocab = j.at("vocab");
    size_t n = vocab.size();
    m->pieces.reserve(n);
    for (size_t i = 0; i < n; i++) {
      JsonAt e = vocab.at(i);
      if (!e.v.IsArray() || e.v.Size() != 2) e.fail("expected [piece, score]");
      m->pieces.push_back({e.at(size_t(0)).str(), e.at(size_t(1)).num()});
    }
    if (auto u = j.opt("unk_id")) {
      uint64_t id = u->uint();
      if (id >= n) u->fail("unk_id " + std::to_string(id) + " is outside the vocabulary (" + std::to_string(n) + " pieces)");
      m->unk_id = static_cast<uint32_t>(id);
    }
    m->byte_fallback = j.boolean_or("byte_fallback", false);
    m->build();
    return m;
  }
  j.at("type").fail("unsupported model type '" + type + "'");
}

}  // namespace sky::tok
