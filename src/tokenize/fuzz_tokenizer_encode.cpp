// libFuzzer entry: any bytes as text for the real tokenizers under ../shared/data/tokenizers
// (SKYRUN_SHARED_DATA): encode, encode as a pair with truncation, decode; offsets must stay inside
// the text and every id must decode. Build with -Dfuzz=enabled (clang).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "tokenize/text.hpp"
#include "tokenize/tokenizer.hpp"

using namespace sky::tok;

static std::vector<std::shared_ptr<Tokenizer>>& tokenizers() {
  static std::vector<std::shared_ptr<Tokenizer>> all = [] {
    const char* env = getenv("SKYRUN_SHARED_DATA");
    std::string dir = std::string(env ? env : "/work/shared/data") + "/tokenizers/";
    std::vector<std::shared_ptr<Tokenizer>> v;
    for (const char* name : {"gpt2", "bert-base-uncased", "llama2-style-bytefallback", "llama3-style-split-regex",
                             "trained-bpe-metaspace", "unigram-t5-style", "wordpiece-cased-bert-style", "clip",
                             "unigram-t5-small", "phi-3-mini", "roberta-base"})
      v.push_back(Tokenizer::from_file(dir + name + ".json"));
    return v;
  }();
  return all;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  size_t chars = utf8_count(utf8_lossy(text));
  size_t half = size / 2;
  for (auto& t : tokenizers()) {
    EncodeOptions o;
    Encoding e = t->encode(text, o);
    for (auto& off : e.offsets)
      if (off.first > off.second || off.second > chars) __builtin_trap();
    if (e.tokens.size() != e.ids.size()) __builtin_trap();
    t->decode(e.ids, false);
    t->decode(e.ids, true);
    o.truncation = Truncation{};
    o.truncation->max_length = 7;
    o.padding = Padding{};
    o.padding->to_longest = false;
    o.padding->length = 9;
    Encoding p = t->encode_pair(std::string_view(text).substr(0, half), std::string_view(text).substr(half), o);
    if (p.ids.size() != 9) __builtin_trap();
  }
  return 0;
}
