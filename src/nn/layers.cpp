// Shared building blocks, each written to match HF transformers' arithmetic (float32 softmax,
// float32 RMSNorm, rope tables in float32 cast to the activations' dtype).
#include "nn/layers.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "host/bind.hpp"
#include "sky_config.h"
#include "torch/compat.hpp"

#if SKY_HAVE_CUDA
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

#define SKY_NN_SDPA SKY_TORCH_AT_LEAST(2, 5)
#if SKY_NN_SDPA
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#endif

namespace sky::nn {

namespace {

// A CUDA graph is being captured on the current stream (no device reads allowed).
[[maybe_unused]] bool capturing(const at::Tensor& t) {
#if SKY_HAVE_CUDA
  if (!t.is_cuda()) return false;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing(c10::cuda::getCurrentCUDAStream(t.device().index()).stream(), &status);
  return status != cudaStreamCaptureStatusNone;
#else
  (void)t;
  return false;
#endif
}

at::Tensor build_allowed(const at::Tensor& attention_mask, int64_t B, int64_t T, int64_t S, bool causal, int64_t window,
                         const at::Device& device) {
  auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor allowed = at::ones({B, 1, T, S}, opts.dtype(at::kBool));
  if (causal || window > 0) {
    at::Tensor qpos = at::arange(S - T, S, opts).view({T, 1});  // [T, 1]
    at::Tensor kpos = at::arange(0, S, opts).view({1, S});      // [1, S]
    at::Tensor m = causal ? kpos.le(qpos) : at::ones({T, S}, opts.dtype(at::kBool));
    if (window > 0) m = m.logical_and(kpos.gt(qpos - window));
    allowed = allowed.logical_and(m.view({1, 1, T, S}));
  }
  if (attention_mask.defined()) allowed = allowed.logical_and(attention_mask.to(device).ne(0).view({B, 1, 1, S}));
  return allowed;
}

}  // namespace

void check_attn_implementation(const std::string& name) {
  if (name.empty() || name == "eager") return;
  if (name == "sdpa") {
#if !SKY_NN_SDPA
    throw sky::Error("not supported yet: attn_implementation 'sdpa' with LibTorch " TORCH_VERSION
                     " (torch's scaled_dot_product_attention is used from LibTorch 2.5; 'eager' works here)");
#endif
    return;
  }
  if (name == "flash_attention_2" || name == "flash_attention_3" || name == "flex_attention")
    throw sky::Error("not supported yet: attn_implementation '" + name + "' ('sdpa' takes torch's flash kernels)");
  throw sky::Error("attn_implementation '" + name + "' is not one of 'eager', 'sdpa'");
}

// HF's find_packed_sequence_indices: [B, T] sequence index of each position (0 for the first),
// a new sequence wherever a position id is not the previous one plus one.
static at::Tensor packed_sequence_index(const at::Tensor& position_ids, const at::Device& device) {
  at::Tensor pos = position_ids.to(device).to(at::kLong);                        // [B, T]
  at::Tensor prev = at::cat({pos.narrow(1, 0, 1) - 1, pos.narrow(1, 0, pos.size(1) - 1)}, 1);
  return pos.sub(prev).ne(1).cumsum(1);                                          // [B, T]
}

AttentionMask attention_allowed(const at::Tensor& attention_mask, int64_t B, int64_t T, int64_t S, bool causal,
                                int64_t window, const at::Device& device, const std::string& attn_implementation,
                                const at::Tensor& packed_position_ids) {
  const bool eager = attn_implementation == "eager";
  if (attention_mask.defined() &&
      (attention_mask.dim() != 2 || attention_mask.size(0) != B || attention_mask.size(1) != S))
    throw sky::Error("attention_mask has shape " + c10::str(attention_mask.sizes()) + ", expected [" +
                     std::to_string(B) + ", " + std::to_string(S) + "]");
  if (packed_position_ids.defined() && !attention_mask.defined() && T == S && T > 1) {
    if (packed_position_ids.dim() != 2 || packed_position_ids.size(1) != T)
      throw sky::Error("position_ids has shape " + c10::str(packed_position_ids.sizes()) + ", expected [" +
                       std::to_string(B) + ", " + std::to_string(T) + "]");
    at::Tensor seq = packed_sequence_index(packed_position_ids, device).expand({B, T});  // [B, T]
    // One sequence per row is plain causal attention: keep the fused kernel's own masking. While
    // a CUDA graph is captured nothing is read back: the mask is built (same result), unfused.
    const bool capture = capturing(seq);
    if (capture || seq.narrow(1, T - 1, 1).any().item<bool>()) {
      at::Tensor same = seq.unsqueeze(2).eq(seq.unsqueeze(1)).unsqueeze(1);  // [B, 1, T, T]
      AttentionMask m{build_allowed(attention_mask, B, T, S, causal, window, device).logical_and(same), causal, eager};
      if (!capture && B == 1 && causal && window <= 0 && device.is_cuda()) {
        at::Tensor counts = at::bincount(seq[0]);                              // tokens per sequence
        m.cu_seqlens = at::cat({at::zeros({1}, counts.options()), counts.cumsum(0)}).to(at::kInt);
        m.max_seqlen = counts.max().item<int64_t>();
      }
      return m;
    }
  }
#if SKY_NN_SDPA
  // As HF's sdpa_mask: no mask tensor when the padding mask is all ones (one sync, as HF's check)
  // and the rest is what the kernel's is_causal does (top-left aligned: no past keys, or a single
  // query that sees every key).
  const bool window_bites = window > 0 && window < S;
  const bool kernel_can = !window_bites && (!causal || T == S || T == 1);
  // While a CUDA graph is captured (the Trainer's torch_compile) the check cannot read the device:
  // the mask is kept, which gives the same result.
  if (!eager && kernel_can && (!attention_mask.defined() || (!capturing(attention_mask) && attention_mask.all().item<bool>())))
    return {at::Tensor(), causal && T > 1, false};
#endif
  return {build_allowed(attention_mask, B, T, S, causal, window, device), causal, eager};
}

#if SKY_NN_SDPA
// Variable-length flash attention over one packed row: q [1, H, T, D], k/v [1, Hkv, T, D] as
// [T, heads, D] with the sequences' offsets, each sequence causal on its own (what the
// block-diagonal mask says, without computing the masked blocks). Called through the dispatcher
// (aten::_flash_attention_forward, differentiable) so that no LibTorch version's C++ signature is
// compiled in; an undefined result means "not here" (op missing or refused), and the caller masks.
static at::Tensor packed_flash_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const AttentionMask& mask, double scale, double dropout_p) {
  static bool disabled = std::getenv("SKYRUN_NO_VARLEN_ATTENTION") != nullptr;
  const auto dt = q.scalar_type();
  if (disabled || !q.is_cuda() || (dt != at::kBFloat16 && dt != at::kHalf) || k.scalar_type() != dt ||
      v.scalar_type() != dt || q.size(-1) % 8 != 0 || q.size(-1) > 256)
    return at::Tensor();
  static const auto op = c10::Dispatcher::singleton().findSchema({"aten::_flash_attention_forward", ""});
  if (!op) {
    disabled = true;
    return at::Tensor();
  }
  const int64_t H = q.size(1), T = q.size(2), D = q.size(3);
  at::Tensor qv = q[0].transpose(0, 1).contiguous();  // [T, H, D]
  at::Tensor kv = k[0].transpose(0, 1).contiguous();  // [T, Hkv, D]
  at::Tensor vv = v[0].transpose(0, 1).contiguous();
  at::Tensor cu = mask.cu_seqlens.to(q.device());
  try {
    const auto& args = op->schema().arguments();
    torch::jit::Stack stack;
    stack.emplace_back(qv);
    stack.emplace_back(kv);
    stack.emplace_back(vv);
    stack.emplace_back(cu);
    stack.emplace_back(cu);
    stack.emplace_back(mask.max_seqlen);
    stack.emplace_back(mask.max_seqlen);
    stack.emplace_back(dropout_p);
    stack.emplace_back(true);   // is_causal
    stack.emplace_back(false);  // return_debug_mask
    for (size_t i = stack.size(); i < args.size(); ++i) {
      if (args[i].name() == "scale") stack.emplace_back(scale);
      else if (args[i].default_value()) stack.emplace_back(*args[i].default_value());
      else throw std::runtime_error("aten::_flash_attention_forward: argument " + args[i].name() + " has no default");
    }
    op->callBoxed(&stack);
    return stack[0].toTensor().view({T, H, D}).transpose(0, 1).unsqueeze(0);  // [1, H, T, D]
  } catch (const std::exception& e) {
    std::fprintf(stderr, "skyrun: variable-length flash attention unavailable (%s); packed rows use a mask\n", e.what());
    disabled = true;
    return at::Tensor();
  }
}
#endif

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                     double scale, double dropout_p, bool training) {
  int64_t H = q.size(1), Hkv = k.size(1);
  const double p = training ? dropout_p : 0.0;
  auto repeat_kv = [&](const at::Tensor& t) {  // grouped-query attention: each key/value head serves H / Hkv query heads
    if (H == Hkv) return t;
    auto B = t.size(0), S = t.size(2), D = t.size(3);
    return t.unsqueeze(2).expand({B, Hkv, H / Hkv, S, D}).reshape({B, H, S, D});
  };
#if SKY_NN_SDPA
  if (!mask.eager && mask.cu_seqlens.defined()) {
    at::Tensor out = packed_flash_attention(q, k, v, mask, scale, p);
    if (out.defined()) return out;
  }
  if (!mask.eager) {
    // No cuDNN attention: it builds a plan for every new shape, and dynamic padding makes a new
    // shape of most batches. On the H200 (tools/device/sdpa_probe.py) a masked forward+backward
    // over 16 new lengths took 171 ms each with torch's default order and 1.0 ms without cuDNN;
    // the main job ran 10.3 s against 2.2 s. Flash and memory-efficient kernels have no per-shape
    // cost and were within 10% on the fixed causal shapes of tools/bench train.
    static const bool no_cudnn = [] {
      at::globalContext().setSDPUseCuDNN(false);
      return true;
    }();
    (void)no_cudnn;
    if (!mask.allowed.defined())  // flash attention takes grouped heads as they are
      return at::scaled_dot_product_attention(q, k, v, c10::nullopt, p, mask.causal, scale, /*enable_gqa=*/H != Hkv);
    // A query row with no key to see (a left pad) would be 0/0: let it see every key, then zero
    // its output, which is what the eager softmax below gives and keeps its gradient zero as well.
    at::Tensor none = mask.allowed.any(-1, true).logical_not();  // [B, 1, T, 1]
    at::Tensor out = at::scaled_dot_product_attention(q, repeat_kv(k), repeat_kv(v), mask.allowed.logical_or(none),
                                                      p, false, scale);
    return out.masked_fill(none, 0);
  }
#endif
  const at::Tensor& allowed = mask.allowed;
  at::Tensor scores = at::matmul(q, repeat_kv(k).transpose(2, 3)) * scale;  // [B, H, T, S]
  // The dtype's lowest finite value, as HF: a fully masked row (a left pad) stays finite.
  // The scores' dtype, not q's: under autocast q may be float32 (after Qwen3's q_norm) while the
  // matmul gives bf16 scores, where float32's lowest would overflow.
  const at::ScalarType st = scores.scalar_type();
  double lowest = st == at::kFloat    ? -std::numeric_limits<float>::max()
                  : st == at::kDouble ? -std::numeric_limits<double>::max()
                  : st == at::kHalf   ? -65504.0
                                      : -3.3895313892515355e38;
  scores = scores.masked_fill(allowed.logical_not(), lowest);
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  // A query that may see no key (a left pad) gets zero weights, as torch's SDPA (the default
  // attention of HF 5) gives: its output is then the residual alone, and the logits at the
  // last pad, which predict the first real token, match HF's.
  probs = probs.masked_fill(allowed.any(-1, true).logical_not(), 0);
  if (p > 0) probs = at::dropout(probs, p, true);
  return at::matmul(probs, repeat_kv(v));  // [B, H, T, D]
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor h = x.to(at::kFloat);
  at::Tensor var = h.pow(2).mean(-1, true);
  h = h * at::rsqrt(var + eps);
  return weight * h.to(x.scalar_type());
}

at::Tensor activation(const std::string& name, const at::Tensor& x) {
  if (name == "gelu") return at::gelu(x);
  // HF's NewGELUActivation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), is this formula in
  // six tensor ops; torch's tanh GELU computes the same in one kernel (in float32 for bf16 input),
  // saving one tensor for backward instead of five.
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return at::gelu(x, "tanh");
  if (name == "relu") return at::relu(x);
  if (name == "silu" || name == "swish") return at::silu(x);
  throw sky::Error("not supported yet: activation '" + name + "'");
}

std::pair<at::Tensor, at::Tensor> rope_tables(const RopeConfig& rope, int64_t head_dim, const at::Tensor& positions) {
  auto fopts = at::TensorOptions().dtype(at::kFloat).device(positions.device());
  at::Tensor exponent = at::arange(0, head_dim, 2, fopts.dtype(at::kLong)).to(at::kFloat) / static_cast<double>(head_dim);
  at::Tensor inv_freq = 1.0 / at::pow(rope.theta, exponent);  // [D/2]
  if (rope.type == "linear") {
    inv_freq = inv_freq / rope.factor;
  } else if (rope.type == "llama3") {
    double old_ctx = static_cast<double>(rope.original_max_position_embeddings);
    double low_wavelen = old_ctx / rope.low_freq_factor;
    double high_wavelen = old_ctx / rope.high_freq_factor;
    at::Tensor wavelen = 2 * M_PI / inv_freq;
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq);
    at::Tensor smooth = (old_ctx / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
    at::Tensor medium = (wavelen < high_wavelen).logical_not().logical_and((wavelen > low_wavelen).logical_not());
    inv_freq = at::where(medium, smoothed, scaled);
  }
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq.view({1, 1, -1});  // [B, T, D/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);                                           // [B, T, D]
  return {emb.cos(), emb.sin()};
}

at::Tensor rope_apply(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  int64_t half = x.size(-1) / 2;
  at::Tensor c = cos.to(x.scalar_type()).unsqueeze(1), s = sin.to(x.scalar_type()).unsqueeze(1);  // [B, 1, T, D]
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * c + rotated * s;
}

at::Tensor pool_last_token(const at::Tensor& scores, const at::Tensor& ids, int64_t pad_token_id,
                           const std::string& class_name) {
  int64_t B = ids.size(0), T = ids.size(1);
  at::Tensor last;
  if (pad_token_id < 0) {
    if (B != 1) throw sky::Error(class_name + ": cannot handle batch sizes > 1 if no padding token is defined");
    last = at::full({B}, T - 1, ids.options());
  } else {
    // HF: the highest index holding a non-pad token (works for left and right padding).
    at::Tensor non_pad = ids.ne(pad_token_id).to(at::kLong);
    last = (at::arange(T, ids.options()) * non_pad).argmax(-1);
  }
  at::Tensor rows = at::arange(B, ids.options()) * T + last;
  return scores.reshape({B * T, scores.size(-1)}).index_select(0, rows);  // [B, L]
}

}  // namespace sky::nn
