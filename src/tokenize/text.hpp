// Text machinery of the tokenizer pipeline: UTF-8 helpers, the Unicode predicates that HF
// tokenizers uses (Rust's char methods and the unicode_categories crate), PCRE2 regexes with the
// Oniguruma meaning of \s, and NormalizedString: a text with, for every byte, the byte range of
// the original input it came from. Nothing here knows about models or Lua.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sky::tok {

using Offsets = std::pair<uint32_t, uint32_t>;

// ---- UTF-8 ------------------------------------------------------------------------------------

// Decodes the code point at s[i] (valid UTF-8 assumed; invalid bytes decode as U+FFFD of length 1).
inline uint32_t utf8_next(std::string_view s, size_t i, size_t* len) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) { *len = 1; return c; }
  size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
  if (n == 1 || i + n > s.size()) { *len = 1; return 0xFFFD; }
  uint32_t cp = c & (0x7F >> n);
  for (size_t k = 1; k < n; k++) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  *len = n;
  return cp;
}

inline size_t utf8_len(uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

inline void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Replaces invalid UTF-8 sequences by U+FFFD, as Rust's String::from_utf8_lossy does.
std::string utf8_lossy(std::string_view bytes);
bool utf8_valid(std::string_view bytes);
size_t utf8_count(std::string_view s);

// ---- Unicode predicates (the Rust definitions HF tokenizers relies on) --------------------------

bool uc_is_whitespace(uint32_t c);    // char::is_whitespace (White_Space)
bool uc_is_alphanumeric(uint32_t c);  // char::is_alphanumeric
bool uc_is_numeric(uint32_t c);       // char::is_numeric (Nd, Nl, No)
bool uc_is_punctuation(uint32_t c);   // unicode_categories is_punctuation (P*)
bool uc_is_other(uint32_t c);         // unicode_categories is_other (C*)
bool uc_is_mark_nonspacing(uint32_t c);  // Mn
bool uc_is_combining_mark(uint32_t c);   // Mn, Mc, Me
bool uc_is_word(uint32_t c);          // regex \w
bool uc_is_bert_punctuation(uint32_t c);
// char::to_lowercase; appends the one to three code points to out, returns how many.
int uc_to_lowercase(uint32_t c, uint32_t out[3]);

// ---- regexes --------------------------------------------------------------------------------------

// A PCRE2 regex (UTF, UCP, JIT) compiled from an Oniguruma/Rust-style pattern: \s and \S are
// rewritten to the White_Space set that Oniguruma uses. Matching is thread-safe.
class Regex {
 public:
  explicit Regex(const std::string& pattern);  // throws std::runtime_error with PCRE2's message
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Appends the non-overlapping matches of text as byte ranges; empty matches are skipped.
  void find_all(std::string_view text, std::vector<Offsets>& out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

std::string regex_escape(std::string_view literal);

// ---- NormalizedString ---------------------------------------------------------------------------

// The normalized text of a piece of the input, with align[i] the original byte range that byte i
// of text came from (absolute offsets into the whole input). orig is the piece's original range.
struct Normalized {
  std::string text;
  std::vector<Offsets> align;
  Offsets orig{0, 0};

  static Normalized from_original(std::string_view s, uint32_t base = 0);
  bool empty() const { return text.empty(); }
  // The sub-piece of normalized bytes [b, e).
  Normalized slice(size_t b, size_t e) const;
  // Original range covered by normalized bytes [b, e) (HF convert_offsets).
  Offsets original_range(size_t b, size_t e) const;
};

// Builds a new normalized text char by char, carrying alignments. HF's transform(): an output char
// that replaces an input char takes its alignment; an inserted char takes the previous one's.
struct Rebuilder {
  std::string text;
  std::vector<Offsets> align;
  void reserve(size_t n) { text.reserve(n); align.reserve(n); }
  void push(uint32_t cp, Offsets a) {
    size_t n = utf8_len(cp);
    utf8_append(text, cp);
    align.insert(align.end(), n, a);
  }
  void push_bytes(std::string_view bytes, const Offsets* a) {
    text.append(bytes);
    align.insert(align.end(), a, a + bytes.size());
  }
  void finish(Normalized& n) {
    n.text = std::move(text);
    n.align = std::move(align);
  }
};

// Pattern matches covering the whole text: (range, is_match), as HF's Pattern::find_matches.
using Matches = std::vector<std::pair<Offsets, bool>>;

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// Splits n at the given matches with the behaviour; empty pieces are dropped.
void split_normalized(const Normalized& n, Matches& matches, SplitBehavior behavior, std::vector<Normalized>& out);

template <class Pred>
void char_matches(std::string_view s, Pred pred, Matches& out) {
  out.clear();
  if (s.empty()) { out.push_back({{0, 0}, false}); return; }
  size_t last = 0, i = 0;
  while (i < s.size()) {
    size_t len;
    uint32_t c = utf8_next(s, i, &len);
    if (pred(c)) {
      if (last < i) out.push_back({{uint32_t(last), uint32_t(i)}, false});
      out.push_back({{uint32_t(i), uint32_t(i + len)}, true});
      last = i + len;
    }
    i += len;
  }
  if (last < s.size()) out.push_back({{uint32_t(last), uint32_t(s.size())}, false});
}

void regex_matches(const Regex& re, std::string_view s, Matches& out);

}  // namespace sky::tok
