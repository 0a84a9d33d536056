// Building blocks shared by the architectures (internal to src/nn): masks, attention,
// norms, activations, rotary embeddings. Shapes: B batch, T query length, S key length
// (past + T), H heads, D head size, C hidden size.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "nn/config.hpp"

namespace sky::nn {

// Which keys each query may see. `attention_mask` [B, S] (undefined: all ones); causal: key
// position <= query position (queries sit at past..past+T-1); window > 0: only the last `window`
// keys. `allowed` is [B, 1, T, S] bool, or, where LibTorch has fused attention (>= 2.5), undefined
// when the rule is causality alone aligned at the top left (no past keys) or nothing at all, as HF
// drops the mask for SDPA: then `causal` says which, and the kernel masks by itself.
struct AttentionMask {
  at::Tensor allowed;
  bool causal = false;
  bool eager = false;  // the written-out float32 softmax even where SDPA exists
  // One packed row (B = 1) of causal sequences: their start offsets [nseq + 1] (int32) and the
  // longest, for variable-length flash attention on CUDA (allowed is the same rule as a mask).
  at::Tensor cu_seqlens;
  int64_t max_seqlen = 0;
};
// packed_position_ids [B, T]: with no attention_mask and no cache, as HF's masking_utils, a
// position that does not follow the one before starts a new sequence (packed, padding-free
// batches) and queries see only keys of their own sequence: a block-diagonal causal mask.
AttentionMask attention_allowed(const at::Tensor& attention_mask, int64_t B, int64_t T, int64_t S, bool causal,
                                int64_t window, const at::Device& device, const std::string& attn_implementation,
                                const at::Tensor& packed_position_ids = at::Tensor());

// Checks an attn_implementation option: "eager", "sdpa" (an error where LibTorch < 2.5) or "".
void check_attn_implementation(const std::string& name);

// softmax(q k^T * scale, masked) v. With LibTorch >= 2.5 this is torch's scaled_dot_product_attention
// (flash or memory-efficient kernels, as HF 5's default "sdpa" attention); before, the softmax in
// float32 as HF's eager attention. A query that may see no key gets zero weights either way.
// q [B, H, T, D]; k, v [B, H_kv, S, D] (grouped-query attention when H_kv < H); → [B, H, T, D].
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                     double scale, double dropout_p, bool training);

// HF's LlamaRMSNorm: in float32, then weight * x.to(input dtype).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// "gelu" (erf), "gelu_new"/"gelu_pytorch_tanh" (tanh), "relu", "silu"/"swish".
at::Tensor activation(const std::string& name, const at::Tensor& x);

// Rotary embedding tables for positions [B, T]: cos, sin [B, T, D] in float32.
std::pair<at::Tensor, at::Tensor> rope_tables(const RopeConfig& rope, int64_t head_dim, const at::Tensor& positions);
// x [B, H, T, D] rotated with cos/sin [B, T, D] (cast to x's dtype).
at::Tensor rope_apply(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// Decoder *ForSequenceClassification: scores [B, T, L] at each row's last non-pad token → [B, L].
at::Tensor pool_last_token(const at::Tensor& scores, const at::Tensor& ids, int64_t pad_token_id,
                           const std::string& class_name);

}  // namespace sky::nn
