// Normalizers of HF tokenizers: NFC/NFD/NFKC/NFKD (utf8proc), Lowercase, Strip, StripAccents,
// Replace, Prepend, BertNormalizer, Precompiled (SentencePiece charsmap), Sequence. Each keeps
// the byte alignments to the original text as HF's NormalizedString::transform does.
#include <utf8proc.h>

#include <algorithm>
#include <cstring>

#include "tokenize/components.hpp"

namespace sky::tok {

namespace {

// Visits the chars of n: f(cp, byte_index, byte_len).
template <class F>
void for_chars(const std::string& s, F f) {
  size_t i = 0;
  while (i < s.size()) {
    size_t len;
    uint32_t c = utf8_next(s, i, &len);
    f(c, i, len);
    i += len;
  }
}

// ---- HF's transform() ----------------------------------------------------------------------------

// Applies (char, change) pairs to n as HF's NormalizedString::transform: change 0 replaces the
// next old char (taking its alignment), change -k also removes k more, change 1 inserts a char
// aligned like the previous old byte.
void apply_transform(Normalized& n, const std::vector<std::pair<uint32_t, int>>& tr) {
  const std::string& s = n.text;
  Rebuilder rb;
  rb.reserve(s.size() + 8);
  size_t offset = 0;
  auto skip_char = [&]() {
    if (offset < s.size()) {
      size_t cl;
      utf8_next(s, offset, &cl);
      offset += cl;
    }
  };
  for (auto& [ch, change] : tr) {
    Offsets a;
    if (change > 0) {
      a = offset >= 1 ? n.align[offset - 1] : Offsets{0, 0};
    } else {
      a = offset < n.align.size() ? n.align[offset] : (n.align.empty() ? Offsets{0, 0} : n.align.back());
      skip_char();
      for (int r = 0; r < -change; r++) skip_char();
    }
    rb.push(ch, a);
  }
  rb.finish(n);
}

// ---- Unicode normalization forms ----------------------------------------------------------------

enum class Form { NFC, NFD, NFKC, NFKD };

// Decompositions newer than the Unicode tables of HF's normalizer (unicode-normalization-alignments):
// HF leaves these code points as they are (tools/tokenize_nfkd_probe.js lists what HF changes).
bool hf_keeps_undecomposed(uint32_t c, bool compat) {
  if (c == 0x11938) return true;
  if (!compat) return false;
  static const uint32_t ranges[][2] = {{0x32ff, 0x32ff}, {0xa7f2, 0xa7f4}, {0xab69, 0xab69}, {0x10781, 0x10785},
                                       {0x10787, 0x107b0}, {0x107b2, 0x107ba}, {0x1e030, 0x1e06d}, {0x1f16c, 0x1f16c},
                                       {0x1fbf0, 0x1fbf9}};
  for (auto& r : ranges)
    if (c >= r[0] && c <= r[1]) return true;
  return false;
}

int ccc(uint32_t c) { return c < 0x300 ? 0 : utf8proc_get_property(static_cast<utf8proc_int32_t>(c))->combining_class; }

// The canonical composition of (a, b), or 0.
uint32_t compose_pair(uint32_t a, uint32_t b) {
  utf8proc_int32_t buf[2] = {static_cast<utf8proc_int32_t>(a), static_cast<utf8proc_int32_t>(b)};
  utf8proc_ssize_t n = utf8proc_normalize_utf32(buf, 2, static_cast<utf8proc_option_t>(UTF8PROC_COMPOSE | UTF8PROC_STABLE));
  if (n != 1 || hf_keeps_undecomposed(static_cast<uint32_t>(buf[0]), false)) return 0;
  return static_cast<uint32_t>(buf[0]);
}

// As unicode-normalization-alignments: every char decomposes into (first, 0), (rest, +1); marks
// are reordered with their changes; a composition merges two entries into one with change
// c1 + c2 - 1. apply_transform() then computes the alignments.
struct UnicodeForm : Normalizer {
  Form form;
  explicit UnicodeForm(Form f) : form(f) {}
  void normalize(Normalized& n) const override {
    const std::string& s = n.text;
    size_t i = 0;
    for (; i < s.size(); i++)
      if (static_cast<unsigned char>(s[i]) >= 0x80) break;
    if (i == s.size()) return;  // ASCII is stable under every form
    bool compat = form == Form::NFKC || form == Form::NFKD;
    bool compose = form == Form::NFC || form == Form::NFKC;
    int opts = UTF8PROC_DECOMPOSE | (compat ? UTF8PROC_COMPAT : 0);
    std::vector<std::pair<uint32_t, int>> v;
    v.reserve(s.size() + 8);
    size_t k = 0;
    while (k < s.size()) {
      size_t len;
      uint32_t c = utf8_next(s, k, &len);
      k += len;
      if (c < 0xA0 || hf_keeps_undecomposed(c, compat)) {  // nothing below U+00A0 decomposes
        v.push_back({c, 0});
        continue;
      }
      utf8proc_int32_t buf[32];
      int last = 0;
      utf8proc_ssize_t m = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(c), buf, 32, static_cast<utf8proc_option_t>(opts), &last);
      if (m <= 0 || m > 32) {
        v.push_back({c, 0});
        continue;
      }
      for (utf8proc_ssize_t q = 0; q < m; q++) v.push_back({static_cast<uint32_t>(buf[q]), q == 0 ? 0 : 1});
    }
    // Canonical ordering: stable sort of each run of non-starters by combining class.
    for (size_t a = 0; a < v.size();) {
      if (ccc(v[a].first) == 0) { a++; continue; }
      size_t b = a;
      while (b < v.size() && ccc(v[b].first) != 0) b++;
      std::stable_sort(v.begin() + a, v.begin() + b, [](auto& x, auto& y) { return ccc(x.first) < ccc(y.first); });
      a = b;
    }
    if (compose) {
      std::vector<std::pair<uint32_t, int>> w;
      w.reserve(v.size());
      int64_t starter = -1;
      int last_cc = -1;  // -1: nothing since the starter
      for (auto& e : v) {
        int cc = ccc(e.first);
        if (starter >= 0 && (last_cc == -1 || last_cc < cc)) {
          if (uint32_t comp = compose_pair(w[starter].first, e.first)) {
            w[starter].first = comp;
            w[starter].second += e.second - 1;
            continue;
          }
        }
        if (cc == 0) {
          starter = static_cast<int64_t>(w.size());
          last_cc = -1;
        } else {
          last_cc = cc;
        }
        w.push_back(e);
      }
      v.swap(w);
    }
    apply_transform(n, v);
  }
};

// ---- simple per-char transforms ----------------------------------------------------------------

struct Lowercase : Normalizer {
  void normalize(Normalized& n) const override {
    // In place while every char keeps its UTF-8 length (ASCII and most scripts); rebuilt from
    // the first char whose lowercase is longer or shorter.
    std::string& t = n.text;
    size_t i = 0;
    while (i < t.size()) {
      unsigned char c = static_cast<unsigned char>(t[i]);
      if (c < 0x80) {
        if (c >= 'A' && c <= 'Z') t[i] = static_cast<char>(c + 32);
        i++;
        continue;
      }
      size_t len;
      uint32_t cp = utf8_next(t, i, &len);
      uint32_t out[3];
      int k = uc_to_lowercase(cp, out);
      if (k == 1 && utf8_len(out[0]) == len) {
        if (out[0] != cp) {
          std::string enc;
          utf8_append(enc, out[0]);
          t.replace(i, len, enc);
        }
        i += len;
        continue;
      }
      rebuild_from(n, i);
      return;
    }
  }

  static void rebuild_from(Normalized& n, size_t start) {
    Rebuilder rb;
    rb.reserve(n.text.size() + 8);
    rb.push_bytes(std::string_view(n.text.data(), start), n.align.data());
    size_t i = start;
    while (i < n.text.size()) {
      size_t len;
      uint32_t c = utf8_next(n.text, i, &len);
      uint32_t out[3];
      int k = uc_to_lowercase(c, out);
      for (int q = 0; q < k; q++) rb.push(out[q], n.align[q == 0 ? i : i + len - 1]);
      i += len;
    }
    rb.finish(n);
  }
};

void strip_normalized(Normalized& n, bool left, bool right) {
  size_t b = 0, e = n.text.size();
  if (left) {
    while (b < e) {
      size_t len;
      uint32_t c = utf8_next(n.text, b, &len);
      if (!uc_is_whitespace(c)) break;
      b += len;
    }
  }
  if (right) {
    while (e > b) {
      size_t p = e - 1;
      while (p > b && (static_cast<unsigned char>(n.text[p]) & 0xC0) == 0x80) p--;
      size_t len;
      uint32_t c = utf8_next(n.text, p, &len);
      if (!uc_is_whitespace(c)) break;
      e = p;
    }
  }
  if (b == 0 && e == n.text.size()) return;
  n.text = n.text.substr(b, e - b);
  n.align = std::vector<Offsets>(n.align.begin() + b, n.align.begin() + e);
}

struct Strip : Normalizer {
  bool left, right;
  Strip(bool l, bool r) : left(l), right(r) {}
  void normalize(Normalized& n) const override { strip_normalized(n, left, right); }
};

template <class Keep>
void filter_chars(Normalized& n, Keep keep) {
  // Rebuilt only from the first char that goes.
  size_t first = n.text.size();
  for (size_t i = 0; i < n.text.size();) {
    if (static_cast<unsigned char>(n.text[i]) < 0x80) { i++; continue; }
    size_t len;
    if (!keep(utf8_next(n.text, i, &len))) { first = i; break; }
    i += len;
  }
  if (first == n.text.size()) return;
  Rebuilder rb;
  rb.reserve(n.text.size());
  rb.push_bytes(std::string_view(n.text.data(), first), n.align.data());
  size_t i = first;
  while (i < n.text.size()) {
    size_t len;
    uint32_t c = utf8_next(n.text, i, &len);
    if (keep(c)) rb.push_bytes(std::string_view(n.text.data() + i, len), &n.align[i]);
    i += len;
  }
  rb.finish(n);
}

struct StripAccents : Normalizer {
  void normalize(Normalized& n) const override { filter_chars(n, [](uint32_t c) { return !uc_is_combining_mark(c); }); }
};

void prepend_normalized(Normalized& n, const std::string& s) {
  if (n.text.empty() || s.empty()) return;
  Offsets a = n.align[0];
  n.text.insert(0, s);
  n.align.insert(n.align.begin(), s.size(), a);
}

struct Prepend : Normalizer {
  std::string prepend;
  explicit Prepend(std::string p) : prepend(std::move(p)) {}
  void normalize(Normalized& n) const override { prepend_normalized(n, prepend); }
};

}  // namespace

// Replaces every match by content (chars aligned to the match's last byte), as HF's replace.
// The result may be at most kMaxNormalizedGrowth times the original input (and at least 4 KB): a
// tokenizer.json whose Replace rules feed each other (a -> aaaa..., several times over) would
// otherwise grow a few kilobytes into gigabytes before failing.
constexpr size_t kMaxNormalizedGrowth = 64;

void replace_normalized(Normalized& n, const std::vector<Offsets>& matches, const std::string& content) {
  if (matches.empty()) return;
  size_t removed = 0;
  for (auto& m : matches) removed += m.second - m.first;
  size_t grown = n.text.size() - removed + matches.size() * content.size();
  size_t input = n.orig.second > n.orig.first ? n.orig.second - n.orig.first : 0;
  size_t limit = std::max<size_t>(input * kMaxNormalizedGrowth, 4096);
  if (grown > limit && grown > n.text.size())
    throw std::runtime_error("Replace: the normalized text would grow to " + std::to_string(grown) +
                             " bytes from an input of " + std::to_string(input) + " bytes (the limit is " +
                             std::to_string(kMaxNormalizedGrowth) +
                             " times the input): the tokenizer's Replace rules expand their own output");
  Rebuilder rb;
  rb.reserve(grown);
  size_t last = 0;
  for (auto& m : matches) {
    rb.push_bytes(std::string_view(n.text.data() + last, m.first - last), &n.align[last]);
    Offsets a = m.second > 0 ? n.align[m.second - 1] : Offsets{0, 0};
    rb.text.append(content);
    rb.align.insert(rb.align.end(), content.size(), a);
    last = m.second;
  }
  rb.push_bytes(std::string_view(n.text.data() + last, n.text.size() - last), &n.align[last]);
  rb.finish(n);
}

void find_literal(std::string_view text, std::string_view needle, std::vector<Offsets>& out) {
  if (needle.empty()) return;
  size_t p = 0;
  while ((p = text.find(needle, p)) != std::string_view::npos) {
    out.push_back({uint32_t(p), uint32_t(p + needle.size())});
    p += needle.size();
  }
}

void ReplaceRule::find(std::string_view text, std::vector<Offsets>& out) const {
  if (regex) regex->find_all(text, out);
  else find_literal(text, literal, out);
}

ReplaceRule ReplaceRule::from_json(const JsonAt& j) {
  ReplaceRule r;
  JsonAt pat = j.at("pattern");
  pat.expect_object();
  if (pat.has("String")) {
    r.literal = pat.str("String");
  } else if (pat.has("Regex")) {
    try {
      r.regex = std::make_unique<Regex>(pat.str("Regex"));
    } catch (const std::exception& e) {
      pat.at("Regex").fail(e.what());
    }
  } else {
    pat.fail("expected a String or Regex pattern");
  }
  r.content = j.str("content");
  return r;
}

namespace {

struct Replace : Normalizer {
  ReplaceRule rule;
  explicit Replace(ReplaceRule r) : rule(std::move(r)) {}
  void normalize(Normalized& n) const override {
    thread_local std::vector<Offsets> m;
    m.clear();
    rule.find(n.text, m);
    replace_normalized(n, m, rule.content);
  }
};

// ---- BertNormalizer --------------------------------------------------------------------------------

bool is_chinese_char(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

struct BertNormalizer : Normalizer {
  bool clean_text = true, handle_chinese_chars = true, strip_accents = true, lowercase = true;
  UnicodeForm nfd{Form::NFD};
  Lowercase lower;

  void normalize(Normalized& n) const override {
    if (clean_text) {
      // In place for \t \n \r (one byte, become ' '); rebuilt only when a char is dropped or a
      // multi-byte space becomes ' '.
      bool rebuild = false;
      std::string& t = n.text;
      for (size_t i = 0; i < t.size();) {
        unsigned char b = static_cast<unsigned char>(t[i]);
        if (b >= 0x20 && b < 0x7F) { i++; continue; }
        if (b == '\t' || b == '\n' || b == '\r') { t[i] = ' '; i++; continue; }
        size_t len;
        uint32_t c = utf8_next(t, i, &len);
        if (c == 0 || c == 0xFFFD || uc_is_other(c) || uc_is_whitespace(c)) { rebuild = true; break; }
        i += len;
      }
      if (rebuild) {
        Rebuilder rb;
        rb.reserve(n.text.size());
        for_chars(n.text, [&](uint32_t c, size_t b, size_t len) {
          bool ws = c == '\t' || c == '\n' || c == '\r' || uc_is_whitespace(c);
          bool control = !(c == '\t' || c == '\n' || c == '\r') && uc_is_other(c);
          if (c == 0 || c == 0xFFFD || control) return;
          if (ws && c != ' ') {
            rb.text += ' ';
            rb.align.push_back(n.align[b]);
            return;
          }
          rb.push_bytes(std::string_view(n.text.data() + b, len), &n.align[b]);
        });
        rb.finish(n);
      }
    }
    if (handle_chinese_chars) {
      bool any = false;
      for (size_t i = 0; i < n.text.size() && !any;) {
        if (static_cast<unsigned char>(n.text[i]) < 0xE3) { i++; continue; }  // CJK starts at U+3400
        size_t len;
        any = is_chinese_char(utf8_next(n.text, i, &len));
        i += len;
      }
      if (any) {
        Rebuilder rb;
        rb.reserve(n.text.size() + 16);
        for_chars(n.text, [&](uint32_t c, size_t b, size_t len) {
          if (c >= 0x3400 && is_chinese_char(c)) {
            rb.text += ' ';
            rb.align.push_back(n.align[b]);
            rb.push_bytes(std::string_view(n.text.data() + b, len), &n.align[b]);
            rb.text += ' ';
            rb.align.push_back(n.align[b + len - 1]);
          } else {
            rb.push_bytes(std::string_view(n.text.data() + b, len), &n.align[b]);
          }
        });
        rb.finish(n);
      }
    }
    if (strip_accents) {
      nfd.normalize(n);
      filter_chars(n, [](uint32_t c) { return !uc_is_mark_nonspacing(c); });
    }
    if (lowercase) lower.normalize(n);
  }
};

// ---- Precompiled (SentencePiece's charsmap: a darts-clone double array and a string blob) ----------

std::string base64_decode(const std::string& in, const JsonAt& j) {
  static int8_t table[256];
  static bool init = false;
  if (!init) {
    memset(table, -1, sizeof table);
    const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; i++) table[static_cast<unsigned char>(a[i])] = static_cast<int8_t>(i);
    init = true;
  }
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    if (c == '\n' || c == '\r') continue;
    int v = table[static_cast<unsigned char>(c)];
    if (v < 0) j.fail("invalid base64 character");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

struct Precompiled : Normalizer {
  std::vector<uint32_t> trie;
  std::string blob;

  // Value of the first (shortest) key of the trie that is a prefix of s, as spm_precompiled.
  std::optional<std::string_view> transform(std::string_view s) const {
    if (trie.empty()) return std::nullopt;
    auto offset = [](uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); };
    auto label = [](uint32_t u) { return u & ((1u << 31) | 0xFF); };
    auto has_leaf = [](uint32_t u) { return ((u >> 8) & 1) == 1; };
    auto value = [](uint32_t u) { return u & ((1u << 31) - 1); };
    size_t pos = 0;
    uint32_t unit = trie[pos];
    pos ^= offset(unit);
    for (unsigned char c : s) {
      if (c == 0) break;
      pos ^= c;
      if (pos >= trie.size()) return std::nullopt;
      unit = trie[pos];
      if (label(unit) != c) return std::nullopt;
      pos ^= offset(unit);
      if (pos >= trie.size()) return std::nullopt;
      if (has_leaf(unit)) {
        size_t v = value(trie[pos]);
        if (v >= blob.size()) return std::nullopt;
        size_t e = blob.find('\0', v);
        if (e == std::string::npos) e = blob.size();
        return std::string_view(blob.data() + v, e - v);
      }
    }
    return std::nullopt;
  }

  void normalize(Normalized& n) const override {
    if (trie.empty()) return;
    const std::string& s = n.text;
    // (char, change) transformations, then HF's transform().
    std::vector<std::pair<uint32_t, int>> tr;
    tr.reserve(s.size());
    bool modified = false;
    auto replace = [&](std::string_view old_part, std::string_view new_part) {
      int old_count = static_cast<int>(utf8_count(old_part));
      int new_count = static_cast<int>(utf8_count(new_part));
      int diff = new_count - old_count;
      size_t first = tr.size();
      size_t j = 0;
      while (j < new_part.size()) {
        size_t cl;
        tr.push_back({utf8_next(new_part, j, &cl), 0});
        j += cl;
      }
      if (diff > 0) {
        for (size_t k = tr.size(); k-- > first && diff > 0; diff--) tr[k].second = 1;
      } else if (diff < 0 && !tr.empty()) {
        tr.back().second += diff;
      }
    };
    // Extended grapheme clusters.
    size_t i = 0;
    while (i < s.size()) {
      size_t len;
      uint32_t c = utf8_next(s, i, &len);
      size_t e = i + len;
      utf8proc_int32_t state = 0;
      uint32_t prev = c;
      while (e < s.size()) {
        size_t l2;
        uint32_t d = utf8_next(s, e, &l2);
        if (utf8proc_grapheme_break_stateful(static_cast<utf8proc_int32_t>(prev), static_cast<utf8proc_int32_t>(d), &state)) break;
        prev = d;
        e += l2;
      }
      std::string_view g(s.data() + i, e - i);
      bool done = false;
      if (g.size() < 6) {
        if (auto norm = transform(g)) {
          modified = true;
          replace(g, *norm);
          done = true;
        }
      }
      if (!done) {
        size_t k = i;
        while (k < e) {
          size_t cl;
          uint32_t ch = utf8_next(s, k, &cl);
          std::string_view part(s.data() + k, cl);
          if (auto norm = transform(part)) {
            modified = true;
            replace(part, *norm);
          } else {
            tr.push_back({ch, 0});
          }
          k += cl;
        }
      }
      i = e;
    }
    if (!modified) return;
    apply_transform(n, tr);
  }
};

struct SequenceNormalizer : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> items;
  void normalize(Normalized& n) const override {
    for (auto& x : items) x->normalize(n);
  }
};

}  // namespace

std::unique_ptr<Normalizer> normalizer_from_json(const JsonAt& j) {
  std::string type = j.type_name();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNormalizer>();
    JsonAt items = j.at("normalizers");
    for (size_t i = 0; i < items.size(); i++) seq->items.push_back(normalizer_from_json(items.at(i)));
    return seq;
  }
  if (type == "NFC") return std::make_unique<UnicodeForm>(Form::NFC);
  if (type == "NFD") return std::make_unique<UnicodeForm>(Form::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(Form::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(Form::NFKD);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Strip") return std::make_unique<Strip>(j.boolean_or("strip_left", true), j.boolean_or("strip_right", true));
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Prepend") return std::make_unique<Prepend>(j.str("prepend"));
  if (type == "Replace") return std::make_unique<Replace>(ReplaceRule::from_json(j));
  if (type == "BertNormalizer") {
    auto b = std::make_unique<BertNormalizer>();
    b->clean_text = j.boolean_or("clean_text", true);
    b->handle_chinese_chars = j.boolean_or("handle_chinese_chars", true);
    b->lowercase = j.boolean_or("lowercase", true);
    b->strip_accents = j.boolean_or("strip_accents", b->lowercase);
    return b;
  }
  if (type == "Precompiled") {
    auto p = std::make_unique<Precompiled>();
    auto cm = j.opt("precompiled_charsmap");
    if (!cm) return p;  // an empty charsmap normalizes nothing
    std::string data = base64_decode(cm->str(), *cm);
    if (data.empty()) return p;
    if (data.size() < 4) cm->fail("charsmap too short");
    uint32_t trie_size;
    memcpy(&trie_size, data.data(), 4);
    if (trie_size % 4 != 0 || 4 + size_t(trie_size) > data.size()) cm->fail("charsmap trie size out of range");
    p->trie.resize(trie_size / 4);
    memcpy(p->trie.data(), data.data() + 4, trie_size);
    p->blob = data.substr(4 + trie_size);
    // HF refuses a charsmap whose strings are not UTF-8 (found by fuzz_tokenizer_load: they made
    // the normalized text invalid and crashed the regex matcher).
    if (!utf8_valid(p->blob)) cm->fail("the charsmap's replacement strings are not valid UTF-8");
    return p;
  }
  j.at("type").fail("unsupported normalizer type '" + type + "'");
}

}  // namespace sky::tok
