// 4-bit weights in bitsandbytes' format (QLoRA): blocks of 64 values scaled by their absmax,
// each value the index of the nearest NF4 (or FP4) code, two codes per byte with the first value
// in the high nibble; with double quantization the absmax values are themselves 8-bit codes of
// bitsandbytes' dynamic map, in blocks of 256, around their mean. Quantization follows
// bitsandbytes' torch backend (backends/default/ops.py) op for op; dequantization runs on the fly
// in forward, with a CUDA kernel of ours on the GPU (quant4_cuda.cu, -Dcuda=enabled) and ATen
// ops elsewhere. Nothing here knows Lua or the model.
// Dimensions: N values in the weight (out * in), K blocks of 64, K2 blocks of 256 absmax values.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace sky::nn {

struct Quant4Weight {
  at::Tensor packed;          // uint8 [N/2, 1]
  at::Tensor absmax;          // float32 [K], or uint8 [K] with double quantization
  at::Tensor code;            // float32 [16]: the NF4 or FP4 table (saved as quant_map)
  at::Tensor nested_absmax;   // float32 [K2] (double quantization)
  at::Tensor nested_code;     // float32 [256]: the dynamic map (saved as nested_quant_map)
  double nested_offset = 0;   // the mean subtracted before the absmax values were quantized
  int64_t blocksize = 64, nested_blocksize = 256;
  std::string quant_type = "nf4";
  at::ScalarType dtype = at::kFloat;   // of the weight before quantization (quant_state's "dtype")
  std::vector<int64_t> shape;          // [out, in]
  bool nested() const { return nested_absmax.defined(); }
  int64_t numel() const;
};

// The NF4 / FP4 code tables (get_4bit_type) and the signed dynamic map (create_dynamic_map()).
at::Tensor quant4_code(const std::string& quant_type);
at::Tensor quant4_dynamic_map();

// w [out, in] (any floating dtype, any device) → its 4-bit form on w's device.
Quant4Weight quant4_quantize(const at::Tensor& w, const std::string& quant_type, bool double_quant,
                             int64_t blocksize = 64);
// The absmax values as float32 [K] (the nested ones dequantized).
at::Tensor quant4_absmax(const Quant4Weight& q);
// The weight [out, in] in `dtype`.
at::Tensor quant4_dequantize(const Quant4Weight& q, at::ScalarType dtype);
// y = x W^T + b with W dequantized in `compute` (x cast to it, y cast back to x's dtype, as
// bitsandbytes' Linear4bit). Backward gives the input's gradient only; nothing of W is kept.
at::Tensor quant4_linear(const at::Tensor& x, const std::shared_ptr<const Quant4Weight>& q, const at::Tensor& bias,
                         at::ScalarType compute);

// The tensors transformers saves for a Linear4bit weight named `weight` ("<m>.weight"):
// weight, weight.absmax, weight.quant_map, [weight.nested_absmax, weight.nested_quant_map],
// weight.quant_state.bitsandbytes__<type> (the JSON of the rest, as bytes).
std::vector<std::pair<std::string, at::Tensor>> quant4_saved_tensors(const Quant4Weight& q, const std::string& weight);
// The inverse: `get(name)` returns a saved tensor or an undefined one. Throws naming the tensor
// (and `source`) when the quant state is missing, truncated or does not fit `shape`.
Quant4Weight quant4_from_saved(const std::function<at::Tensor(const std::string&)>& get, const std::string& weight,
                               const std::vector<int64_t>& shape, const std::string& source);

#if SKY_HAVE_QUANT4_CUDA
// quant4_cuda.cu: codes + float32 absmax [K] → [N] in out's dtype (float32, bfloat16, float16).
void quant4_dequantize_cuda(const at::Tensor& packed, const at::Tensor& absmax, const at::Tensor& code,
                            int64_t blocksize, at::Tensor& out);
#endif

}  // namespace sky::nn
