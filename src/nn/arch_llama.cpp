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
    declare_embedding("embed_tokens.weight", V, C);
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      std::string p = "layers." + std::to_string(i) + ".";
      declare_linear(p + "self_attn.q_proj", H * D, C, false, c.attention_bias);
      declare_linear(p + "self_attn.k_proj", K * D, C, false, c.attention_bias);
      declare_linear(p + "self_attn.v_proj", K * D, C, false, c.attention_bias);
      declare_linear(p + "self_attn.o_proj", C, H * D, false, c.o_proj_bias);
      if (c.qk_norm) {
        declare(p + "self_attn.q_norm.weight", {D}, Init::Ones);
        declare(p + "self_attn.k_norm.weight", {D}, Init::Ones);
      }
      declare_linear(p + "mlp.gate_proj", I, C, false, c.mlp_bias);
      declare_linear(p + "mlp.up_proj", I, C, false, c.mlp_bias);
      declare_linear(p + "mlp.down_proj", C, I, false, c.mlp_bias);
      declare(p + "input_layernorm.weight", {C}, Init::Ones);
      declare(p + "post_attention_layernorm.weight", {C}, Init::Ones);
    }
    declare("norm.weight", {C}, Init::Ones);
    declare_decoder_head("embed_tokens.weight", C, V);
  }

  std::string base_prefix() const override { return "model"; }
  std::string hf_base_class() const override { return hf_name(config_.model_type); }
  std::string block_class() const override { return std::string(hf_name(config_.model_type)) + "DecoderLayer"; }
  std::string blocks_prefix() const override { return "layers."; }

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
    at::Tensor cos, sin;  // [B, T, D] float32
    std::tie(cos, sin) = rope_tables(c.rope, D, pos);
    at::Tensor h = at::embedding(P("embed_tokens.weight"), ids.to(dev));  // [B, T, C]
    AttentionMask allowed = attention_allowed(a.attention_mask, B, T, S, true, c.sliding_window, dev, c.attn_implementation,
                                              a.cache ? at::Tensor() : a.position_ids);
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      const std::string p = "layers." + std::to_string(i) + ".";
      // captured by value: under gradient checkpointing the block runs again in backward
      h = run_block(p, h, [this, i, p, B, T, H, K, D, cos, sin, allowed, scale, cache = a.cache](const at::Tensor& h_in) {
        const ModelConfig& c = config_;  // [B, T, C] → [B, T, C]
        at::Tensor x = rms_norm(h_in, P(p + "input_layernorm.weight"), c.norm_eps);
        at::Tensor q = linear(p + "self_attn.q_proj", x).view({B, T, H, D});
        at::Tensor k = linear(p + "self_attn.k_proj", x).view({B, T, K, D});
        at::Tensor v = linear(p + "self_attn.v_proj", x).view({B, T, K, D}).transpose(1, 2);  // [B, K, T, D]
        if (c.qk_norm) {
          q = rms_norm(q, P(p + "self_attn.q_norm.weight"), c.norm_eps);
          k = rms_norm(k, P(p + "self_attn.k_norm.weight"), c.norm_eps);
        }
        q = rope_apply(q.transpose(1, 2), cos, sin);  // [B, H, T, D]
        k = rope_apply(k.transpose(1, 2), cos, sin);  // [B, K, T, D]
        if (cache) cache->append(i, c.num_hidden_layers, k, v);
        at::Tensor o = attention(q, k, v, allowed, scale, c.attention_dropout, training_);  // [B, H, T, D]
        o = o.transpose(1, 2).reshape({B, T, H * D});
        at::Tensor h_mid = h_in + linear(p + "self_attn.o_proj", o);
        x = rms_norm(h_mid, P(p + "post_attention_layernorm.weight"), c.norm_eps);
        x = activation(c.hidden_act, linear(p + "mlp.gate_proj", x)) * linear(p + "mlp.up_proj", x);  // [B, T, I]
        return h_mid + linear(p + "mlp.down_proj", x);
      });
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
