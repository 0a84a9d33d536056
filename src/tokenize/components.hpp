// The components of the HF tokenizers pipeline (normalizers, pre-tokenizers, models,
// post-processors, decoders) and the JSON reader that builds them from tokenizer.json.
// Internal to src/tokenize; users go through tokenizer.hpp.
#pragma once

#include <rapidjson/document.h>

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenize/text.hpp"
#include "tokenize/tokenizer.hpp"

namespace sky::tok {

// ---- reading tokenizer.json with errors that name the JSON path ----------------------------------

struct JsonAt {
  const rapidjson::Value& v;
  std::string path;  // "model.merges[3]"

  [[noreturn]] void fail(const std::string& what) const;
  bool has(const char* key) const;
  JsonAt at(const char* key) const;  // required member
  std::optional<JsonAt> opt(const char* key) const;  // absent or null: nullopt
  JsonAt at(size_t i) const;
  std::string str() const;
  std::string str(const char* key) const;
  std::string str_or(const char* key, const std::string& def) const;
  bool boolean_or(const char* key, bool def) const;
  double num() const;
  uint64_t uint() const;
  uint64_t uint_or(const char* key, uint64_t def) const;
  bool is_null() const { return v.IsNull(); }
  size_t size() const;  // array length (fails unless an array)
  void expect_object() const;
  std::string type_name() const;  // the "type" member, or fail
};

// Every occurrence of `needle` in `text`, left to right, not overlapping (none for an empty needle).
void find_literal(std::string_view text, std::string_view needle, std::vector<Offsets>& out);

// HF's Replace ({"pattern": {"String": s} | {"Regex": r}, "content": c}), the normalizer's and the
// decoder's: what to find, and what to put in its place.
struct ReplaceRule {
  std::string literal;
  std::unique_ptr<Regex> regex;
  std::string content;
  void find(std::string_view text, std::vector<Offsets>& out) const;
  static ReplaceRule from_json(const JsonAt& j);
};

// ---- normalizers -------------------------------------------------------------------------------

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void normalize(Normalized& n) const = 0;
};
std::unique_ptr<Normalizer> normalizer_from_json(const JsonAt& j);

// ---- pre-tokenizers ------------------------------------------------------------------------------

// A split of the input: its normalized text and, for added tokens, the token already found.
struct Split {
  Normalized n;
  int64_t added_id = -1;
};

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  // Splits every piece of in (those without added_id) and writes the result to out.
  virtual void pre_tokenize(std::vector<Split>& splits) const = 0;
};
std::unique_ptr<PreTokenizer> pre_tokenizer_from_json(const JsonAt& j);

// Applies f(const Normalized&, std::vector<Normalized>& out) to each split without added_id.
template <class F>
void splits_apply(std::vector<Split>& splits, F f) {
  thread_local std::vector<Normalized> pieces;
  std::vector<Split> next;
  next.reserve(splits.size() * 2);
  for (auto& s : splits) {
    if (s.added_id >= 0) { next.push_back(std::move(s)); continue; }
    pieces.clear();
    f(s.n, pieces);
    for (auto& p : pieces)
      if (!p.text.empty()) next.push_back(Split{std::move(p), -1});
  }
  splits.swap(next);
}

// GPT-2's byte to printable-char table.
const uint32_t* byte_level_chars();
int byte_level_byte(uint32_t cp);  // -1 when cp is not one of the 256 chars

// ---- models ----------------------------------------------------------------------------------------

struct Token {
  uint32_t id;
  Offsets offsets;  // bytes within the split's normalized text
  std::string value;  // empty: the vocabulary's string for id
};

struct Model {
  virtual ~Model() = default;
  virtual void tokenize(std::string_view text, std::vector<Token>& out) const = 0;
  virtual std::optional<uint32_t> token_to_id(std::string_view token) const = 0;
  virtual const std::string* id_to_token(uint32_t id) const = 0;
  virtual size_t vocab_size() const = 0;
};
std::unique_ptr<Model> model_from_json(const JsonAt& j);

// ---- post-processors -------------------------------------------------------------------------------

struct PostProcessor {
  virtual ~PostProcessor() = default;
  virtual size_t added_tokens(bool is_pair) const = 0;
  // encodings: 1 or 2; merges them into one.
  virtual void process(std::vector<Encoding>& encodings, bool add_special_tokens) const = 0;
};
std::unique_ptr<PostProcessor> post_processor_from_json(const JsonAt& j);
// The merge without post-processor: sequence ids and type ids 0 and 1.
void default_process(std::vector<Encoding>& encodings);

// ---- decoders ----------------------------------------------------------------------------------------

struct Decoder {
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> decoder_from_json(const JsonAt& j);

}  // namespace sky::tok
