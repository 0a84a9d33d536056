// skyrun's tokenizer: loads a HuggingFace tokenizer.json and encodes/decodes exactly as the HF
// `tokenizers` library does (normalizer, pre-tokenizer, model, post-processor, decoder, added
// tokens, truncation, padding). Usable from C++ alone; the Lua binding is lua_tokenizer.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sky::tok {

struct Normalizer;
struct PreTokenizer;
struct Model;
struct PostProcessor;
struct Decoder;
struct Split;

// One encoded sequence (or pair), as HF's Encoding. offsets are in characters (code points) of
// the input text, as Python's tokenizers reports them.
struct Encoding {
  std::vector<uint32_t> ids;
  std::vector<uint32_t> type_ids;
  std::vector<std::string> tokens;
  std::vector<std::pair<uint32_t, uint32_t>> offsets;
  std::vector<uint8_t> special_tokens_mask;
  std::vector<uint8_t> attention_mask;
  std::vector<int32_t> sequence_ids;  // -1 for special tokens
  std::vector<Encoding> overflowing;

  size_t size() const { return ids.size(); }
  void append(Encoding&& other);
};

enum class TruncationStrategy { LongestFirst, OnlyFirst, OnlySecond };
enum class Direction { Right, Left };

struct Truncation {
  size_t max_length = 512;
  size_t stride = 0;
  TruncationStrategy strategy = TruncationStrategy::LongestFirst;
  Direction direction = Direction::Right;
};

struct Padding {
  bool to_longest = true;   // BatchLongest; false: Fixed(length)
  size_t length = 0;
  size_t pad_to_multiple_of = 0;
  Direction direction = Direction::Right;
  uint32_t pad_id = 0;
  uint32_t pad_type_id = 0;
  std::string pad_token = "[PAD]";
};

struct AddedToken {
  std::string content;
  uint32_t id = 0;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

struct EncodeOptions {
  bool add_special_tokens = true;
  bool want_tokens = true;  // fill Encoding::tokens
  std::optional<Truncation> truncation;
  std::optional<Padding> padding;
};

class Tokenizer {
 public:
  // Throws sky::Error-like std::runtime_error naming the file and the JSON path of a bad field.
  static std::shared_ptr<Tokenizer> from_file(const std::string& path);
  static std::shared_ptr<Tokenizer> from_json(std::string_view json, const std::string& source_name);
  ~Tokenizer();

  Encoding encode(std::string_view text, const EncodeOptions& opts) const;
  Encoding encode_pair(std::string_view a, std::string_view b, const EncodeOptions& opts) const;
  // Encodes on up to `threads` threads, then pads the batch (when opts.padding).
  std::vector<Encoding> encode_batch(const std::vector<std::string_view>& texts,
                                     const std::vector<std::string_view>* pairs, const EncodeOptions& opts,
                                     int threads) const;
  std::string decode(const std::vector<uint32_t>& ids, bool skip_special_tokens) const;

  std::optional<uint32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(uint32_t id) const;
  size_t vocab_size(bool with_added) const;
  bool is_special_id(uint32_t id) const;
  size_t num_special_tokens_to_add(bool is_pair) const;
  const std::vector<AddedToken>& added_tokens() const { return added_; }
  // Registers tokens (special or not) as HF's add_tokens does; returns how many were new.
  size_t add_tokens(const std::vector<AddedToken>& tokens);

  // The truncation and padding blocks of tokenizer.json (HF applies them by default).
  const std::optional<Truncation>& default_truncation() const { return truncation_; }
  const std::optional<Padding>& default_padding() const { return padding_; }
  const std::string& source() const { return source_; }
  // The JSON text when built from a string (so it can travel); empty when loaded from a file.
  const std::string& json_text() const { return json_; }
  bool from_file_path() const { return json_.empty(); }

  // Replaces the post-processor by one given as tokenizer.json's "post_processor" object (the
  // transformers layer sets add_bos_token/add_eos_token this way). Throws on a bad object.
  void set_post_processor_json(std::string_view json);
  const std::string& post_processor_override() const { return post_processor_json_; }

  // tokenizer.json as HF tokenizers' save writes it: the loaded file with the added tokens and
  // the post-processor as they are now (pretty-printed, two-space indent).
  std::string to_json() const;

  static void pad_encodings(std::vector<Encoding>& encodings, const Padding& p);
  static void truncate_encodings(Encoding& a, Encoding* b, const Truncation& t);

 private:
  Tokenizer();
  Encoding encode_sequence(std::string_view text, uint32_t type_id, bool want_tokens) const;
  void extract_added(std::string_view text, std::vector<Split>& splits) const;
  void refresh_added();
  Encoding post_process(Encoding a, std::optional<Encoding> b, const EncodeOptions& opts) const;

  static std::shared_ptr<Tokenizer> parse(std::string_view json, const std::string& source_name);

  std::string source_;
  std::string json_;
  std::string original_json_;  // the text it was built from, for to_json
  std::string post_processor_json_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  std::optional<Truncation> truncation_;
  std::optional<Padding> padding_;

  struct AddedVocab;
  std::unique_ptr<AddedVocab> av_;
  std::vector<AddedToken> added_;
};

}  // namespace sky::tok
