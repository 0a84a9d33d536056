// UTF-8 helpers, Unicode predicates (utf8proc), PCRE2 regexes and NormalizedString splitting.
// The predicates follow the Rust definitions HF tokenizers uses, not PCRE2's or C's.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenize/text.hpp"
#include "tokenize/unicode_hf_tables.hpp"

#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <stdexcept>

namespace sky::tok {

// ---- UTF-8 ------------------------------------------------------------------------------------

static size_t utf8_valid_prefix_len(std::string_view s, size_t i) {
  // Length of the valid sequence at i, 0 if invalid (Rust's from_utf8 rules: no overlongs, no
  // surrogates, nothing above U+10FFFF).
  unsigned char c = static_cast<unsigned char>(s[i]);
  auto cont = [&](size_t k) { return i + k < s.size() && (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80; };
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
    if (c == 0xE0 && c1 < 0xA0) return 0;
    if (c == 0xED && c1 >= 0xA0) return 0;
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
    if (c == 0xF0 && c1 < 0x90) return 0;
    if (c == 0xF4 && c1 >= 0x90) return 0;
    return 4;
  }
  return 0;
}

bool utf8_valid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) { i++; continue; }
    size_t n = utf8_valid_prefix_len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t n = utf8_valid_prefix_len(s, i);
    if (n) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    // Rust replaces the maximal invalid prefix of a would-be sequence by one U+FFFD.
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t want = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 1;
    size_t k = 1;
    if (want > 1) {
      unsigned char c1 = i + 1 < s.size() ? static_cast<unsigned char>(s[i + 1]) : 0;
      unsigned char lo = 0x80, hi = 0xBF;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
      if (i + 1 < s.size() && c1 >= lo && c1 <= hi) {
        k = 2;
        while (k < want && i + k < s.size() && (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80) k++;
      }
    }
    out += "\xEF\xBF\xBD";
    i += k;
  }
  return out;
}

size_t utf8_count(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// ---- Unicode predicates ------------------------------------------------------------------------

static inline utf8proc_category_t cat(uint32_t c) {
  return static_cast<utf8proc_category_t>(utf8proc_category(static_cast<utf8proc_int32_t>(c)));
}

bool uc_is_whitespace(uint32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool uc_is_numeric(uint32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  auto k = cat(c);
  return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

static bool is_alphabetic(uint32_t c) {
  auto k = cat(c);
  switch (k) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
      return true;
    default:
      return false;
  }
}

bool uc_is_alphanumeric(uint32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
  return is_alphabetic(c) || uc_is_numeric(c);
}

bool uc_is_word(uint32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c == '_';
  auto k = cat(c);
  return is_alphabetic(c) || k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC ||
         k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_PC ||
         c == 0x200C || c == 0x200D;
}

template <size_t N>
static bool in_ranges(const hf_tables::Range (&r)[N], uint32_t c) {
  size_t lo = 0, hi = N;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c < r[mid].lo) hi = mid;
    else if (c > r[mid].hi) lo = mid + 1;
    else return true;
  }
  return false;
}

bool uc_is_punctuation(uint32_t c) { return in_ranges(hf_tables::kPunctuation, c); }

bool uc_is_bert_punctuation(uint32_t c) {
  if (c < 0x80) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
  return uc_is_punctuation(c);
}

// HF's tables (unicode_categories), not utf8proc's: see unicode_hf_tables.hpp.
bool uc_is_other(uint32_t c) { return in_ranges(hf_tables::kOther, c); }
bool uc_is_mark_nonspacing(uint32_t c) { return c >= 0x300 && in_ranges(hf_tables::kMarkNonspacing, c); }

bool uc_is_combining_mark(uint32_t c) {
  if (c < 0x300) return false;
  auto k = cat(c);
  return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME;
}

int uc_to_lowercase(uint32_t c, uint32_t out[3]) {
  if (c < 0x80) {
    out[0] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
    return 1;
  }
  if (c == 0x130) {  // the one unconditional multi-char lowercase mapping (SpecialCasing)
    out[0] = 'i';
    out[1] = 0x307;
    return 2;
  }
  // Case pairs new in Unicode 16 (Rust's tables have them, utf8proc 2.8's do not).
  if (c >= 0x1C89 && c <= 0xA7DC) {
    switch (c) {
      case 0x1C89: out[0] = 0x1C8A; return 1;
      case 0xA7CB: out[0] = 0x0264; return 1;
      case 0xA7CC: out[0] = 0xA7CD; return 1;
      case 0xA7DA: out[0] = 0xA7DB; return 1;
      case 0xA7DC: out[0] = 0x019B; return 1;
      default: break;
    }
  }
  if (c >= 0x10D50 && c <= 0x10D65) { out[0] = c + 0x20; return 1; }  // Garay
  out[0] = static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
  return 1;
}

// ---- regexes ------------------------------------------------------------------------------------

// Oniguruma's \s (White_Space); PCRE2's UCP \s differs (it includes U+180E).
static const char* kSpaceClass = "\\t-\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}";

// Code points that HF tokenizers' Oniguruma (Unicode 16) puts in a general category and PCRE2
// 10.42's Unicode 14 tables do not: tools/tokenize_onig_probe.js lists Oniguruma's classes as HF
// sees them, compared with PCRE2 over every code point (none is the other way round).
static const char* onig_additions(char cat) {
  switch (cat) {
    case 'L':
      return "\\x{1c89}-\\x{1c8a}\\x{a7cb}-\\x{a7cd}\\x{a7da}-\\x{a7dc}\\x{105c0}-\\x{105f3}"
             "\\x{10d4a}-\\x{10d65}\\x{10d6f}-\\x{10d85}\\x{10ec2}-\\x{10ec4}\\x{1123f}-\\x{11240}"
             "\\x{11380}-\\x{11389}\\x{1138b}\\x{1138e}\\x{11390}-\\x{113b5}\\x{113b7}\\x{113d1}\\x{113d3}"
             "\\x{11bc0}-\\x{11be0}\\x{11f02}\\x{11f04}-\\x{11f10}\\x{11f12}-\\x{11f33}\\x{1342f}"
             "\\x{13441}-\\x{13446}\\x{13460}-\\x{143fa}\\x{16100}-\\x{1611d}\\x{16d40}-\\x{16d6c}\\x{18cff}"
             "\\x{1b132}\\x{1b155}\\x{1df25}-\\x{1df2a}\\x{1e030}-\\x{1e06d}\\x{1e4d0}-\\x{1e4eb}"
             "\\x{1e5d0}-\\x{1e5ed}\\x{1e5f0}\\x{2b739}\\x{2ebf0}-\\x{2ee5d}\\x{31350}-\\x{323af}";
    case 'N':
      return "\\x{10d40}-\\x{10d49}\\x{116d0}-\\x{116e3}\\x{11bf0}-\\x{11bf9}\\x{11f50}-\\x{11f59}"
             "\\x{16130}-\\x{16139}\\x{16d70}-\\x{16d79}\\x{1ccf0}-\\x{1ccf9}\\x{1d2c0}-\\x{1d2d3}"
             "\\x{1e4f0}-\\x{1e4f9}\\x{1e5f1}-\\x{1e5fa}";
    case 'P':
      return "\\x{1b4e}-\\x{1b4f}\\x{1b7f}\\x{10d6e}\\x{113d4}-\\x{113d5}\\x{113d7}-\\x{113d8}"
             "\\x{11b00}-\\x{11b09}\\x{11be1}\\x{11f43}-\\x{11f4f}\\x{16d6d}-\\x{16d6f}\\x{1e5ff}";
    case 'S':
      return "\\x{2427}-\\x{2429}\\x{2ffc}-\\x{2fff}\\x{31e4}-\\x{31e5}\\x{31ef}\\x{10d8e}-\\x{10d8f}"
             "\\x{1cc00}-\\x{1ccef}\\x{1cd00}-\\x{1ceb3}\\x{1f6dc}\\x{1f774}-\\x{1f776}\\x{1f77b}-\\x{1f77f}"
             "\\x{1f7d9}\\x{1f8b2}-\\x{1f8bb}\\x{1f8c0}-\\x{1f8c1}\\x{1fa75}-\\x{1fa77}\\x{1fa87}-\\x{1fa89}"
             "\\x{1fa8f}\\x{1faad}-\\x{1faaf}\\x{1fabb}-\\x{1fabf}\\x{1fac6}\\x{1face}-\\x{1facf}"
             "\\x{1fada}-\\x{1fadc}\\x{1fadf}\\x{1fae8}-\\x{1fae9}\\x{1faf7}-\\x{1faf8}\\x{1fbcb}-\\x{1fbef}";
    case 'M':
      return "\\x{897}\\x{cf3}\\x{ece}\\x{10d69}-\\x{10d6d}\\x{10efc}-\\x{10eff}\\x{11241}"
             "\\x{113b8}-\\x{113c0}\\x{113c2}\\x{113c5}\\x{113c7}-\\x{113ca}\\x{113cc}-\\x{113d0}\\x{113d2}"
             "\\x{113e1}-\\x{113e2}\\x{11f00}-\\x{11f01}\\x{11f03}\\x{11f34}-\\x{11f3a}\\x{11f3e}-\\x{11f42}"
             "\\x{11f5a}\\x{13440}\\x{13447}-\\x{13455}\\x{1611e}-\\x{1612f}\\x{1e08f}\\x{1e4ec}-\\x{1e4ef}"
             "\\x{1e5ee}-\\x{1e5ef}";
    default:
      return nullptr;
  }
}

static std::string rewrite_pattern(const std::string& p) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); i++) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char d = p[i + 1];
      i++;
      if (d == 's') {
        if (in_class) out += kSpaceClass;
        else out += std::string("[") + kSpaceClass + "]";
      } else if (d == 'S' && !in_class) {
        out += std::string("[^") + kSpaceClass + "]";
      } else if ((d == 'p' || d == 'P') && i + 3 < p.size() && p[i + 1] == '{' && p[i + 3] == '}' &&
                 onig_additions(p[i + 2]) && !(d == 'P' && in_class)) {
        std::string cls = std::string("\\p{") + p[i + 2] + "}" + onig_additions(p[i + 2]);
        if (in_class) out += cls;
        else out += (d == 'p' ? "[" : "[^") + cls + "]";
        i += 3;
      } else {
        out += c;
        out += d;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') { out += '^'; i++; }
      if (i + 1 < p.size() && p[i + 1] == ']') { out += ']'; i++; }
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      size_t end = p.find(":]", i + 2);
      if (end != std::string::npos) {
        out.append(p, i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

std::string regex_escape(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-/#&~ ").find(c) != std::string_view::npos && c != ' ') out += '\\';
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& pattern) : pattern_(pattern) {
  std::string p = rewrite_pattern(pattern);
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);  // the pattern is checked
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    throw std::runtime_error("invalid regex '" + pattern + "': " + reinterpret_cast<char*>(buf) +
                             " at offset " + std::to_string(off));
  }
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

namespace {
struct MatchScratch {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mc = nullptr;
  pcre2_jit_stack* js = nullptr;
  MatchScratch() {
    md = pcre2_match_data_create(1, nullptr);
    mc = pcre2_match_context_create(nullptr);
    js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(mc, nullptr, js);
  }
  ~MatchScratch() {
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    pcre2_jit_stack_free(js);
  }
};
}  // namespace

void Regex::find_all(std::string_view text, std::vector<Offsets>& out) const {
  thread_local MatchScratch scratch;
  auto* code = static_cast<pcre2_code*>(code_);
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    int rc = jit_ ? pcre2_jit_match(code, subject, text.size(), start, 0, scratch.md, scratch.mc)
                  : pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, scratch.md, scratch.mc);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
      rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, scratch.md, scratch.mc);
    if (rc < 0) {
      if (rc == PCRE2_ERROR_NOMATCH) break;
      throw std::runtime_error("regex '" + pattern_ + "' failed on an input (PCRE2 error " + std::to_string(rc) + ")");
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(scratch.md);
    size_t s = ov[0], e = ov[1];
    if (e == s) {
      // Empty match: skip one character (empty splits are dropped by every caller).
      if (s >= text.size()) break;
      size_t len;
      utf8_next(text, s, &len);
      start = s + len;
      continue;
    }
    out.push_back({uint32_t(s), uint32_t(e)});
    start = e;
  }
}

void regex_matches(const Regex& re, std::string_view s, Matches& out) {
  out.clear();
  if (s.empty()) { out.push_back({{0, 0}, false}); return; }
  thread_local std::vector<Offsets> found;
  found.clear();
  re.find_all(s, found);
  uint32_t prev = 0;
  for (auto& m : found) {
    if (prev != m.first) out.push_back({{prev, m.first}, false});
    out.push_back({m, true});
    prev = m.second;
  }
  if (prev != s.size()) out.push_back({{prev, uint32_t(s.size())}, false});
}

// ---- NormalizedString ----------------------------------------------------------------------------

Normalized Normalized::from_original(std::string_view s, uint32_t base) {
  Normalized n;
  n.text.assign(s);
  n.align.resize(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t len;
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      len = 1;
    } else {
      utf8_next(s, i, &len);
    }
    Offsets a{uint32_t(base + i), uint32_t(base + i + len)};
    for (size_t k = 0; k < len; k++) n.align[i + k] = a;
    i += len;
  }
  n.orig = {base, uint32_t(base + s.size())};
  return n;
}

Offsets Normalized::original_range(size_t b, size_t e) const {
  if (b >= e || e > align.size()) return {orig.first, orig.first};
  return {align[b].first, align[e - 1].second};
}

Normalized Normalized::slice(size_t b, size_t e) const {
  Normalized n;
  n.text.assign(text, b, e - b);
  n.align.assign(align.begin() + b, align.begin() + e);
  n.orig = b < e ? original_range(b, e) : Offsets{orig.first, orig.first};
  return n;
}

void split_normalized(const Normalized& n, Matches& matches, SplitBehavior behavior, std::vector<Normalized>& out) {
  // (range, remove) pairs, per behaviour (HF NormalizedString::split).
  thread_local std::vector<std::pair<Offsets, bool>> splits;
  splits.clear();
  switch (behavior) {
    case SplitBehavior::Isolated:
      for (auto& m : matches) splits.push_back({m.first, false});
      break;
    case SplitBehavior::Removed:
      for (auto& m : matches) splits.push_back(m);
      break;
    case SplitBehavior::Contiguous: {
      bool prev = false;
      for (auto& m : matches) {
        if (m.second == prev && !splits.empty()) splits.back().first.second = m.first.second;
        else splits.push_back({m.first, false});
        prev = m.second;
      }
      break;
    }
    case SplitBehavior::MergedWithPrevious: {
      bool prev = false;
      for (auto& m : matches) {
        if (m.second && !prev && !splits.empty()) splits.back().first.second = m.first.second;
        else splits.push_back({m.first, false});
        prev = m.second;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool prev = false;
      for (size_t k = matches.size(); k-- > 0;) {
        auto& m = matches[k];
        if (m.second && !prev && !splits.empty()) splits.back().first.first = m.first.first;
        else splits.push_back({m.first, false});
        prev = m.second;
      }
      std::reverse(splits.begin(), splits.end());
      break;
    }
  }
  for (auto& s : splits) {
    if (s.second || s.first.first >= s.first.second) continue;
    out.push_back(n.slice(s.first.first, s.first.second));
  }
}

}  // namespace sky::tok
