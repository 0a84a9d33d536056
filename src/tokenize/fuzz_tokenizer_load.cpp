// libFuzzer entry: any bytes as tokenizer.json must load or fail with an exception naming the
// problem; a tokenizer that loads must encode and decode a sample without crashing.
// Build with -Dfuzz=enabled (clang); seeds: ../shared/data/tokenizers/*.json and the deep-nesting
// ones of tests/host/json_fuzz_seeds.lua (tools/fuzz_tokenizers.sh uses both).
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>

#include "tokenize/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view json(reinterpret_cast<const char*>(data), size);
  std::shared_ptr<sky::tok::Tokenizer> t;
  try {
    t = sky::tok::Tokenizer::from_json(json, "fuzz.json");
  } catch (const std::exception&) {
    return 0;
  }
  try {
    sky::tok::EncodeOptions o;
    sky::tok::Encoding e = t->encode("Hello world! <s> héllo 😀 1234 \r\n", o);
    t->decode(e.ids, false);
    t->decode(e.ids, true);
    o.truncation = sky::tok::Truncation{};
    o.truncation->max_length = 3;
    t->encode_pair("a b c d", "e f g", o);
  } catch (const std::exception&) {
    // A file can load and still fail at encode time (an unk token missing from the vocabulary).
  }
  return 0;
}
