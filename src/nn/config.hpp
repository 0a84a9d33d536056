// config.json → a typed model configuration, for every model_type skyrun runs. No LibTorch.
// The JSON read is kept whole, so a saved config carries every key HF wrote (even the ones we
// do not use), with ours updated.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace sky::nn {

// Rotary position embeddings (Llama family). HF 5.x writes `rope_parameters`; older files
// `rope_theta` + `rope_scaling`: both are read.
struct RopeConfig {
  std::string type = "default";  // "default" | "llama3" | "linear"
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
};

struct ModelConfig {
  std::string model_type;                  // "gpt2" | "llama" | "mistral" | "qwen2" | "qwen3" | "bert" | "distilbert"
  std::vector<std::string> architectures;  // e.g. {"LlamaForCausalLM"}
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  int64_t type_vocab_size = 0;  // BERT
  double norm_eps = 1e-5;       // rms_norm_eps / layer_norm_eps / layer_norm_epsilon
  std::string hidden_act = "silu";
  bool tie_word_embeddings = true;
  bool attention_bias = false;  // q/k/v(/o) bias (Qwen2: q/k/v always)
  bool o_proj_bias = false;
  bool mlp_bias = false;
  bool qk_norm = false;  // Qwen3
  int64_t sliding_window = 0;  // 0: full attention
  // HF's attn_implementation (a load option, not saved): "eager" (float32 softmax, written out)
  // or "sdpa" (torch's fused kernels, LibTorch >= 2.5); empty: sdpa where LibTorch has it.
  std::string attn_implementation;
  RopeConfig rope;
  double hidden_dropout = 0.0;
  double attention_dropout = 0.0;
  double classifier_dropout = -1.0;  // < 0: not set (BERT uses hidden_dropout)
  double initializer_range = 0.02;
  // GPT-2
  bool scale_attn_weights = true;
  bool scale_attn_by_inverse_layer_idx = false;
  bool reorder_and_upcast_attn = false;
  // Classification
  int64_t num_labels = 2;
  std::map<int64_t, std::string> id2label;
  std::map<std::string, int64_t> label2id;
  std::string problem_type;  // "" | "regression" | "single_label_classification" | "multi_label_classification"
  int64_t pad_token_id = -1, bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  std::string dtype;  // "float32", "bfloat16", ... as saved ("torch_dtype" in older files)
  std::string quantization_config;  // its JSON object when the weights are quantized (bitsandbytes), else ""
  std::string json;   // config.json as read (or built)
};

// Parses config.json text; `where` names the file in errors. Unknown model_types are errors
// only when `require_supported`.
ModelConfig config_parse(std::string_view json, const std::string& where);
ModelConfig config_load(const std::string& folder);  // folder/config.json

// The config.json text to save: the JSON read, with the fields we own rewritten
// (architectures, dtype, labels, problem_type, transformers_version).
std::string config_to_json(const ModelConfig& c);

// "LlamaForCausalLM" → "llama"-family checks: the supported model types.
bool config_model_type_supported(const std::string& model_type);
std::string config_supported_list();

}  // namespace sky::nn
