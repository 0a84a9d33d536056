// Pre-tokenizers of HF tokenizers: ByteLevel (GPT-2 regex and byte-to-char mapping), Split (any
// regex, every split behaviour, invert), Whitespace, WhitespaceSplit, BertPreTokenizer, Metaspace,
// Punctuation, Digits, Sequence.
#include "tokenize/components.hpp"

namespace sky::tok {

void replace_normalized(Normalized& n, const std::vector<Offsets>& matches, const std::string& content);

namespace {

struct ByteTables {
  uint32_t to_char[256];
  int16_t from_char[512];
  ByteTables() {
    for (auto& x : from_char) x = -1;
    bool direct[256] = {};
    for (int b = '!'; b <= '~'; b++) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; b++) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; b++) direct[b] = true;
    int n = 0;
    for (int b = 0; b < 256; b++) {
      to_char[b] = direct[b] ? uint32_t(b) : uint32_t(256 + n++);
      from_char[to_char[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

const Regex& gpt2_regex() {
  static const Regex re(kGpt2Pattern);
  return re;
}

SplitBehavior behavior_from_json(const JsonAt& j, const char* key, SplitBehavior def) {
  auto v = j.opt(key);
  if (!v) return def;
  std::string s = v->str();
  if (s == "Removed") return SplitBehavior::Removed;
  if (s == "Isolated") return SplitBehavior::Isolated;
  if (s == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (s == "Contiguous") return SplitBehavior::Contiguous;
  v->fail("unknown split behavior '" + s + "'");
}

struct ByteLevel : PreTokenizer {
  bool add_prefix_space = true, use_regex = true;
  void pre_tokenize(std::vector<Split>& splits) const override {
    thread_local Matches m;
    splits_apply(splits, [&](const Normalized& n, std::vector<Normalized>& out) {
      const Normalized* src = &n;
      Normalized tmp;
      if (add_prefix_space && (n.text.empty() || n.text[0] != ' ')) {
        tmp = n;
        if (!tmp.text.empty()) {
          Offsets a = tmp.align[0];
          tmp.text.insert(0, 1, ' ');
          tmp.align.insert(tmp.align.begin(), a);
        }
        src = &tmp;
      }
      size_t first = out.size();
      if (use_regex) {
        regex_matches(gpt2_regex(), src->text, m);
        split_normalized(*src, m, SplitBehavior::Isolated, out);
      } else {
        out.push_back(*src);
      }
      const ByteTables& t = byte_tables();
      for (size_t k = first; k < out.size(); k++) {
        Normalized& p = out[k];
        Rebuilder rb;
        rb.reserve(p.text.size() * 2);
        size_t i = 0;
        while (i < p.text.size()) {
          unsigned char c = static_cast<unsigned char>(p.text[i]);
          size_t len = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
          if (i + len > p.text.size()) len = p.text.size() - i;
          for (size_t q = 0; q < len; q++)
            rb.push(t.to_char[static_cast<unsigned char>(p.text[i + q])], p.align[q == 0 ? i : i + len - 1]);
          i += len;
        }
        rb.finish(p);
      }
    });
  }
};

struct SplitPre : PreTokenizer {
  std::unique_ptr<Regex> regex;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  void pre_tokenize(std::vector<Split>& splits) const override {
    thread_local Matches m;
    splits_apply(splits, [&](const Normalized& n, std::vector<Normalized>& out) {
      regex_matches(*regex, n.text, m);
      if (invert)
        for (auto& x : m) x.second = !x.second;
      split_normalized(n, m, behavior, out);
    });
  }
};

template <class Pred>
struct CharSplit : PreTokenizer {
  Pred pred;
  SplitBehavior behavior;
  CharSplit(Pred p, SplitBehavior b) : pred(p), behavior(b) {}
  void pre_tokenize(std::vector<Split>& splits) const override {
    thread_local Matches m;
    splits_apply(splits, [&](const Normalized& n, std::vector<Normalized>& out) {
      char_matches(n.text, pred, m);
      split_normalized(n, m, behavior, out);
    });
  }
};
template <class Pred>
std::unique_ptr<PreTokenizer> make_char_split(Pred p, SplitBehavior b) {
  return std::make_unique<CharSplit<Pred>>(p, b);
}

struct WhitespacePre : PreTokenizer {
  Regex re{R"(\w+|[^\w\s]+)"};
  void pre_tokenize(std::vector<Split>& splits) const override {
    thread_local Matches m;
    splits_apply(splits, [&](const Normalized& n, std::vector<Normalized>& out) {
      regex_matches(re, n.text, m);
      for (auto& x : m) x.second = !x.second;
      split_normalized(n, m, SplitBehavior::Removed, out);
    });
  }
};

struct BertPre : PreTokenizer {
  void pre_tokenize(std::vector<Split>& splits) const override {
    thread_local Matches m;
    thread_local std::vector<Normalized> words;
    splits_apply(splits, [&](const Normalized& n, std::vector<Normalized>& out) {
      words.clear();
      char_matches(n.text, uc_is_whitespace, m);
      split_normalized(n, m, SplitBehavior::Removed, words);
      for (auto& w : words) {
        char_matches(w.text, uc_is_bert_punctuation, m);
        split_normalized(w, m, SplitBehavior::Isolated, out);
      }
    });
  }
};

enum class PrependScheme { Always, Never, First };

struct Metaspace : PreTokenizer {
  uint32_t replacement = 0x2581;
  std::string rep_str = "\xE2\x96\x81";
  PrependScheme scheme = PrependScheme::Always;
  bool split = true;
  void pre_tokenize(std::vector<Split>& splits) const override {
    thread_local Matches m;
    thread_local std::vector<Offsets> spaces;
    splits_apply(splits, [&](const Normalized& n0, std::vector<Normalized>& out) {
      Normalized n = n0;
      spaces.clear();
      find_literal(n.text, " ", spaces);
      replace_normalized(n, spaces, rep_str);
      bool starts = n.text.compare(0, rep_str.size(), rep_str) == 0;
      if (!n.text.empty() && !starts) {
        if (scheme == PrependScheme::Always || (scheme == PrependScheme::First && n.orig.first == 0)) {
          Offsets a = n.align[0];
          n.text.insert(0, rep_str);
          n.align.insert(n.align.begin(), rep_str.size(), a);
        }
      }
      if (split) {
        uint32_t r = replacement;
        char_matches(n.text, [r](uint32_t c) { return c == r; }, m);
        split_normalized(n, m, SplitBehavior::MergedWithNext, out);
      } else {
        out.push_back(std::move(n));
      }
    });
  }
};

struct SequencePre : PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizer>> items;
  void pre_tokenize(std::vector<Split>& splits) const override {
    for (auto& x : items) x->pre_tokenize(splits);
  }
};

}  // namespace

const uint32_t* byte_level_chars() { return byte_tables().to_char; }
int byte_level_byte(uint32_t cp) { return cp < 512 ? byte_tables().from_char[cp] : -1; }

std::unique_ptr<PreTokenizer> pre_tokenizer_from_json(const JsonAt& j) {
  std::string type = j.type_name();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePre>();
    JsonAt items = j.at("pretokenizers");
    for (size_t i = 0; i < items.size(); i++) seq->items.push_back(pre_tokenizer_from_json(items.at(i)));
    return seq;
  }
  if (type == "ByteLevel") {
    auto b = std::make_unique<ByteLevel>();
    b->add_prefix_space = j.boolean_or("add_prefix_space", true);
    b->use_regex = j.boolean_or("use_regex", true);
    return b;
  }
  if (type == "Split") {
    auto s = std::make_unique<SplitPre>();
    JsonAt pat = j.at("pattern");
    pat.expect_object();
    std::string re;
    if (pat.has("String")) re = regex_escape(pat.str("String"));
    else if (pat.has("Regex")) re = pat.str("Regex");
    else pat.fail("expected a String or Regex pattern");
    try {
      s->regex = std::make_unique<Regex>(re);
    } catch (const std::exception& e) {
      pat.fail(e.what());
    }
    s->behavior = behavior_from_json(j, "behavior", SplitBehavior::Isolated);
    s->invert = j.boolean_or("invert", false);
    return s;
  }
  if (type == "Whitespace") return std::make_unique<WhitespacePre>();
  if (type == "WhitespaceSplit") return make_char_split(uc_is_whitespace, SplitBehavior::Removed);
  if (type == "BertPreTokenizer") return std::make_unique<BertPre>();
  if (type == "Punctuation")
    return make_char_split(uc_is_bert_punctuation, behavior_from_json(j, "behavior", SplitBehavior::Isolated));
  if (type == "Digits")
    return make_char_split(uc_is_numeric, j.boolean_or("individual_digits", false) ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
  if (type == "Metaspace") {
    auto m = std::make_unique<Metaspace>();
    std::string rep = j.str_or("replacement", "\xE2\x96\x81");
    if (rep.empty() || utf8_count(rep) != 1) j.at("replacement").fail("expected a single character");
    size_t len;
    m->replacement = utf8_next(rep, 0, &len);
    m->rep_str = rep;
    if (j.has("prepend_scheme")) {
      std::string s = j.str("prepend_scheme");
      if (s == "always") m->scheme = PrependScheme::Always;
      else if (s == "never") m->scheme = PrependScheme::Never;
      else if (s == "first") m->scheme = PrependScheme::First;
      else j.at("prepend_scheme").fail("unknown prepend_scheme '" + s + "'");
    } else {
      m->scheme = j.boolean_or("add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
    }
    m->split = j.boolean_or("split", true);
    return m;
  }
  j.at("type").fail("unsupported pre_tokenizer type '" + type + "'");
}

}  // namespace sky::tok
