// The Llama family as HF transformers: Llama 2/3 (rope scaling "llama3"), Mistral (sliding
// window), Qwen2 (q/k/v bias), Qwen3 (q/k RMSNorm per head). RMSNorm pre-norm blocks, rotary
// positions, grouped-query attention, SwiGLU MLP, tied or untied lm_head.
// Dimensions: B batch, T new tokens, S keys (past + T), C hidden, H query heads, K key/value
// heads, D head size, I intermediate, V vocab.
#include <cmath>

#include "host/bind.hpp"
#include "nn/arch.hpp"
#include "nn/layers.hpp"

namespace sky::nn {

namespace {

const char* hf_name(const std::string& t) {
  if (t == "mistral") return "Mistral";
  if (t == "qwen2") return "Qwen2";
  if (t == "qwen3") return "Qwen3";
  return "Llama";
}

class Llama : public Model {
 public:
  Llama(const ModelConfig& c, ModelHead head) : Model(c, head) {
    const int64_t C = c.hidden_size, V = c.vocab_size, I = c.intermediate_size, H = c.num_attention_heads,
                  K = c.num_key_value_heads, D = c.head_dim;
    declare("embed_tokens.weight", {V, C}, Init::Normal);
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      std::string p = "layers." + std::to_string(i) + ".";
      declare(p + "self_attn.q_proj.weight", {H * D, C}, Init::Normal);
      if (c.attention_bias) declare(p + "self_attn.q_proj.bias", {H * D}, Init::Zeros);
      declare(p + "self_attn.k_proj.weight", {K * D, C}, Init::Normal);
      if (c.attention_bias) declare(p + "self_attn.k_proj.bias", {K * D}, Init::Zeros);
      declare(p + "self_attn.v_proj.weight", {K * D, C}, Init::Normal);
      if (c.attention_bias) declare(p + "self_attn.v_proj.bias", {K * D}, Init::Zeros);
      declare(p + "self_attn.o_proj.weight", {C, H * D}, Init::Normal);
      if (c.o_proj_bias) declare(p + "self_attn.o_proj.bias", {C}, Init::Zeros);
      if (c.qk_norm) {
        declare(p + "self_attn.q_norm.weight", {D}, Init::Ones);
        declare(p + "self_attn.k_norm.weight", {D}, Init::Ones);
      }
      declare(p + "mlp.gate_proj.weight", {I, C}, Init::Normal);
      if (c.mlp_bias) declare(p + "mlp.gate_proj.bias", {I}, Init::Zeros);
      declare(p + "mlp.up_proj.weight", {I, C}, Init::Normal);
      if (c.mlp_bias) declare(p + "mlp.up_proj.bias", {I}, Init::Zeros);
      declare(p + "mlp.down_proj.weight", {C, I}, Init::Normal);
      if (c.mlp_bias) declare(p + "mlp.down_proj.bias", {C}, Init::Zeros);
      declare(p + "input_layernorm.weight", {C}, Init::Ones);
      declare(p + "post_attention_layernorm.weight", {C}, Init::Ones);
    }
    declare("norm.weight", {C}, Init::Ones);
    declare_decoder_head("embed_tokens.weight", C, V);
  }

  std::string base_prefix() const override { return "model"; }
  std::string hf_base_class() const override { return hf_name(config_.model_type); }

  ForwardOutput forward(const ForwardArgs& a) override {
    const ModelConfig& c = config_;
    const at::Tensor& ids = a.input_ids;  // [B, T]
    const int64_t B = ids.size(0), T = ids.size(1), H = c.num_attention_heads, K = c.num_key_value_heads,
                  D = c.head_dim;
    const int64_t past = a.cache ? a.cache->length() : 0, S = past + T;
    at::Device dev = P("embed_tokens.weight").device();
    at::Tensor pos = a.position_ids.defined()
                         ? a.position_ids.to(dev)
                         : at::arange(past, S, at::TensorOptions().dtype(at::kLong).device(dev)).unsqueeze(0).expand({B, T});
    auto [cos, sin] = rope_tables(c.rope, D, pos);  // [B, T, D] float32
    at::Tensor h = at::embedding(P("embed_tokens.weight"), ids.to(dev));  // [B, T, C]
    AttentionMask allowed = attention_allowed(a.attention_mask, B, T, S, true, c.sliding_window, dev, c.attn_implementation,
                                              a.cache ? at::Tensor() : a.position_ids);
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      std::string p = "layers." + std::to_string(i) + ".";
      at::Tensor x = rms_norm(h, P(p + "input_layernorm.weight"), c.norm_eps);
      at::Tensor q = linear(p + "self_attn.q_proj", x).view({B, T, H, D});
      at::Tensor k = linear(p + "self_attn.k_proj", x).view({B, T, K, D});
      at::Tensor v = linear(p + "self_attn.v_proj", x).view({B, T, K, D}).transpose(1, 2);  // [B, K, T, D]
      if (c.qk_norm) {
        q = rms_norm(q, P(p + "self_attn.q_norm.weight"), c.norm_eps);
        k = rms_norm(k, P(p + "self_attn.k_norm.weight"), c.norm_eps);
      }
      q = rope_apply(q.transpose(1, 2), cos, sin);  // [B, H, T, D]
      k = rope_apply(k.transpose(1, 2), cos, sin);  // [B, K, T, D]
      if (a.cache) a.cache->append(i, c.num_hidden_layers, k, v);
      at::Tensor o = attention(q, k, v, allowed, scale, c.attention_dropout, training_);  // [B, H, T, D]
      o = o.transpose(1, 2).reshape({B, T, H * D});
      h = h + linear(p + "self_attn.o_proj", o);
      x = rms_norm(h, P(p + "post_attention_layernorm.weight"), c.norm_eps);
      x = activation(c.hidden_act, linear(p + "mlp.gate_proj", x)) * linear(p + "mlp.up_proj", x);  // [B, T, I]
      h = h + linear(p + "mlp.down_proj", x);
    }
    h = rms_norm(h, P("norm.weight"), c.norm_eps);  // [B, T, C]
    ForwardOutput out;
    if (head_ == ModelHead::Base) {
      out.logits = h;
    } else if (head_ == ModelHead::CausalLM) {
      causal_lm_head(h, a, out);  // logits [B, T, V], loss
    } else {
      out.logits = pool_last_token(linear("score", h), ids.to(dev), c.pad_token_id, class_name());  // [B, L]
      if (a.labels.defined()) out.loss = classification_loss(out.logits, a.labels);
    }
    return out;
  }
};

}  // namespace

std::shared_ptr<Model> arch_llama_create(const ModelConfig& c, ModelHead head) {
  return std::make_shared<Llama>(c, head);
}

}  // namespace sky::nn
