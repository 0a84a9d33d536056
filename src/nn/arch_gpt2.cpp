// GPT-2 (GPT2Model, GPT2LMHeadModel, GPT2ForSequenceClassification) as HF transformers:
// pre-LayerNorm blocks, fused qkv in a Conv1D (weight [in, out]: y = x W + b), learned
// absolute positions, gelu_new, tied lm_head by default.
// Dimensions: B batch, T new tokens, S keys (past + T), C hidden, H heads, D = C / H, V vocab.
#include <cmath>

#include "host/bind.hpp"
#include "nn/arch.hpp"
#include "nn/layers.hpp"

namespace sky::nn {

namespace {

class Gpt2 : public Model {
 public:
  Gpt2(const ModelConfig& c, ModelHead head) : Model(c, head) {
    const int64_t C = c.hidden_size, V = c.vocab_size, I = c.intermediate_size;
    declare_embedding("wte.weight", V, C);
    declare_embedding("wpe.weight", c.max_position_embeddings, C);
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      std::string p = "h." + std::to_string(i) + ".";
      declare(p + "ln_1.weight", {C}, Init::Ones);
      declare(p + "ln_1.bias", {C}, Init::Zeros);
      declare_conv1d(p + "attn.c_attn", C, 3 * C);  // Conv1D: weight [in, out]
      declare_conv1d(p + "attn.c_proj", C, C);
      declare(p + "ln_2.weight", {C}, Init::Ones);
      declare(p + "ln_2.bias", {C}, Init::Zeros);
      declare_conv1d(p + "mlp.c_fc", C, I);
      declare_conv1d(p + "mlp.c_proj", I, C);
    }
    declare("ln_f.weight", {C}, Init::Ones);
    declare("ln_f.bias", {C}, Init::Zeros);
    declare_decoder_head("wte.weight", C, V);
  }

  std::string base_prefix() const override { return "transformer"; }
  std::string hf_base_class() const override { return "GPT2"; }
  std::string block_class() const override { return "GPT2Block"; }
  std::string blocks_prefix() const override { return "h."; }

  ForwardOutput forward(const ForwardArgs& a) override {
    const ModelConfig& c = config_;
    const at::Tensor& ids = a.input_ids;  // [B, T]
    const int64_t B = ids.size(0), T = ids.size(1), C = c.hidden_size, H = c.num_attention_heads, D = C / H;
    const int64_t past = a.cache ? a.cache->length() : 0, S = past + T;
    if (S > c.max_position_embeddings)
      throw sky::Error("GPT-2: sequence length " + std::to_string(S) + " is over n_positions (" +
                       std::to_string(c.max_position_embeddings) + ")");
    at::Device dev = P("wte.weight").device();
    at::Tensor pos = a.position_ids.defined()
                         ? a.position_ids.to(dev)
                         : at::arange(past, S, at::TensorOptions().dtype(at::kLong).device(dev)).unsqueeze(0).expand({B, T});
    at::Tensor h = at::embedding(P("wte.weight"), ids.to(dev)) + at::embedding(P("wpe.weight"), pos);  // [B, T, C]
    h = dropout(h, c.hidden_dropout);
    AttentionMask allowed = attention_allowed(a.attention_mask, B, T, S, true, 0, dev, c.attn_implementation,
                                              a.cache ? at::Tensor() : a.position_ids);  // [B, 1, T, S]
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      const std::string p = "h." + std::to_string(i) + ".";
      // captured by value: under gradient checkpointing the block runs again in backward
      h = run_block(p, h, [this, i, p, B, T, C, H, D, allowed, cache = a.cache](const at::Tensor& h_in) {
        const ModelConfig& c = config_;  // [B, T, C] → [B, T, C]
        at::Tensor x = at::layer_norm(h_in, {C}, P(p + "ln_1.weight"), P(p + "ln_1.bias"), c.norm_eps);
        at::Tensor qkv = linear(p + "attn.c_attn", x);  // [B, T, 3C]
        auto parts = qkv.split(C, -1);
        at::Tensor q = parts[0].view({B, T, H, D}).transpose(1, 2);  // [B, H, T, D]
        at::Tensor k = parts[1].view({B, T, H, D}).transpose(1, 2);
        at::Tensor v = parts[2].view({B, T, H, D}).transpose(1, 2);
        if (cache) cache->append(i, c.num_hidden_layers, k, v);
        double scale = c.scale_attn_weights ? 1.0 / std::sqrt(static_cast<double>(D)) : 1.0;
        if (c.scale_attn_by_inverse_layer_idx) scale /= static_cast<double>(i + 1);
        at::Tensor o = attention(q, k, v, allowed, scale, c.attention_dropout, training_);  // [B, H, T, D]
        o = o.transpose(1, 2).reshape({B, T, C});
        at::Tensor h_mid = h_in + dropout(linear(p + "attn.c_proj", o), c.hidden_dropout);
        x = at::layer_norm(h_mid, {C}, P(p + "ln_2.weight"), P(p + "ln_2.bias"), c.norm_eps);
        x = activation(c.hidden_act, linear(p + "mlp.c_fc", x));
        return h_mid + dropout(linear(p + "mlp.c_proj", x), c.hidden_dropout);
      });
    }
    h = at::layer_norm(h, {C}, P("ln_f.weight"), P("ln_f.bias"), c.norm_eps);  // [B, T, C]
    ForwardOutput out;
    if (head_ == ModelHead::Base) {
      out.logits = h;
    } else if (head_ == ModelHead::CausalLM) {
      causal_lm_head(h, a, out);  // logits [B, T, V], loss
    } else {
      at::Tensor scores = linear("score", h);  // [B, T, L]
      out.logits = pool_last_token(scores, ids.to(dev), config_.pad_token_id, class_name());
      if (a.labels.defined()) out.loss = classification_loss(out.logits, a.labels);
    }
    return out;
  }
};

}  // namespace

std::shared_ptr<Model> arch_gpt2_create(const ModelConfig& c, ModelHead head) { return std::make_shared<Gpt2>(c, head); }

}  // namespace sky::nn
