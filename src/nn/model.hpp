// The model interface the rest of skyrun (the Trainer in src/train, PEFT, pipelines) calls:
// load a HF folder (config.json + safetensors) into LibTorch tensors, run forward with HF's
// loss semantics, list parameters by their HF names, switch train/eval, save a folder that HF
// transformers loads. Architectures live in arch_*.cpp; nothing here knows Lua except the
// last section (the userdata bridge).
//
// Stable for callers: add to it, do not change what is here.
#pragma once

#include <ATen/ATen.h>
#include <lua.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <string>
#include <utility>
#include <vector>

#include "nn/config.hpp"
#include "nn/safetensors.hpp"

namespace sky::nn {

// Which HF class a model is: the bare encoder/decoder, or one with a head on it.
enum class ModelHead {
  Base,                    // GPT2Model, LlamaModel, BertModel, ...: output last_hidden_state
  CausalLM,                // *ForCausalLM / GPT2LMHeadModel: logits [B, T, V]
  SequenceClassification,  // *ForSequenceClassification: logits [B, num_labels]
};

// What HF module class a declared module is, as PEFT and bitsandbytes tell them apart.
enum class ModuleKind {
  Linear,     // nn.Linear: weight [out, in]
  Conv1D,     // GPT-2's Conv1D: weight [in, out], y = x W + b
  Embedding,  // nn.Embedding
  Other,      // norms and the rest
};

// A leaf module (one that holds parameters), by HF name.
struct ModuleInfo {
  std::string name;  // "model.layers.0.self_attn.q_proj" (with the base prefix when there is a head)
  ModuleKind kind = ModuleKind::Other;
  int64_t in = 0, out = 0;   // Linear / Conv1D features
  bool has_bias = false;
  bool output_layer = false;  // lm_head, score, classifier: declared as head parameters
};

// One LoRA adapter as PEFT's LoraConfig resolves it (lua/peft does the module matching).
struct LoraSpec {
  std::string adapter = "default";
  int64_t r = 8;
  double lora_alpha = 8;
  bool use_rslora = false;
  double lora_dropout = 0;
  std::string init = "true";             // init_lora_weights: "true" | "gaussian" | "false"
  std::vector<std::string> targets;      // HF module names (Linear or Conv1D) that get A and B
  std::string bias = "none";             // "none" | "all" | "lora_only": which base biases train
  std::vector<std::string> modules_to_save;  // HF module names trained whole (a copy; the original is kept)
  bool trainable = true;                 // false: inference mode, nothing requires grad
};

// 4-bit weights (bitsandbytes' layout): see nn/quant4.hpp.
struct Quant4Weight;
struct Quant4Options {
  std::string quant_type = "nf4";        // "nf4" | "fp4"
  bool double_quant = false;
  at::ScalarType compute_dtype = at::kFloat;
  std::vector<std::string> skip_modules;  // llm_int8_skip_modules: names (or name suffixes) kept as they are
  std::string config_json;                // quantization_config as config.json holds it
};

struct LoadOptions {
  std::string dtype = "auto";  // "auto" (as saved) | "float32" | "bfloat16" | "float16"
  std::string device = "cpu";  // "cpu" | "cuda" | "cuda:N"
  ModelHead head = ModelHead::Base;
  // Config overrides, as HF's from_pretrained(..., num_labels=, id2label=, label2id=, problem_type=).
  std::optional<int64_t> num_labels;
  std::map<int64_t, std::string> id2label;
  std::map<std::string, int64_t> label2id;
  std::string problem_type;
  std::string attn_implementation;  // "" | "eager" | "sdpa"
  // BitsAndBytesConfig{load_in_4bit = true}: linears (not the head, embeddings, norms) stored in
  // 4 bits. A checkpoint saved in 4 bits (config.json with quantization_config) loads that way
  // without it.
  std::optional<Quant4Options> quant4;
};

// What from_pretrained did with the checkpoint's tensors, named as HF names them.
struct LoadReport {
  std::vector<std::string> missing;            // expected, not in the checkpoint: newly initialised
  std::vector<std::string> unexpected;         // in the checkpoint, not used by this class
  std::vector<std::string> mismatched;         // "name: checkpoint [a, b] vs model [c, d]" (an error unless ignored)
  std::string warnings(const std::string& class_name, const std::string& source) const;  // HF-style text; "" if clean
};

// Per-layer keys and values kept between generation steps.
struct KVCache {
  std::vector<at::Tensor> keys, values;  // per layer, [B, H_kv, S, D]
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
  // Layer `layer`'s new keys and values [B, H_kv, T, D] appended to what the cache holds; the cache
  // keeps the result and k, v become it (past + new, for attention).
  void append(int64_t layer, int64_t num_layers, at::Tensor& k, at::Tensor& v) {
    if (keys.size() < static_cast<size_t>(num_layers)) {
      keys.resize(num_layers);
      values.resize(num_layers);
    }
    if (keys[layer].defined()) {
      k = at::cat({keys[layer], k}, 2);
      v = at::cat({values[layer], v}, 2);
    }
    keys[layer] = k;
    values[layer] = v;
  }
};

struct ForwardArgs {
  at::Tensor input_ids;       // [B, T] int64
  at::Tensor attention_mask;  // [B, S] 1 = token, 0 = padding; S = past + T with a cache. Undefined: all ones
  at::Tensor labels;          // causal [B, T] (-100 ignored, shifted inside); classification [B] or [B, L]
  at::Tensor token_type_ids;  // BERT, optional
  at::Tensor position_ids;    // [B, T], optional (default past..past+T-1)
  // > 0: the causal loss is summed and divided by this count of label tokens over the whole
  // (accumulated) batch, as HF's num_items_in_batch; 0: mean over this batch's tokens.
  double num_items_in_batch = 0;
  KVCache* cache = nullptr;   // decoder-only: appended to
  // false (the Trainer's training step): a causal LM with labels may compute its loss without
  // ever materialising the [B, T, V] logits (chunked fused lm_head + cross-entropy); logits are
  // then undefined in the output.
  bool return_logits = true;
};

struct ForwardOutput {
  at::Tensor loss;    // [] float32; undefined without labels
  at::Tensor logits;  // CausalLM [B, T, V]; SequenceClassification [B, L]; Base: last_hidden_state [B, T, H]
};

struct GenerateOptions {
  int64_t max_new_tokens = 20;
  bool do_sample = false;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 50;                 // HF's default; 0 disables
  std::vector<int64_t> eos_token_ids;  // stop when every row produced one of them
  int64_t pad_token_id = -1;          // written after a row finished (default: first eos)
  at::Tensor attention_mask;           // [B, T0], for left-padded prompts
};

class Model {
 public:
  virtual ~Model() = default;

  const ModelConfig& config() const { return config_; }
  ModelConfig& mutable_config() { return config_; }
  ModelHead head() const { return head_; }
  std::string class_name() const;  // "LlamaForCausalLM", "BertModel", ...

  virtual ForwardOutput forward(const ForwardArgs& args) = 0;

  // Parameters by HF name, in registration order; a tied weight appears once (under the
  // embedding's name), as torch's named_parameters() lists it. The tensors are the model's
  // own (optimizers update them in place); requires_grad is set on floating ones.
  const std::vector<std::pair<std::string, at::Tensor>>& named_parameters() const { return params_; }
  at::Tensor parameter(const std::string& name) const;  // throws naming the parameter when absent
  int64_t num_parameters() const;

  void train(bool mode = true) { training_ = mode; }
  void eval() { training_ = false; }
  bool is_training() const { return training_; }

  at::Device device() const;
  at::ScalarType dtype() const;  // of the floating parameters
  // Moves/casts every parameter (new tensors; call named_parameters() again afterwards).
  void to(std::optional<at::Device> device, std::optional<at::ScalarType> dtype);

  // config.json + model.safetensors (or shards above max_shard_size bytes; 0 = one file).
  void save_pretrained(const std::string& dir, uint64_t max_shard_size = 0) const;

  // Causal LMs: [B, T0] → [B, T0 + new] (greedy or sampled, with a KV cache).
  at::Tensor generate(const at::Tensor& input_ids, const GenerateOptions& opts);

  // ---- modules ----
  // Leaf modules with parameters, in declaration order (a tied lm_head is listed: HF has it).
  std::vector<ModuleInfo> modules() const;

  // ---- LoRA (nn/lora.cpp): adapters live in the model; forward adds them to their linears ----
  // Adds an adapter: A [r, in] (kaiming-uniform as nn.Linear, or normal(0, 1/r) for "gaussian"),
  // B [out, r] zeros, in float32 when the base is 16-bit (PEFT's autocast_adapter_dtype). Every
  // other parameter is frozen (requires_grad = false) but the biases `bias` names and the
  // modules_to_save copies. Throws naming the module when a target is no Linear/Conv1D.
  void lora_add(const LoraSpec& spec);
  bool has_lora() const { return !lora_.empty() || !saved_originals_.empty(); }
  const LoraSpec* lora_spec() const { return lora_spec_ ? &*lora_spec_ : nullptr; }
  // The adapter as PEFT saves it: "base_model.model.<module>.lora_A.weight", "...lora_B.weight",
  // trainable biases ("<module>.base_layer.bias" for targeted modules), modules_to_save tensors
  // ("base_model.model.<module>.weight"). Sorted by name.
  std::vector<std::pair<std::string, at::Tensor>> lora_state_dict() const;
  // Copies an adapter file's tensors in (PEFT's names, with or without the adapter name); throws
  // naming the tensor and both shapes on a mismatch, and the tensors nothing here uses.
  void lora_load_state_dict(const std::map<std::string, at::Tensor>& tensors, const std::string& source);
  // Folds each adapter into its base weight (W += s B A, transposed for Conv1D; 4-bit weights are
  // dequantized, merged and quantized again) and removes the adapters: merge_and_unload.
  void lora_merge_and_unload();
  void lora_unload();  // removes the adapters, base weights untouched; modules_to_save keep their copy
  void set_adapters_enabled(bool on);  // disable_adapter(): the base model's output
  bool adapters_enabled() const { return adapters_enabled_; }
  // PEFT's get_nb_trainable_parameters: (trainable, all), 4-bit weights counted unpacked, the
  // modules_to_save originals counted beside their copies.
  std::pair<int64_t, int64_t> peft_parameter_counts() const;

  // ---- 4-bit weights (nn/quant4.cpp) ----
  bool is_loaded_in_4bit() const { return !quant_.empty(); }
  const Quant4Options* quant4_options() const { return quant4_opts_ ? &*quant4_opts_ : nullptr; }

  // ---- gradient checkpointing (nn/checkpoint.cpp) ----
  // In training, each transformer block runs without keeping its activations and is run again
  // in backward (RNG state replayed, autocast as in forward).
  void set_gradient_checkpointing(bool on) { gradient_checkpointing_ = on; }
  bool gradient_checkpointing() const { return gradient_checkpointing_; }

  // ---- transformer blocks (FSDP's units) ----
  // HF's class of the blocks (its _no_split_modules: "GPT2Block", "LlamaDecoderLayer",
  // "BertLayer", ...) and each block's HF parameter prefix ("transformer.h.3."), in forward order.
  virtual std::string block_class() const = 0;
  std::vector<std::string> block_prefixes() const;
  // From now on every block runs through hook(prefix, h, run), where run(h) is the block as it
  // would run without the hook (gradient checkpointing included); owner is kept with the model.
  using BlockFn = std::function<at::Tensor(const at::Tensor&)>;
  using BlockHook = std::function<at::Tensor(const std::string& prefix, const at::Tensor& h, const BlockFn& run)>;
  void set_block_hook(BlockHook hook, std::shared_ptr<void> owner) {
    block_hook_ = std::move(hook);
    block_hook_owner_ = std::move(owner);
  }
  const std::shared_ptr<void>& block_hook_owner() const { return block_hook_owner_; }

 protected:
  Model(ModelConfig config, ModelHead head) : config_(std::move(config)), head_(head) {}

  // ---- for architectures ----
  enum class Init { Normal, Zeros, Ones };
  // Declares a parameter (name relative to the base model, e.g. "layers.0.mlp.up_proj.weight";
  // head parameters with `head_param`, e.g. "lm_head.weight").
  void declare(const std::string& name, std::vector<int64_t> shape, Init init, bool head_param = false);
  // The weight tied to `name` (lm_head.weight → the embedding), never listed or saved itself.
  void declare_tied(const std::string& name, const std::string& target, bool head_param = true);
  // "<module>.weight" [out, in] (normal) and "<module>.bias" [out] (zeros): an nn.Linear.
  void declare_linear(const std::string& module, int64_t out, int64_t in, bool head_param = false, bool bias = true);
  // GPT-2's Conv1D: "<module>.weight" [in, out] (normal), "<module>.bias" [out] (zeros).
  void declare_conv1d(const std::string& module, int64_t in, int64_t out);
  void declare_embedding(const std::string& name, int64_t num, int64_t dim);  // "<name>" [num, dim] (normal)
  // "<module>.weight" (ones) and "<module>.bias" (zeros) of size n: an nn.LayerNorm.
  void declare_layer_norm(const std::string& module, int64_t n);
  // The decoder heads: lm_head (tied to `embedding` when the config says so) or score.
  void declare_decoder_head(const std::string& embedding, int64_t hidden, int64_t vocab);
  at::Tensor& P(const std::string& name);  // by declared (relative) name
  // y = x W^T + b for the nn.Linear "<name>" (bias if declared), or x W + b for a Conv1D; a 4-bit
  // weight is dequantized on the fly; an active LoRA adapter adds s B(A(dropout(x))).
  at::Tensor linear(const std::string& name, const at::Tensor& x);
  // Runs a transformer block: as it is, or under gradient checkpointing when that is on and the
  // model trains. `block` maps the hidden state to the next one; `prefix` ("layers.3.") names the
  // block's parameters (the trainable ones become the checkpoint's inputs).
  at::Tensor run_block(const std::string& prefix, const at::Tensor& h,
                       const std::function<at::Tensor(const at::Tensor&)>& block);
  at::Tensor dropout(const at::Tensor& x, double p) const;
  virtual std::string base_prefix() const = 0;  // "model", "transformer", "bert", "distilbert"
  virtual std::string hf_base_class() const = 0;  // "Llama", "GPT2", ...
  virtual std::string blocks_prefix() const = 0;  // relative prefix of block i: blocks_prefix() + "i."
  // Causal LM / classification losses as HF computes them.
  at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels, double num_items_in_batch) const;
  // The lm_head on the final hidden states h [B, T, C] and, with labels, the causal loss: through
  // the fused chunked path when args.return_logits is false (no lm_head bias, no adapter on it).
  void causal_lm_head(const at::Tensor& h, const ForwardArgs& args, ForwardOutput& out);
  at::Tensor classification_loss(const at::Tensor& logits, const at::Tensor& labels);

  ModelConfig config_;
  ModelHead head_;
  bool training_ = false;

 private:
  friend std::shared_ptr<Model> model_from_pretrained(const std::string&, const LoadOptions&, LoadReport*);
  friend std::shared_ptr<Model> model_from_config(const ModelConfig&, ModelHead, at::ScalarType, at::Device,
                                                  const Quant4Options*);
  struct Decl {
    std::string full_name;  // with the base prefix when the model has a head
    std::vector<int64_t> shape;
    Init init;
    std::string tied_to;  // relative name of the tensor it aliases, or ""
    ModuleKind kind = ModuleKind::Other;  // of the module this tensor belongs to
    bool head_param = false;
  };
  // A LoRA adapter on one linear (relative module name → layer).
  struct LoraLayer {
    std::string module;    // HF name
    double scaling = 1, dropout = 0;
    at::Tensor A, B;       // [r, in], [out, r]
  };
  std::string full_name(const std::string& rel, bool head_param) const;
  void materialize(at::ScalarType dtype, at::Device device, const class SafetensorsCheckpoint* ckpt,
                   const std::string& source, LoadReport* report, bool dtype_auto,
                   const Quant4Options* quant = nullptr);
  void rebuild_param_list();
  const Decl* find_decl(const std::string& rel) const;
  std::string rel_module(const std::string& hf_module) const;  // HF module name → relative; "" if none
  at::Tensor base_linear(const std::string& name, const Decl& w, const at::Tensor& x);
  bool quantizable(const std::string& rel_module, const Quant4Options& q) const;
  std::vector<std::pair<std::string, Decl>> decls_;  // relative name → declaration, in order
  mutable std::unordered_map<std::string, size_t> decl_index_;  // relative name → position in decls_
  std::map<std::string, at::Tensor> tensors_;        // relative name → tensor (tied ones alias)
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::map<std::string, LoraLayer> lora_;                 // relative module name → adapter
  std::map<std::string, at::Tensor> saved_originals_;     // modules_to_save: relative param → original
  std::optional<LoraSpec> lora_spec_;
  bool adapters_enabled_ = true;
  std::map<std::string, std::shared_ptr<Quant4Weight>> quant_;  // relative module name → 4-bit weight
  std::optional<Quant4Options> quant4_opts_;
  bool gradient_checkpointing_ = false;
  BlockHook block_hook_;
  std::shared_ptr<void> block_hook_owner_;
};

// Loads `folder` (config.json + model.safetensors or a sharded index). The head is opts.head.
std::shared_ptr<Model> model_from_pretrained(const std::string& folder, const LoadOptions& opts,
                                             LoadReport* report = nullptr);
// A randomly initialised model (HF's _init_weights: normal(0, initializer_range), norms 1/0).
std::shared_ptr<Model> model_from_config(const ModelConfig& config, ModelHead head, at::ScalarType dtype,
                                         at::Device device, const Quant4Options* quant = nullptr);
// A quantization_config (BitsAndBytesConfig.to_dict() as JSON) → options; throws naming `where`
// for what is not 4-bit bitsandbytes.
Quant4Options quant4_options_from_json(const std::string& json, const std::string& where);

at::ScalarType dtype_from_string(const std::string& s);  // "float32"/"bfloat16"/"float16"/"fp32"/...; throws
// safetensors dtypes ↔ LibTorch's; the first throws naming the file and tensor (not supported yet: ...)
at::ScalarType scalar_type_of(Dtype d, const std::string& file, const std::string& name);
Dtype st_dtype_of(at::ScalarType t);
std::string dtype_to_string(at::ScalarType t);          // "float32", "bfloat16", ...
at::Device device_from_string(const std::string& s);    // "cpu", "cuda", "cuda:1"; throws when unavailable

// ---- the Lua bridge ----------------------------------------------------------------------------
// A model in Lua is a "skyrun.Model" userdata owning one shared_ptr<Model>. C++ callers that
// get it as an argument (Trainer{model = m}) take it with lua_check_model.
std::shared_ptr<Model> lua_check_model(lua_State* L, int idx);  // argument error if not a model
std::shared_ptr<Model> lua_test_model(lua_State* L, int idx);   // nullptr if not a model
void lua_push_model(lua_State* L, std::shared_ptr<Model> model);  // pushes 1

}  // namespace sky::nn
