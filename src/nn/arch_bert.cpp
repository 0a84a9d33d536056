// Encoders as HF transformers: BERT (BertModel with its pooler, BertForSequenceClassification)
// and DistilBERT (DistilBertModel, DistilBertForSequenceClassification). Post-LayerNorm blocks,
// learned absolute positions, bidirectional attention masked at padding keys.
// Dimensions: B batch, T tokens, C hidden, H heads, D = C / H, I intermediate, L labels.
#include <cmath>

#include "host/bind.hpp"
#include "nn/arch.hpp"
#include "nn/layers.hpp"

namespace sky::nn {

namespace {

class Bert : public Model {
 public:
  Bert(const ModelConfig& c, ModelHead head) : Model(c, head) {
    if (head == ModelHead::CausalLM) throw sky::Error("not supported yet: BERT as a causal LM");
    const int64_t C = c.hidden_size, I = c.intermediate_size;
    declare_embedding("embeddings.word_embeddings.weight", c.vocab_size, C);
    declare_embedding("embeddings.position_embeddings.weight", c.max_position_embeddings, C);
    declare_embedding("embeddings.token_type_embeddings.weight", c.type_vocab_size, C);
    declare_layer_norm("embeddings.LayerNorm", C);
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      std::string p = "encoder.layer." + std::to_string(i) + ".";
      for (const char* m : {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"})
        declare_linear(p + m, C, C);
      declare_layer_norm(p + "attention.output.LayerNorm", C);
      declare_linear(p + "intermediate.dense", I, C);
      declare_linear(p + "output.dense", C, I);
      declare_layer_norm(p + "output.LayerNorm", C);
    }
    declare_linear("pooler.dense", C, C);
    if (head == ModelHead::SequenceClassification) declare_linear("classifier", c.num_labels, C, true);
  }

  std::string base_prefix() const override { return "bert"; }
  std::string hf_base_class() const override { return "Bert"; }
  std::string block_class() const override { return "BertLayer"; }
  std::string blocks_prefix() const override { return "encoder.layer."; }

  ForwardOutput forward(const ForwardArgs& a) override {
    const ModelConfig& c = config_;
    const int64_t B = a.input_ids.size(0), T = a.input_ids.size(1), C = c.hidden_size, H = c.num_attention_heads,
                  D = C / H;
    if (T > c.max_position_embeddings)
      throw sky::Error("BERT: sequence length " + std::to_string(T) + " is over max_position_embeddings (" +
                       std::to_string(c.max_position_embeddings) + ")");
    at::Device dev = P("embeddings.word_embeddings.weight").device();
    auto lopts = at::TensorOptions().dtype(at::kLong).device(dev);
    at::Tensor ids = a.input_ids.to(dev);
    at::Tensor pos = a.position_ids.defined() ? a.position_ids.to(dev) : at::arange(T, lopts).unsqueeze(0).expand({B, T});
    at::Tensor types = a.token_type_ids.defined() ? a.token_type_ids.to(dev).to(at::kLong) : at::zeros({B, T}, lopts);
    at::Tensor h = at::embedding(P("embeddings.word_embeddings.weight"), ids) +
                   at::embedding(P("embeddings.token_type_embeddings.weight"), types) +
                   at::embedding(P("embeddings.position_embeddings.weight"), pos);  // [B, T, C]
    h = at::layer_norm(h, {C}, P("embeddings.LayerNorm.weight"), P("embeddings.LayerNorm.bias"), c.norm_eps);
    h = dropout(h, c.hidden_dropout);
    AttentionMask allowed = attention_allowed(a.attention_mask, B, T, T, false, 0, dev, c.attn_implementation);  // [B, 1, T, T]
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      const std::string p = "encoder.layer." + std::to_string(i) + ".";
      // captured by value: under gradient checkpointing the block runs again in backward
      h = run_block(p, h, [this, p, B, T, C, H, D, allowed, scale](const at::Tensor& h_in) {
        const ModelConfig& c = config_;  // [B, T, C] → [B, T, C]
        at::Tensor q = linear(p + "attention.self.query", h_in).view({B, T, H, D}).transpose(1, 2);  // [B, H, T, D]
        at::Tensor k = linear(p + "attention.self.key", h_in).view({B, T, H, D}).transpose(1, 2);
        at::Tensor v = linear(p + "attention.self.value", h_in).view({B, T, H, D}).transpose(1, 2);
        at::Tensor o = attention(q, k, v, allowed, scale, c.attention_dropout, training_).transpose(1, 2).reshape({B, T, C});
        o = dropout(linear(p + "attention.output.dense", o), c.hidden_dropout);
        at::Tensor h_mid = at::layer_norm(o + h_in, {C}, P(p + "attention.output.LayerNorm.weight"),
                                          P(p + "attention.output.LayerNorm.bias"), c.norm_eps);
        at::Tensor x = activation(c.hidden_act, linear(p + "intermediate.dense", h_mid));  // [B, T, I]
        x = dropout(linear(p + "output.dense", x), c.hidden_dropout);
        return at::layer_norm(x + h_mid, {C}, P(p + "output.LayerNorm.weight"), P(p + "output.LayerNorm.bias"), c.norm_eps);
      });
    }
    ForwardOutput out;
    if (head_ == ModelHead::Base) {
      out.logits = h;  // last_hidden_state
      return out;
    }
    at::Tensor pooled = at::tanh(linear("pooler.dense", h.select(1, 0)));  // [B, C]
    pooled = dropout(pooled, c.classifier_dropout >= 0 ? c.classifier_dropout : c.hidden_dropout);
    out.logits = linear("classifier", pooled);  // [B, L]
    if (a.labels.defined()) out.loss = classification_loss(out.logits, a.labels);
    return out;
  }
};

class DistilBert : public Model {
 public:
  DistilBert(const ModelConfig& c, ModelHead head) : Model(c, head) {
    if (head == ModelHead::CausalLM) throw sky::Error("not supported yet: DistilBERT as a causal LM");
    const int64_t C = c.hidden_size, I = c.intermediate_size;
    declare_embedding("embeddings.word_embeddings.weight", c.vocab_size, C);
    declare_embedding("embeddings.position_embeddings.weight", c.max_position_embeddings, C);
    declare_layer_norm("embeddings.LayerNorm", C);
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      std::string p = "transformer.layer." + std::to_string(i) + ".";
      for (const char* m : {"attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"})
        declare_linear(p + m, C, C);
      declare_layer_norm(p + "sa_layer_norm", C);
      declare_linear(p + "ffn.lin1", I, C);
      declare_linear(p + "ffn.lin2", C, I);
      declare_layer_norm(p + "output_layer_norm", C);
    }
    if (head == ModelHead::SequenceClassification) {
      declare_linear("pre_classifier", C, C, true);
      declare_linear("classifier", c.num_labels, C, true);
    }
  }

  std::string base_prefix() const override { return "distilbert"; }
  std::string hf_base_class() const override { return "DistilBert"; }
  std::string block_class() const override { return "TransformerBlock"; }
  std::string blocks_prefix() const override { return "transformer.layer."; }

  ForwardOutput forward(const ForwardArgs& a) override {
    const ModelConfig& c = config_;
    const int64_t B = a.input_ids.size(0), T = a.input_ids.size(1), C = c.hidden_size, H = c.num_attention_heads,
                  D = C / H;
    if (T > c.max_position_embeddings)
      throw sky::Error("DistilBERT: sequence length " + std::to_string(T) + " is over max_position_embeddings (" +
                       std::to_string(c.max_position_embeddings) + ")");
    at::Device dev = P("embeddings.word_embeddings.weight").device();
    at::Tensor ids = a.input_ids.to(dev);
    at::Tensor pos = a.position_ids.defined()
                         ? a.position_ids.to(dev)
                         : at::arange(T, at::TensorOptions().dtype(at::kLong).device(dev)).unsqueeze(0).expand({B, T});
    at::Tensor h = at::embedding(P("embeddings.word_embeddings.weight"), ids) +
                   at::embedding(P("embeddings.position_embeddings.weight"), pos);  // [B, T, C]
    h = at::layer_norm(h, {C}, P("embeddings.LayerNorm.weight"), P("embeddings.LayerNorm.bias"), c.norm_eps);
    h = dropout(h, c.hidden_dropout);
    AttentionMask allowed = attention_allowed(a.attention_mask, B, T, T, false, 0, dev, c.attn_implementation);  // [B, 1, T, T]
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      const std::string p = "transformer.layer." + std::to_string(i) + ".";
      // captured by value: under gradient checkpointing the block runs again in backward
      h = run_block(p, h, [this, p, B, T, C, H, D, allowed, scale](const at::Tensor& h_in) {
        const ModelConfig& c = config_;  // [B, T, C] → [B, T, C]
        at::Tensor q = linear(p + "attention.q_lin", h_in).view({B, T, H, D}).transpose(1, 2);  // [B, H, T, D]
        at::Tensor k = linear(p + "attention.k_lin", h_in).view({B, T, H, D}).transpose(1, 2);
        at::Tensor v = linear(p + "attention.v_lin", h_in).view({B, T, H, D}).transpose(1, 2);
        at::Tensor o = attention(q, k, v, allowed, scale, c.attention_dropout, training_).transpose(1, 2).reshape({B, T, C});
        o = linear(p + "attention.out_lin", o);
        at::Tensor h_mid = at::layer_norm(o + h_in, {C}, P(p + "sa_layer_norm.weight"), P(p + "sa_layer_norm.bias"), c.norm_eps);
        at::Tensor x = linear(p + "ffn.lin2", activation(c.hidden_act, linear(p + "ffn.lin1", h_mid)));
        x = dropout(x, c.hidden_dropout);
        return at::layer_norm(x + h_mid, {C}, P(p + "output_layer_norm.weight"), P(p + "output_layer_norm.bias"), c.norm_eps);
      });
    }
    ForwardOutput out;
    if (head_ == ModelHead::Base) {
      out.logits = h;
      return out;
    }
    at::Tensor pooled = at::relu(linear("pre_classifier", h.select(1, 0)));  // [B, C]
    pooled = dropout(pooled, c.classifier_dropout >= 0 ? c.classifier_dropout : 0.2);
    out.logits = linear("classifier", pooled);  // [B, L]
    if (a.labels.defined()) out.loss = classification_loss(out.logits, a.labels);
    return out;
  }
};

}  // namespace

std::shared_ptr<Model> arch_bert_create(const ModelConfig& c, ModelHead head) {
  if (c.model_type == "distilbert") return std::make_shared<DistilBert>(c, head);
  return std::make_shared<Bert>(c, head);
}

}  // namespace sky::nn
