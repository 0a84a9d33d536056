// config.json reading: each model_type's own key names (GPT-2's n_embd, DistilBERT's dim, ...)
// mapped onto one ModelConfig, with HF's defaults where a key is absent.
#include "nn/config.hpp"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <cstdio>
#include <filesystem>

#include "host/bind.hpp"
#include "host/json.hpp"

namespace sky::nn {

namespace {

using Value = rapidjson::Value;

const char* const kSupported[] = {"gpt2", "llama", "mistral", "qwen2", "qwen3", "bert", "distilbert"};

struct Reader {
  const Value& obj;
  const std::string& where;

  const Value* get(const char* k) const {
    auto it = obj.FindMember(k);
    if (it == obj.MemberEnd() || it->value.IsNull()) return nullptr;
    return &it->value;
  }
  bool has(const char* k) const { return get(k) != nullptr; }
  int64_t integer(const char* k, int64_t def) const {
    const Value* v = get(k);
    if (!v) return def;
    if (v->IsInt64()) return v->GetInt64();
    if (v->IsDouble() && v->GetDouble() == static_cast<double>(static_cast<int64_t>(v->GetDouble())))
      return static_cast<int64_t>(v->GetDouble());
    throw sky::Error(where + ": '" + k + "' must be an integer");
  }
  double number(const char* k, double def) const {
    const Value* v = get(k);
    if (!v) return def;
    if (!v->IsNumber()) throw sky::Error(where + ": '" + k + "' must be a number");
    return v->GetDouble();
  }
  bool boolean(const char* k, bool def) const {
    const Value* v = get(k);
    if (!v) return def;
    if (!v->IsBool()) throw sky::Error(where + ": '" + k + "' must be true or false");
    return v->GetBool();
  }
  std::string string(const char* k, const std::string& def) const {
    const Value* v = get(k);
    if (!v) return def;
    if (!v->IsString()) throw sky::Error(where + ": '" + k + "' must be a string");
    return v->GetString();
  }
};

void read_rope(const Reader& r, RopeConfig& rope, const std::string& where) {
  rope.theta = r.number("rope_theta", rope.theta);
  const Value* p = r.get("rope_parameters");
  if (!p) p = r.get("rope_scaling");
  if (!p) return;
  if (!p->IsObject()) throw sky::Error(where + ": rope_parameters must be an object");
  Reader rr{*p, where};
  rope.type = rr.string("rope_type", rr.string("type", "default"));
  rope.theta = rr.number("rope_theta", rope.theta);
  rope.factor = rr.number("factor", 1.0);
  rope.low_freq_factor = rr.number("low_freq_factor", 1.0);
  rope.high_freq_factor = rr.number("high_freq_factor", 4.0);
  rope.original_max_position_embeddings = rr.integer("original_max_position_embeddings", 0);
  if (rope.type != "default" && rope.type != "llama3" && rope.type != "linear")
    throw sky::Error(where + ": not supported yet: rope_type '" + rope.type + "' (supported: default, linear, llama3)");
}

}  // namespace

bool config_model_type_supported(const std::string& model_type) {
  for (const char* s : kSupported)
    if (model_type == s) return true;
  return false;
}

std::string config_supported_list() {
  std::string out;
  for (const char* s : kSupported) out += (out.empty() ? "" : ", ") + std::string(s);
  return out;
}

ModelConfig config_parse(std::string_view json, const std::string& where) {
  rapidjson::Document doc;
  if (JsonParsed r = json_parse(doc, json); !r)
    throw sky::Error(where + ": not valid JSON (" + r.reason() + " at byte " + std::to_string(r.offset) + ")");
  if (!doc.IsObject()) throw sky::Error(where + ": not a JSON object");
  Reader r{doc, where};
  ModelConfig c;
  c.json = std::string(json);
  c.model_type = r.string("model_type", "");
  if (c.model_type.empty()) throw sky::Error(where + ": no model_type");
  if (const Value* a = r.get("architectures"); a && a->IsArray())
    for (const auto& s : a->GetArray())
      if (s.IsString()) c.architectures.push_back(s.GetString());
  c.dtype = r.string("dtype", r.string("torch_dtype", ""));
  if (const Value* q = r.get("quantization_config"); q && q->IsObject()) {
    rapidjson::StringBuffer sb;
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    q->Accept(w);
    c.quantization_config = std::string(sb.GetString(), sb.GetSize());
  }
  c.initializer_range = r.number("initializer_range", 0.02);
  c.pad_token_id = r.integer("pad_token_id", -1);
  c.bos_token_id = r.integer("bos_token_id", -1);
  if (const Value* e = r.get("eos_token_id")) {
    if (e->IsArray()) {
      for (const auto& x : e->GetArray())
        if (x.IsInt64()) c.eos_token_ids.push_back(x.GetInt64());
    } else if (e->IsInt64()) {
      c.eos_token_ids.push_back(e->GetInt64());
    }
  }
  // Labels: id2label's keys are strings in JSON ("0": "NEGATIVE").
  if (const Value* m = r.get("id2label"); m && m->IsObject()) {
    for (auto it = m->MemberBegin(); it != m->MemberEnd(); ++it) {
      char* end = nullptr;
      long long id = strtoll(it->name.GetString(), &end, 10);
      if (!end || *end || !it->value.IsString()) throw sky::Error(where + ": id2label must map integers to names");
      c.id2label[id] = it->value.GetString();
    }
  }
  if (const Value* m = r.get("label2id"); m && m->IsObject())
    for (auto it = m->MemberBegin(); it != m->MemberEnd(); ++it)
      if (it->value.IsInt64()) c.label2id[it->name.GetString()] = it->value.GetInt64();
  c.num_labels = c.id2label.empty() ? r.integer("num_labels", 2) : static_cast<int64_t>(c.id2label.size());
  c.problem_type = r.string("problem_type", "");

  const std::string& t = c.model_type;
  if (t == "gpt2") {
    c.vocab_size = r.integer("vocab_size", 50257);
    c.hidden_size = r.integer("n_embd", 768);
    c.num_hidden_layers = r.integer("n_layer", 12);
    c.num_attention_heads = r.integer("n_head", 12);
    c.intermediate_size = r.integer("n_inner", 4 * c.hidden_size);
    c.max_position_embeddings = r.integer("n_positions", 1024);
    c.norm_eps = r.number("layer_norm_epsilon", 1e-5);
    c.hidden_act = r.string("activation_function", "gelu_new");
    c.tie_word_embeddings = r.boolean("tie_word_embeddings", true);
    c.hidden_dropout = r.number("resid_pdrop", 0.1);
    c.attention_dropout = r.number("attn_pdrop", 0.1);
    c.classifier_dropout = r.number("summary_first_dropout", 0.1);
    c.scale_attn_weights = r.boolean("scale_attn_weights", true);
    c.scale_attn_by_inverse_layer_idx = r.boolean("scale_attn_by_inverse_layer_idx", false);
    c.reorder_and_upcast_attn = r.boolean("reorder_and_upcast_attn", false);
    if (r.boolean("add_cross_attention", false)) throw sky::Error(where + ": not supported yet: GPT-2 with cross-attention");
  } else if (t == "llama" || t == "mistral" || t == "qwen2" || t == "qwen3") {
    c.vocab_size = r.integer("vocab_size", 32000);
    c.hidden_size = r.integer("hidden_size", 4096);
    c.intermediate_size = r.integer("intermediate_size", 11008);
    c.num_hidden_layers = r.integer("num_hidden_layers", 32);
    c.num_attention_heads = r.integer("num_attention_heads", 32);
    c.num_key_value_heads = r.integer("num_key_value_heads", c.num_attention_heads);
    c.head_dim = r.integer("head_dim", c.num_attention_heads ? c.hidden_size / c.num_attention_heads : 0);
    c.max_position_embeddings = r.integer("max_position_embeddings", 2048);
    c.norm_eps = r.number("rms_norm_eps", 1e-6);
    c.hidden_act = r.string("hidden_act", "silu");
    c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
    c.attention_dropout = r.number("attention_dropout", 0.0);
    if (t == "llama") {
      c.attention_bias = c.o_proj_bias = r.boolean("attention_bias", false);
      c.mlp_bias = r.boolean("mlp_bias", false);
    } else if (t == "qwen2") {
      c.attention_bias = true;  // q/k/v have biases, o_proj none
    } else if (t == "qwen3") {
      c.attention_bias = c.o_proj_bias = r.boolean("attention_bias", false);
      c.qk_norm = true;
    }
    read_rope(r, c.rope, where);
    // Sliding-window attention: a key is seen when it is fewer than `sliding_window` positions back.
    bool sliding = t == "mistral" || r.boolean("use_sliding_window", false);
    if (sliding) c.sliding_window = r.integer("sliding_window", 0);
  } else if (t == "bert") {
    c.vocab_size = r.integer("vocab_size", 30522);
    c.hidden_size = r.integer("hidden_size", 768);
    c.num_hidden_layers = r.integer("num_hidden_layers", 12);
    c.num_attention_heads = r.integer("num_attention_heads", 12);
    c.intermediate_size = r.integer("intermediate_size", 3072);
    c.max_position_embeddings = r.integer("max_position_embeddings", 512);
    c.type_vocab_size = r.integer("type_vocab_size", 2);
    c.norm_eps = r.number("layer_norm_eps", 1e-12);
    c.hidden_act = r.string("hidden_act", "gelu");
    c.hidden_dropout = r.number("hidden_dropout_prob", 0.1);
    c.attention_dropout = r.number("attention_probs_dropout_prob", 0.1);
    c.classifier_dropout = r.number("classifier_dropout", -1.0);
    c.tie_word_embeddings = r.boolean("tie_word_embeddings", true);
    if (r.string("position_embedding_type", "absolute") != "absolute")
      throw sky::Error(where + ": not supported yet: BERT position_embedding_type '" +
                       r.string("position_embedding_type", "") + "'");
  } else if (t == "distilbert") {
    c.vocab_size = r.integer("vocab_size", 30522);
    c.hidden_size = r.integer("dim", 768);
    c.num_hidden_layers = r.integer("n_layers", 6);
    c.num_attention_heads = r.integer("n_heads", 12);
    c.intermediate_size = r.integer("hidden_dim", 3072);
    c.max_position_embeddings = r.integer("max_position_embeddings", 512);
    c.norm_eps = 1e-12;
    c.hidden_act = r.string("activation", "gelu");
    c.hidden_dropout = r.number("dropout", 0.1);
    c.attention_dropout = r.number("attention_dropout", 0.1);
    c.classifier_dropout = r.number("seq_classif_dropout", 0.2);
    c.tie_word_embeddings = r.boolean("tie_word_embeddings", true);
  } else {
    throw sky::Error(where + ": not supported yet: model_type '" + t + "' (supported: " + config_supported_list() + ")");
  }
  if (c.num_attention_heads <= 0 || c.hidden_size <= 0 || c.num_hidden_layers < 0 || c.vocab_size <= 0)
    throw sky::Error(where + ": hidden size, head count and vocabulary size must be positive");
  if (c.head_dim == 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  if (c.num_key_value_heads == 0) c.num_key_value_heads = c.num_attention_heads;
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw sky::Error(where + ": num_attention_heads (" + std::to_string(c.num_attention_heads) +
                     ") is not a multiple of num_key_value_heads (" + std::to_string(c.num_key_value_heads) + ")");
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2" && c.model_type != "qwen3" &&
      c.hidden_size % c.num_attention_heads != 0)
    throw sky::Error(where + ": hidden size is not a multiple of the head count");
  return c;
}

ModelConfig config_load(const std::string& folder) {
  std::string path = (std::filesystem::path(folder) / "config.json").string();
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) throw sky::Error(path + ": cannot open (no config.json in " + folder + ")");
  std::string s;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  fclose(f);
  return config_parse(s, path);
}

std::string config_to_json(const ModelConfig& c) {
  rapidjson::Document doc;
  if (!json_parse(doc, c.json) || !doc.IsObject()) doc.SetObject();
  auto& a = doc.GetAllocator();
  auto set = [&](const char* key, Value v) {
    auto it = doc.FindMember(key);
    if (it != doc.MemberEnd()) it->value = v;
    else doc.AddMember(Value(key, a), v, a);
  };
  Value arch(rapidjson::kArrayType);
  for (const auto& s : c.architectures) arch.PushBack(Value(s.c_str(), a), a);
  set("architectures", std::move(arch));
  if (!c.dtype.empty()) set("dtype", Value(c.dtype.c_str(), a));
  if (!c.id2label.empty()) {
    Value m(rapidjson::kObjectType), l(rapidjson::kObjectType);
    for (const auto& [id, name] : c.id2label) m.AddMember(Value(std::to_string(id).c_str(), a), Value(name.c_str(), a), a);
    for (const auto& [name, id] : c.label2id) l.AddMember(Value(name.c_str(), a), Value(static_cast<int64_t>(id)), a);
    set("id2label", std::move(m));
    set("label2id", std::move(l));
  }
  if (!c.problem_type.empty()) set("problem_type", Value(c.problem_type.c_str(), a));
  set("model_type", Value(c.model_type.c_str(), a));
  if (c.quantization_config.empty()) {
    doc.RemoveMember("quantization_config");
  } else {
    rapidjson::Document q(&a);
    q.Parse(c.quantization_config.data(), c.quantization_config.size());
    if (!q.HasParseError() && q.IsObject()) set("quantization_config", Value(q, a));
  }
  rapidjson::StringBuffer sb;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(sb);
  w.SetIndent(' ', 2);
  doc.Accept(w);
  return std::string(sb.GetString(), sb.GetSize()) + "\n";
}

}  // namespace sky::nn
