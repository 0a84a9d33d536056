// Post-processors (TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence)
// and decoders (ByteLevel, Metaspace, WordPiece, BPEDecoder, ByteFallback, Fuse, Strip, Replace,
// Sequence) of HF tokenizers.
#include <map>

#include "tokenize/components.hpp"

namespace sky::tok {

void Encoding::append(Encoding&& o) {
  ids.insert(ids.end(), o.ids.begin(), o.ids.end());
  type_ids.insert(type_ids.end(), o.type_ids.begin(), o.type_ids.end());
  tokens.insert(tokens.end(), std::make_move_iterator(o.tokens.begin()), std::make_move_iterator(o.tokens.end()));
  offsets.insert(offsets.end(), o.offsets.begin(), o.offsets.end());
  special_tokens_mask.insert(special_tokens_mask.end(), o.special_tokens_mask.begin(), o.special_tokens_mask.end());
  attention_mask.insert(attention_mask.end(), o.attention_mask.begin(), o.attention_mask.end());
  sequence_ids.insert(sequence_ids.end(), o.sequence_ids.begin(), o.sequence_ids.end());
}

namespace {

void set_sequence(Encoding& e, int32_t seq, std::optional<uint32_t> type_id) {
  e.sequence_ids.assign(e.size(), seq);
  if (type_id) e.type_ids.assign(e.size(), *type_id);
}

void push_special(Encoding& e, uint32_t id, const std::string& token, uint32_t type_id, bool with_tokens) {
  e.ids.push_back(id);
  e.type_ids.push_back(type_id);
  if (with_tokens) e.tokens.push_back(token);
  e.offsets.push_back({0, 0});
  e.special_tokens_mask.push_back(1);
  e.attention_mask.push_back(1);
  e.sequence_ids.push_back(-1);
}

bool is_space_like(uint32_t c) { return c == 0x120 || uc_is_whitespace(c); }

// ByteLevel's trim_offsets: offsets leave out the leading/trailing spaces ('Ġ') of each token.
void process_offsets(Encoding& e, bool add_prefix_space) {
  if (e.tokens.size() != e.ids.size()) return;  // tokens not kept: offsets were not asked for
  for (size_t i = 0; i < e.size(); i++) {
    const std::string& t = e.tokens[i];
    auto& off = e.offsets[i];
    size_t leading = 0, trailing = 0;
    size_t p = 0;
    while (p < t.size()) {
      size_t len;
      uint32_t c = utf8_next(t, p, &len);
      if (!is_space_like(c)) break;
      leading++;
      p += len;
    }
    size_t q = t.size();
    while (q > 0) {
      size_t s = q - 1;
      while (s > 0 && (static_cast<unsigned char>(t[s]) & 0xC0) == 0x80) s--;
      size_t len;
      uint32_t c = utf8_next(t, s, &len);
      if (!is_space_like(c)) break;
      trailing++;
      q = s;
    }
    if (leading == 0 && trailing == 0) continue;
    if (leading > 0) {
      bool is_first = i == 0 || off.first == 0;
      if (is_first && add_prefix_space && leading == 1) leading = 0;
      off.first = std::min<uint32_t>(off.first + static_cast<uint32_t>(leading), off.second);
    }
    if (trailing > 0 && off.second >= trailing) off.second = std::max<uint32_t>(off.second - static_cast<uint32_t>(trailing), off.first);
  }
}

void merge_all(std::vector<Encoding>& encodings) {
  for (size_t i = 1; i < encodings.size(); i++) encodings[0].append(std::move(encodings[i]));
  encodings.resize(1);
}

struct TemplatePiece {
  bool special;
  std::string id;  // "A"/"B" for sequences, the special token's key otherwise
  uint32_t type_id;
};

struct SpecialEntry {
  std::vector<uint32_t> ids;
  std::vector<std::string> tokens;
};

struct TemplateProcessing : PostProcessor {
  std::vector<TemplatePiece> single, pair;
  std::map<std::string, SpecialEntry> specials;

  size_t count(const std::vector<TemplatePiece>& t) const {
    size_t n = 0;
    for (auto& p : t)
      if (p.special) n += specials.at(p.id).ids.size();
    return n;
  }
  size_t added_tokens(bool is_pair) const override { return count(is_pair ? pair : single); }

  void process(std::vector<Encoding>& encs, bool add_special_tokens) const override {
    const auto& tpl = encs.size() == 2 ? pair : single;
    bool with_tokens = !encs.empty() && encs[0].tokens.size() == encs[0].ids.size();
    Encoding out;
    for (auto& p : tpl) {
      if (!p.special) {
        size_t i = p.id == "A" ? 0 : 1;
        if (i >= encs.size()) continue;
        Encoding e = std::move(encs[i]);
        set_sequence(e, static_cast<int32_t>(i), p.type_id);
        out.append(std::move(e));
      } else if (add_special_tokens) {
        const SpecialEntry& s = specials.at(p.id);
        for (size_t k = 0; k < s.ids.size(); k++) push_special(out, s.ids[k], s.tokens[k], p.type_id, with_tokens);
      }
    }
    encs.clear();
    encs.push_back(std::move(out));
  }
};

struct BertProcessing : PostProcessor {
  std::string sep, cls;
  uint32_t sep_id = 0, cls_id = 0;
  size_t added_tokens(bool is_pair) const override { return is_pair ? 3 : 2; }
  void process(std::vector<Encoding>& encs, bool add_special_tokens) const override {
    for (size_t i = 0; i < encs.size(); i++) set_sequence(encs[i], static_cast<int32_t>(i), std::nullopt);
    if (!add_special_tokens) return;
    bool with_tokens = encs[0].tokens.size() == encs[0].ids.size();
    Encoding out;
    push_special(out, cls_id, cls, 0, with_tokens);
    Encoding a = std::move(encs[0]);
    a.type_ids.assign(a.size(), 0);
    out.append(std::move(a));
    push_special(out, sep_id, sep, 0, with_tokens);
    if (encs.size() == 2) {
      Encoding b = std::move(encs[1]);
      b.type_ids.assign(b.size(), 1);
      out.append(std::move(b));
      push_special(out, sep_id, sep, 1, with_tokens);
    }
    encs.clear();
    encs.push_back(std::move(out));
  }
};

struct RobertaProcessing : PostProcessor {
  std::string sep, cls;
  uint32_t sep_id = 2, cls_id = 0;
  bool trim_offsets = true, add_prefix_space = true;
  size_t added_tokens(bool is_pair) const override { return is_pair ? 4 : 2; }
  void process(std::vector<Encoding>& encs, bool add_special_tokens) const override {
    for (size_t i = 0; i < encs.size(); i++) {
      set_sequence(encs[i], static_cast<int32_t>(i), 0u);
      if (trim_offsets) process_offsets(encs[i], add_prefix_space);
    }
    if (!add_special_tokens) return;
    bool with_tokens = encs[0].tokens.size() == encs[0].ids.size();
    Encoding out;
    push_special(out, cls_id, cls, 0, with_tokens);
    out.append(std::move(encs[0]));
    push_special(out, sep_id, sep, 0, with_tokens);
    if (encs.size() == 2) {
      push_special(out, sep_id, sep, 0, with_tokens);
      out.append(std::move(encs[1]));
      push_special(out, sep_id, sep, 0, with_tokens);
    }
    encs.clear();
    encs.push_back(std::move(out));
  }
};

struct ByteLevelProcessing : PostProcessor {
  bool trim_offsets = true, add_prefix_space = true;
  size_t added_tokens(bool) const override { return 0; }
  void process(std::vector<Encoding>& encs, bool) const override {
    for (size_t i = 0; i < encs.size(); i++) {
      if (trim_offsets) process_offsets(encs[i], add_prefix_space);
      set_sequence(encs[i], static_cast<int32_t>(i), std::nullopt);
    }
  }
};

struct SequenceProcessing : PostProcessor {
  std::vector<std::unique_ptr<PostProcessor>> items;
  size_t added_tokens(bool is_pair) const override {
    size_t n = 0;
    for (auto& x : items) n += x->added_tokens(is_pair);
    return n;
  }
  void process(std::vector<Encoding>& encs, bool add_special_tokens) const override {
    // Each processor sees the list the previous one left; the caller merges what remains.
    for (auto& x : items) x->process(encs, add_special_tokens);
  }
};

std::pair<std::string, uint32_t> token_pair(const JsonAt& j) {
  if (!j.v.IsArray() || j.v.Size() != 2) j.fail("expected [token, id]");
  return {j.at(size_t(0)).str(), static_cast<uint32_t>(j.at(size_t(1)).uint())};
}

std::vector<TemplatePiece> read_template(const JsonAt& j) {
  std::vector<TemplatePiece> out;
  if (j.v.IsString()) j.fail("not supported yet: a template given as a string");
  for (size_t i = 0; i < j.size(); i++) {
    JsonAt p = j.at(i);
    p.expect_object();
    if (p.has("Sequence")) {
      JsonAt s = p.at("Sequence");
      std::string id = s.str("id");
      if (id != "A" && id != "B") s.at("id").fail("expected \"A\" or \"B\"");
      out.push_back({false, id, static_cast<uint32_t>(s.uint_or("type_id", 0))});
    } else if (p.has("SpecialToken")) {
      JsonAt s = p.at("SpecialToken");
      out.push_back({true, s.str("id"), static_cast<uint32_t>(s.uint_or("type_id", 0))});
    } else {
      p.fail("expected a Sequence or SpecialToken piece");
    }
  }
  return out;
}

}  // namespace

void default_process(std::vector<Encoding>& encs) {
  for (size_t i = 0; i < encs.size(); i++) set_sequence(encs[i], static_cast<int32_t>(i), std::nullopt);
  merge_all(encs);
}

std::unique_ptr<PostProcessor> post_processor_from_json(const JsonAt& j) {
  std::string type = j.type_name();
  if (type == "TemplateProcessing") {
    auto t = std::make_unique<TemplateProcessing>();
    if (auto st = j.opt("special_tokens")) {
      st->expect_object();
      for (auto it = st->v.MemberBegin(); it != st->v.MemberEnd(); ++it) {
        std::string key(it->name.GetString(), it->name.GetStringLength());
        JsonAt e{it->value, st->path + "." + key};
        SpecialEntry s;
        JsonAt ids = e.at("ids"), toks = e.at("tokens");
        for (size_t i = 0; i < ids.size(); i++) s.ids.push_back(static_cast<uint32_t>(ids.at(i).uint()));
        for (size_t i = 0; i < toks.size(); i++) s.tokens.push_back(toks.at(i).str());
        if (s.ids.size() != s.tokens.size()) e.fail("ids and tokens differ in length");
        t->specials[e.str_or("id", key)] = std::move(s);
      }
    }
    t->single = read_template(j.at("single"));
    t->pair = read_template(j.at("pair"));
    for (const char* which : {"single", "pair"}) {
      auto& tpl = std::string(which) == "single" ? t->single : t->pair;
      for (size_t i = 0; i < tpl.size(); i++)
        if (tpl[i].special && !t->specials.count(tpl[i].id))
          j.at(which).at(i).fail("special token '" + tpl[i].id + "' is not in special_tokens");
    }
    return t;
  }
  if (type == "BertProcessing") {
    auto b = std::make_unique<BertProcessing>();
    std::tie(b->sep, b->sep_id) = token_pair(j.at("sep"));
    std::tie(b->cls, b->cls_id) = token_pair(j.at("cls"));
    return b;
  }
  if (type == "RobertaProcessing") {
    auto r = std::make_unique<RobertaProcessing>();
    std::tie(r->sep, r->sep_id) = token_pair(j.at("sep"));
    std::tie(r->cls, r->cls_id) = token_pair(j.at("cls"));
    r->trim_offsets = j.boolean_or("trim_offsets", true);
    r->add_prefix_space = j.boolean_or("add_prefix_space", true);
    return r;
  }
  if (type == "ByteLevel") {
    auto b = std::make_unique<ByteLevelProcessing>();
    b->trim_offsets = j.boolean_or("trim_offsets", true);
    b->add_prefix_space = j.boolean_or("add_prefix_space", true);
    return b;
  }
  if (type == "Sequence") {
    auto s = std::make_unique<SequenceProcessing>();
    JsonAt items = j.at("processors");
    for (size_t i = 0; i < items.size(); i++) s->items.push_back(post_processor_from_json(items.at(i)));
    return s;
  }
  j.at("type").fail("unsupported post_processor type '" + type + "'");
}

// ---- decoders ------------------------------------------------------------------------------------

namespace {

struct ByteLevelDecoder : Decoder {
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (auto& t : tokens) {
      size_t mark = bytes.size();
      bool ok = true;
      size_t i = 0;
      while (i < t.size()) {
        size_t len;
        uint32_t c = utf8_next(t, i, &len);
        int b = byte_level_byte(c);
        if (b < 0) { ok = false; break; }
        bytes += static_cast<char>(b);
        i += len;
      }
      if (!ok) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

struct MetaspaceDecoder : Decoder {
  uint32_t replacement = 0x2581;
  bool prepend = true;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); k++) {
      std::string out;
      const std::string& t = tokens[k];
      size_t i = 0;
      while (i < t.size()) {
        size_t len;
        uint32_t c = utf8_next(t, i, &len);
        if (c == replacement) {
          if (!(k == 0 && prepend)) out += ' ';
        } else {
          out.append(t, i, len);
        }
        i += len;
      }
      tokens[k] = std::move(out);
    }
  }
};

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (s.find(from) == std::string::npos) return;
  std::string out;
  size_t p = 0, q;
  while ((q = s.find(from, p)) != std::string::npos) {
    out.append(s, p, q - p);
    out.append(to);
    p = q + from.size();
  }
  out.append(s, p, std::string::npos);
  s = std::move(out);
}

struct WordPieceDecoder : Decoder {
  std::string prefix = "##";
  bool cleanup = true;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); i++) {
      std::string& t = tokens[i];
      if (i != 0) {
        if (t.compare(0, prefix.size(), prefix) == 0) t.erase(0, prefix.size());
        else t.insert(0, 1, ' ');
      }
      if (cleanup) {
        replace_all(t, " .", ".");
        replace_all(t, " ?", "?");
        replace_all(t, " !", "!");
        replace_all(t, " ,", ",");
        replace_all(t, " ' ", "'");
        replace_all(t, " n't", "n't");
        replace_all(t, " 'm", "'m");
        replace_all(t, " do not", " don't");
        replace_all(t, " 's", "'s");
        replace_all(t, " 've", "'ve");
        replace_all(t, " 're", "'re");
      }
    }
  }
};

struct BPEDecoder : Decoder {
  std::string suffix = "</w>";
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); i++) replace_all(tokens[i], suffix, i + 1 == tokens.size() ? "" : " ");
  }
};

struct ByteFallbackDecoder : Decoder {
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    size_t pending_count = 0;
    auto flush = [&]() {
      if (pending_count == 0) return;
      if (utf8_valid(pending)) out.push_back(pending);
      else
        for (size_t k = 0; k < pending_count; k++) out.push_back("\xEF\xBF\xBD");
      pending.clear();
      pending_count = 0;
    };
    for (auto& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
        int h = hex(t[3]), l = hex(t[4]);
        if (h >= 0 && l >= 0) byte = h * 16 + l;
      }
      if (byte >= 0) {
        pending += static_cast<char>(byte);
        pending_count++;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
};

struct FuseDecoder : Decoder {
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

struct StripDecoder : Decoder {
  uint32_t content = ' ';
  size_t start = 0, stop = 0;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<std::pair<uint32_t, size_t>> chars;  // (cp, byte index)
      size_t i = 0;
      while (i < t.size()) {
        size_t len;
        chars.push_back({utf8_next(t, i, &len), i});
        i += len;
      }
      size_t start_cut = 0;
      for (size_t k = 0; k < std::min(start, chars.size()); k++) {
        if (chars[k].first == content) start_cut = k + 1;
        else break;
      }
      size_t stop_cut = chars.size();
      for (size_t k = 0; k < stop && k < chars.size(); k++) {
        size_t index = chars.size() - k - 1;
        if (chars[index].first == content) stop_cut = index;
        else break;
      }
      if (stop_cut < start_cut) stop_cut = start_cut;
      size_t b = start_cut < chars.size() ? chars[start_cut].second : t.size();
      size_t e = stop_cut < chars.size() ? chars[stop_cut].second : t.size();
      t = t.substr(b, e - b);
    }
  }
};

struct ReplaceDecoder : Decoder {
  ReplaceRule rule;
  explicit ReplaceDecoder(ReplaceRule r) : rule(std::move(r)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<Offsets> m;
    for (auto& t : tokens) {
      m.clear();
      rule.find(t, m);
      if (m.empty()) continue;
      std::string out;
      size_t last = 0;
      for (auto& x : m) {
        out.append(t, last, x.first - last);
        out += rule.content;
        last = x.second;
      }
      out.append(t, last, std::string::npos);
      t = std::move(out);
    }
  }
};

struct SequenceDecoder : Decoder {
  std::vector<std::unique_ptr<Decoder>> items;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& x : items) x->decode_chain(tokens);
  }
};

}  // namespace

std::unique_ptr<Decoder> decoder_from_json(const JsonAt& j) {
  std::string type = j.type_name();
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspaceDecoder>();
    std::string rep = j.str_or("replacement", "\xE2\x96\x81");
    if (rep.empty()) j.at("replacement").fail("expected a single character");
    size_t len;
    m->replacement = utf8_next(rep, 0, &len);
    if (j.has("prepend_scheme")) m->prepend = j.str("prepend_scheme") != "never";
    else m->prepend = j.boolean_or("add_prefix_space", true);
    return m;
  }
  if (type == "WordPiece") {
    auto w = std::make_unique<WordPieceDecoder>();
    w->prefix = j.str_or("prefix", "##");
    w->cleanup = j.boolean_or("cleanup", true);
    return w;
  }
  if (type == "BPEDecoder") {
    auto b = std::make_unique<BPEDecoder>();
    b->suffix = j.str_or("suffix", "</w>");
    return b;
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    auto s = std::make_unique<StripDecoder>();
    std::string c = j.str("content");
    if (c.empty()) j.at("content").fail("expected a single character");
    size_t len;
    s->content = utf8_next(c, 0, &len);
    s->start = j.uint_or("start", 0);
    s->stop = j.uint_or("stop", 0);
    return s;
  }
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(ReplaceRule::from_json(j));
  if (type == "Sequence") {
    auto s = std::make_unique<SequenceDecoder>();
    JsonAt items = j.at("decoders");
    for (size_t i = 0; i < items.size(); i++) s->items.push_back(decoder_from_json(items.at(i)));
    return s;
  }
  j.at("type").fail("unsupported decoder type '" + type + "'");
}

}  // namespace sky::tok
