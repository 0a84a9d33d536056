// safetensors without LibTorch: the header parser's checks (each malformed case a clear error
// naming the file and tensor), reading third-party files, writing single and sharded
// checkpoints, and config.json parsing.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "host/bind.hpp"
#include "nn/config.hpp"
#include "nn/safetensors.hpp"

using namespace sky::nn;

namespace {

// A file: 8-byte length, the JSON header as given, then `data_bytes` zero bytes.
std::string make_file(const std::string& json, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json + std::string(data_bytes, '\0');
}

std::string parse_error(const std::string& bytes) {
  try {
    safetensors_parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "bad.safetensors");
  } catch (const sky::Error& e) {
    return e.what();
  }
  return "";
}

std::string temp_dir() {
  char tmpl[] = "/tmp/skyrun-st-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}

std::string shared_data() {
  const char* d = std::getenv("SKYRUN_SHARED_DATA");
  return d ? d : "/work/shared/data";
}

}  // namespace

TEST_CASE("a valid header parses with its dtypes, shapes, offsets and metadata") {
  std::string f = make_file(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},"c":{"dtype":"BOOL","shape":[],"data_offsets":[32,33]},)"
      R"("d":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[33,36]},"e":{"dtype":"I64","shape":[0],"data_offsets":[36,36]}})",
      36);
  auto h = safetensors_parse(reinterpret_cast<const uint8_t*>(f.data()), f.size(), "ok.safetensors");
  REQUIRE(h.tensors.size() == 5);
  CHECK(h.metadata.at("format") == "pt");
  CHECK(h.find("a")->dtype == Dtype::F32);
  CHECK(h.find("a")->shape == std::vector<int64_t>{2, 3});
  CHECK(h.find("b")->dtype == Dtype::BF16);
  CHECK(h.find("c")->numel() == 1);
  CHECK(h.find("d")->dtype == Dtype::F8_E4M3);
  CHECK(h.find("e")->numel() == 0);
}

TEST_CASE("each malformed file is an error naming the file and the tensor") {
  SUBCASE("a truncated file shorter than the length prefix") {
    CHECK(parse_error("abc").find("bad.safetensors: truncated file (3 bytes") == 0);
  }
  SUBCASE("a header longer than the file") {
    std::string f = make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
    f[0] = static_cast<char>(0xff);
    CHECK(parse_error(f).find("header of 255 bytes is longer than the file") != std::string::npos);
  }
  SUBCASE("a file truncated inside the data section") {
    std::string f = make_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 10);
    std::string e = parse_error(f);
    CHECK(e.find("bad.safetensors: tensor 'w': data_offsets [0, 16] run past the end of the data section (10 bytes)") == 0);
  }
  SUBCASE("overlapping tensors") {
    std::string f = make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
    CHECK(parse_error(f).find("tensors 'a' and 'b' overlap") != std::string::npos);
  }
  SUBCASE("offsets that do not match the shape") {
    std::string f = make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
    CHECK(parse_error(f).find("tensor 'a': dtype F32 shape [3] needs 12 bytes but data_offsets span 8") != std::string::npos);
  }
  SUBCASE("offsets that end before they begin") {
    std::string f = make_file(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}})", 8);
    CHECK(parse_error(f).find("tensor 'a': data_offsets [8, 4] end before they begin") != std::string::npos);
  }
  SUBCASE("an unknown dtype") {
    std::string f = make_file(R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", 1);
    CHECK(parse_error(f) == "bad.safetensors: tensor 'a': unknown dtype 'Q4'");
  }
  SUBCASE("a shape whose size overflows") {
    std::string f = make_file(
        R"({"a":{"dtype":"F64","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8);
    CHECK(parse_error(f).find("tensor 'a': dtype F64 shape") != std::string::npos);
  }
  SUBCASE("a header that is not JSON") {
    CHECK(parse_error(make_file("{nope", 0)).find("header is not valid JSON") != std::string::npos);
  }
  SUBCASE("a tensor listed twice") {
    std::string f = make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                              R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", 2);
    CHECK(parse_error(f).find("tensor 'a' appears twice") != std::string::npos);
  }
}

TEST_CASE("third-party safetensors files read with their values") {
  auto f = SafetensorsFile::open(shared_data() + "/safetensors/tensor-1d-int32.safetensors");
  const TensorEntry* e = f->header().find("embedding");
  REQUIRE(e != nullptr);
  CHECK(e->dtype == Dtype::I32);
  int32_t v[3];
  f->read(*e, v);
  CHECK(v[0] == 1);
  CHECK(v[2] == 3);
  auto g = SafetensorsFile::open(shared_data() + "/safetensors/tensor-4d-float32.safetensors");
  CHECK(g->header().find("embedding")->shape == std::vector<int64_t>{2, 3, 1, 3});
}

TEST_CASE("a written file parses back with the same tensors and an 8-aligned data section") {
  std::string dir = temp_dir();
  float a[6] = {1, 2, 3, 4, 5, 6};
  uint16_t b[3] = {0x3f80, 0x4000, 0x4040};  // bf16 1, 2, 3
  std::string path = dir + "/x.safetensors";
  safetensors_write(path, {{"a", Dtype::F32, {2, 3}, a}, {"b", Dtype::BF16, {3}, b}}, {{"format", "pt"}});
  auto f = SafetensorsFile::open(path);
  CHECK(f->header().data_start % 8 == 0);
  CHECK(f->header().metadata.at("format") == "pt");
  float back[6];
  f->read(*f->header().find("a"), back);
  CHECK(back[5] == 6.0f);
  CHECK(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()) == 1);  // no temporary left
  std::filesystem::remove_all(dir);
}

TEST_CASE("a checkpoint over max_shard_size is written as shards with an index, and reads back") {
  std::string dir = temp_dir();
  std::vector<float> w(100, 1.0f);  // 400 bytes each
  std::vector<TensorToWrite> ts;
  for (int i = 0; i < 5; ++i) ts.push_back({"layer." + std::to_string(i) + ".weight", Dtype::F32, {100}, w.data()});
  auto files = safetensors_write_checkpoint(dir, "model", ts, {{"format", "pt"}}, 1000);
  CHECK(files.size() == 4);  // 3 shards (2 + 2 + 1 tensors) and the index
  CHECK(std::filesystem::exists(dir + "/model-00001-of-00003.safetensors"));
  CHECK(std::filesystem::exists(dir + "/model.safetensors.index.json"));
  auto ck = SafetensorsCheckpoint::open(dir);
  CHECK(ck.names().size() == 5);
  CHECK(ck.find("layer.4.weight")->file->path() == dir + "/model-00003-of-00003.safetensors");
  // Saving again unsharded replaces the shards and the index.
  safetensors_write_checkpoint(dir, "model", ts, {}, 0);
  CHECK(!std::filesystem::exists(dir + "/model.safetensors.index.json"));
  CHECK(!std::filesystem::exists(dir + "/model-00001-of-00003.safetensors"));
  CHECK(SafetensorsCheckpoint::open(dir).names().size() == 5);
  std::filesystem::remove_all(dir);
}

TEST_CASE("an index naming a shard that lacks the tensor is an error naming both") {
  std::string dir = temp_dir();
  float x = 1;
  safetensors_write(dir + "/s1.safetensors", {{"a", Dtype::F32, {1}, &x}}, {});
  std::ofstream(dir + "/model.safetensors.index.json") << R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}})";
  try {
    SafetensorsCheckpoint::open(dir);
    FAIL("expected an error");
  } catch (const sky::Error& e) {
    CHECK(std::string(e.what()).find("tensor 'b' is listed in model.safetensors.index.json but not in this shard") !=
          std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("sizes read as HF reads max_shard_size") {
  CHECK(parse_size("5GB") == 5000000000ull);
  CHECK(parse_size("500MiB") == 500ull * 1024 * 1024);
  CHECK(parse_size("1000") == 1000);
  CHECK_THROWS_AS(parse_size("5 parsecs"), sky::Error);
}

TEST_CASE("config.json reads both rope spellings and each family's key names") {
  SUBCASE("HF 5 rope_parameters") {
    auto c = config_parse(R"({"model_type":"llama","hidden_size":64,"num_attention_heads":4,"num_key_value_heads":2,
      "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"original_max_position_embeddings":32}})",
                          "c.json");
    CHECK(c.rope.type == "llama3");
    CHECK(c.rope.theta == 500000.0);
    CHECK(c.rope.original_max_position_embeddings == 32);
    CHECK(c.head_dim == 16);
    CHECK(c.num_key_value_heads == 2);
  }
  SUBCASE("older rope_theta + rope_scaling") {
    auto c = config_parse(R"({"model_type":"llama","hidden_size":64,"num_attention_heads":4,"rope_theta":1000000.0,
      "rope_scaling":{"type":"linear","factor":2.0}})", "c.json");
    CHECK(c.rope.type == "linear");
    CHECK(c.rope.theta == 1000000.0);
    CHECK(c.rope.factor == 2.0);
  }
  SUBCASE("GPT-2 and DistilBERT names") {
    auto g = config_parse(R"({"model_type":"gpt2","n_embd":64,"n_head":4,"n_layer":2,"n_inner":null})", "g.json");
    CHECK(g.hidden_size == 64);
    CHECK(g.intermediate_size == 256);
    auto d = config_parse(R"({"model_type":"distilbert","dim":64,"n_heads":4,"hidden_dim":128,
      "id2label":{"0":"NEG","1":"POS"}})", "d.json");
    CHECK(d.intermediate_size == 128);
    CHECK(d.num_labels == 2);
    CHECK(d.id2label.at(1) == "POS");
  }
  SUBCASE("Qwen2 has q/k/v biases and Qwen3 q/k norms") {
    CHECK(config_parse(R"({"model_type":"qwen2","hidden_size":64,"num_attention_heads":4})", "q").attention_bias);
    CHECK(config_parse(R"({"model_type":"qwen3","hidden_size":64,"num_attention_heads":4})", "q").qk_norm);
  }
  SUBCASE("errors name the file") {
    CHECK_THROWS_WITH(config_parse(R"({"model_type":"mamba"})", "m.json"),
                      doctest::Contains("m.json: not supported yet: model_type 'mamba'"));
    CHECK_THROWS_WITH(config_parse("{", "x.json"), doctest::Contains("x.json: not valid JSON"));
    CHECK_THROWS_WITH(config_parse(R"({"model_type":"llama","hidden_size":64,"num_attention_heads":4,
      "rope_parameters":{"rope_type":"yarn"}})", "y.json"), doctest::Contains("not supported yet: rope_type 'yarn'"));
  }
}
