// bitsandbytes' 4-bit format: quantize (as its torch backend), dequantize, the Linear4bit matmul,
// and the tensors transformers saves. Read bitsandbytes' functional.py / backends/default/ops.py
// for the reference; tests/nn/test_quant4.lua compares with a transcription of them.
#include "nn/quant4.hpp"

#include <torch/torch.h>

#include <rapidjson/document.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "host/bind.hpp"

namespace sky::nn {

namespace {

// get_4bit_type: the tables, divided by their absmax (FP4's 12).
const double kNf4[16] = {-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                         -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                         0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                         0.7229568362236023, 1.0};
const double kFp4[16] = {0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0};

void check_quant_type(const std::string& t) {
  if (t != "nf4" && t != "fp4")
    throw sky::Error("bnb_4bit_quant_type must be \"nf4\" or \"fp4\" (got \"" + t + "\")");
}

// Blocks of `bs`: absmax per block and the values scaled into [-1, 1], as _quantize_4bit /
// quantize_blockwise do (a full block multiplies by the reciprocal, the last partial one divides).
std::pair<at::Tensor, at::Tensor> scale_blocks(const at::Tensor& flat, int64_t bs) {
  const int64_t n = flat.numel(), rem = n % bs, full = n - rem;
  at::Tensor com = flat.narrow(0, 0, full).view({full / bs, bs});
  at::Tensor absmax = std::get<0>(com.abs().max(-1));
  at::Tensor scaled = at::clamp(com * at::reciprocal(absmax.clamp_min(1e-38)).view({-1, 1}), -1, 1).reshape({-1});
  if (rem) {
    at::Tensor tail = flat.narrow(0, full, rem);
    at::Tensor am = tail.abs().max().clamp_min(1e-38);
    absmax = at::cat({absmax, am.unsqueeze(0)});
    scaled = at::cat({scaled, at::clamp(tail / am, -1, 1)});
  }
  return {scaled, absmax};
}

// Python's repr of a float (shortest text that reads back the same double), as json.dumps writes it.
std::string float_repr(double v) {
  char buf[40];
  for (int prec = 1; prec <= 17; ++prec) {
    snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  if (s.find_first_of(".en") == std::string::npos) s += ".0";  // 2 -> 2.0
  return s;
}

std::string dtype_name_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: throw sky::Error(std::string("not supported yet: 4-bit weights of dtype ") + c10::toString(t));
  }
}

at::ScalarType dtype_from_name(const std::string& s, const std::string& where) {
  if (s == "float32") return at::kFloat;
  if (s == "bfloat16") return at::kBFloat16;
  if (s == "float16") return at::kHalf;
  throw sky::Error(where + ": unknown dtype \"" + s + "\"");
}

// Keeps the 4-bit weight alive in an autograd context.
struct Quant4Holder : torch::CustomClassHolder {
  std::shared_ptr<const Quant4Weight> q;
  at::ScalarType compute = at::kFloat;
};

// bitsandbytes' MatMul4Bit: y = x W^T (+ b); the gradient of x only (and of b when it trains).
class Linear4bit : public torch::autograd::Function<Linear4bit> {
 public:
  // bias: an optional (an undefined tensor is no valid autograd input)
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const c10::optional<at::Tensor>& bias, c10::intrusive_ptr<Quant4Holder> holder) {
    at::Tensor w = quant4_dequantize(*holder->q, holder->q->dtype).to(x.scalar_type());
    ctx->saved_data["holder"] = c10::IValue::make_capsule(holder);
    ctx->saved_data["bias_grad"] = bias.has_value() && bias->requires_grad();
    return at::linear(x, w, bias.has_value() ? bias->to(x.scalar_type()) : at::Tensor());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto holder = c10::static_intrusive_pointer_cast<Quant4Holder>(ctx->saved_data["holder"].toCapsule());
    const at::Tensor& g = grads[0];  // [.., out]
    at::Tensor w = quant4_dequantize(*holder->q, holder->q->dtype).to(g.scalar_type());  // [out, in]
    at::Tensor gx = at::matmul(g, w);
    at::Tensor gb;
    if (ctx->saved_data["bias_grad"].toBool()) gb = g.reshape({-1, g.size(-1)}).sum(0);
    return {gx, gb, at::Tensor()};
  }
};

}  // namespace

int64_t Quant4Weight::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

at::Tensor quant4_code(const std::string& quant_type) {
  check_quant_type(quant_type);
  const double* src = quant_type == "nf4" ? kNf4 : kFp4;
  at::Tensor t = at::empty({16}, at::kFloat);
  float* p = t.data_ptr<float>();
  for (int i = 0; i < 16; ++i) p[i] = static_cast<float>(src[i]);
  return t.div_(t.abs().max());
}

at::Tensor quant4_dynamic_map() {
  // create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for each exponent i, the
  // means of torch.linspace(0.1, 1, 2^i + 1) in float32 times +-10^(i-6); then 0 and 1, sorted.
  // linspace as ATen's CPU kernel computes it (step = (end - start) / (n - 1); start + step * j for
  // the first half, end - step * (n - 1 - j) for the rest), one float rounding per operation.
  std::vector<double> data;
  for (int i = 0; i < 7; ++i) {
    const int64_t items = (int64_t{1} << i) + 1, half = items / 2;
    const float start = 0.1f, end = 1.0f, step = (end - start) / static_cast<float>(items - 1);
    std::vector<float> b(items);
    for (int64_t j = 0; j < items; ++j)
      b[j] = j < half ? start + step * static_cast<float>(j) : end - step * static_cast<float>(items - j - 1);
    const float scale = static_cast<float>(std::pow(10.0, -6 + i)), neg = static_cast<float>(-std::pow(10.0, -6 + i));
    std::vector<float> means(items - 1);
    for (int64_t j = 0; j + 1 < items; ++j) means[j] = (b[j] + b[j + 1]) / 2.0f;
    for (float m : means) data.push_back(scale * m);
    for (float m : means) data.push_back(neg * m);
  }
  data.push_back(0);
  data.push_back(1.0);
  while (data.size() < 256) data.push_back(0);
  std::sort(data.begin(), data.end());
  at::Tensor t = at::empty({256}, at::kFloat);
  float* p = t.data_ptr<float>();
  for (int i = 0; i < 256; ++i) p[i] = static_cast<float>(data[i]);
  return t;
}

Quant4Weight quant4_quantize(const at::Tensor& w, const std::string& quant_type, bool double_quant, int64_t blocksize) {
  check_quant_type(quant_type);
  if (!at::isFloatingType(w.scalar_type())) throw sky::Error("4-bit quantization needs a floating-point weight");
  at::NoGradGuard no_grad;
  const at::Device dev = w.device();
  Quant4Weight q;
  q.quant_type = quant_type;
  q.blocksize = blocksize;
  q.dtype = w.scalar_type();
  dtype_name_of(q.dtype);  // checks it is one bitsandbytes takes
  q.shape = w.sizes().vec();
  q.code = quant4_code(quant_type).to(dev);
  at::Tensor order = std::get<1>(at::sort(q.code, /*stable=*/true, 0, false));
  at::Tensor sorted = q.code.index_select(0, order);
  at::Tensor bounds = (sorted.narrow(0, 0, 15) + sorted.narrow(0, 1, 15)) / 2;
  auto [scaled, absmax] = scale_blocks(w.reshape({-1}).to(at::kFloat), blocksize);
  if (scaled.numel() % 2) scaled = at::constant_pad_nd(scaled, {0, 1}, 0);
  at::Tensor idx = at::bucketize(scaled, bounds, /*out_int32=*/true, /*right=*/false);
  if (quant_type != "nf4") idx = order.index_select(0, idx.to(at::kLong));
  at::Tensor q8 = idx.to(at::kByte);
  const int64_t m = q8.numel();
  q.packed = at::bitwise_or(q8.slice(0, 0, m, 2).mul(16), q8.slice(0, 1, m, 2)).unsqueeze(1).contiguous();
  if (double_quant) {
    // bitsandbytes: absmax.mean() in float32, whose last bit depends on the summation order (its
    // CPU and CUDA paths differ); the correctly rounded mean here
    at::Tensor offset = absmax.to(at::kDouble).mean().to(at::kFloat);
    q.nested_offset = offset.item<float>();
    q.nested_code = quant4_dynamic_map().to(dev);
    auto [s2, absmax2] = scale_blocks(absmax - offset, q.nested_blocksize);
    at::Tensor b2 = (q.nested_code.narrow(0, 0, 255) + q.nested_code.narrow(0, 1, 255)) / 2;
    q.absmax = at::bucketize(s2, b2, true, false).to(at::kByte);
    q.nested_absmax = absmax2;
  } else {
    q.absmax = absmax;
  }
  return q;
}

at::Tensor quant4_absmax(const Quant4Weight& q) {
  if (!q.nested()) return q.absmax.to(at::kFloat);
  const int64_t K = q.absmax.numel();
  at::Tensor vals = q.nested_code.index_select(0, q.absmax.reshape({-1}).to(at::kLong));  // [K]
  at::Tensor scale = q.nested_absmax.repeat_interleave(q.nested_blocksize).narrow(0, 0, K);
  return vals * scale + at::scalar_tensor(q.nested_offset, vals.options());
}

at::Tensor quant4_dequantize(const Quant4Weight& q, at::ScalarType dtype) {
  at::NoGradGuard no_grad;
  const int64_t N = q.numel();
  at::Tensor absmax = quant4_absmax(q);
#if SKY_HAVE_QUANT4_CUDA
  if (q.packed.is_cuda()) {
    at::Tensor out = at::empty({N}, q.packed.options().dtype(dtype));
    quant4_dequantize_cuda(q.packed, absmax.contiguous(), q.code, q.blocksize, out);
    return out.view(q.shape);
  }
#endif
  at::Tensor packed = q.packed.reshape({-1});
  at::Tensor codes = at::stack({at::bitwise_right_shift(packed, 4), at::bitwise_and(packed, 15)}, 1).reshape({-1});
  at::Tensor vals = q.code.index_select(0, codes.narrow(0, 0, N).to(at::kLong));  // float32 [N]
  at::Tensor scale = absmax.repeat_interleave(q.blocksize).narrow(0, 0, N);
  return (vals * scale).view(q.shape).to(dtype);
}

at::Tensor quant4_linear(const at::Tensor& x, const std::shared_ptr<const Quant4Weight>& q, const at::Tensor& bias,
                         at::ScalarType compute) {
  auto holder = c10::make_intrusive<Quant4Holder>();
  holder->q = q;
  holder->compute = compute;
  at::Tensor xc = x.scalar_type() == compute ? x : x.to(compute);
  c10::optional<at::Tensor> b;
  if (bias.defined()) b = bias;
  at::Tensor y = Linear4bit::apply(xc, b, holder);
  return y.scalar_type() == x.scalar_type() ? y : y.to(x.scalar_type());
}

std::vector<std::pair<std::string, at::Tensor>> quant4_saved_tensors(const Quant4Weight& q, const std::string& weight) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  auto cpu = [](const at::Tensor& t) { return t.detach().to(at::kCPU).contiguous(); };
  out.emplace_back(weight, cpu(q.packed));
  out.emplace_back(weight + ".absmax", cpu(q.absmax));
  out.emplace_back(weight + ".quant_map", cpu(q.code));
  // QuantState.as_dict(packed=True): the non-tensor items as json.dumps writes them
  std::string shape = "[";
  for (size_t i = 0; i < q.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(q.shape[i]);
  shape += "]";
  std::string meta = "{\"quant_type\": \"" + q.quant_type + "\", \"blocksize\": " + std::to_string(q.blocksize) +
                     ", \"dtype\": \"" + dtype_name_of(q.dtype) + "\", \"shape\": " + shape;
  if (q.nested()) {
    out.emplace_back(weight + ".nested_absmax", cpu(q.nested_absmax));
    out.emplace_back(weight + ".nested_quant_map", cpu(q.nested_code));
    meta += ", \"nested_blocksize\": " + std::to_string(q.nested_blocksize) + ", \"nested_dtype\": \"float32\"" +
            ", \"nested_offset\": " + float_repr(q.nested_offset);
  }
  meta += "}";
  at::Tensor bytes = at::empty({static_cast<int64_t>(meta.size())}, at::kByte);
  std::memcpy(bytes.data_ptr(), meta.data(), meta.size());
  out.emplace_back(weight + ".quant_state.bitsandbytes__" + q.quant_type, bytes);
  return out;
}

Quant4Weight quant4_from_saved(const std::function<at::Tensor(const std::string&)>& get, const std::string& weight,
                               const std::vector<int64_t>& shape, const std::string& source) {
  auto need = [&](const std::string& name) {
    at::Tensor t = get(name);
    if (!t.defined())
      throw sky::Error(source + ": 4-bit weight '" + weight + "' has no '" + name +
                       "' (the quant state is missing: was the checkpoint saved by transformers with bitsandbytes?)");
    return t;
  };
  auto bad = [&](const std::string& name, const std::string& why) {
    return sky::Error(source + ": tensor '" + name + "' of 4-bit weight '" + weight + "': " + why);
  };
  // the packed quant state names its type: weight.quant_state.bitsandbytes__nf4 | __fp4
  at::Tensor meta_t;
  std::string meta_name;
  for (const char* t : {"nf4", "fp4"}) {
    std::string n = weight + ".quant_state.bitsandbytes__" + t;
    if (at::Tensor m = get(n); m.defined()) {
      meta_t = m;
      meta_name = n;
    }
  }
  if (!meta_t.defined()) need(weight + ".quant_state.bitsandbytes__nf4");
  if (meta_t.scalar_type() != at::kByte || meta_t.dim() != 1) throw bad(meta_name, "expected a uint8 vector of JSON");
  at::Tensor mc = meta_t.to(at::kCPU).contiguous();
  std::string text(reinterpret_cast<const char*>(mc.data_ptr()), mc.numel());
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseFullPrecisionFlag>(text.c_str(), text.size());
  if (doc.HasParseError() || !doc.IsObject()) throw bad(meta_name, "is not a JSON object (truncated?)");
  auto str = [&](const char* k) {
    if (!doc.HasMember(k) || !doc[k].IsString()) throw bad(meta_name, std::string("has no \"") + k + "\" string");
    return std::string(doc[k].GetString());
  };
  auto num = [&](const char* k) {
    if (!doc.HasMember(k) || !doc[k].IsNumber()) throw bad(meta_name, std::string("has no \"") + k + "\" number");
    return doc[k].GetDouble();
  };
  Quant4Weight q;
  q.quant_type = str("quant_type");
  if (meta_name != weight + ".quant_state.bitsandbytes__" + q.quant_type)
    throw bad(meta_name, "says quant_type \"" + q.quant_type + "\"");
  q.blocksize = static_cast<int64_t>(num("blocksize"));
  if (q.blocksize <= 0) throw bad(meta_name, "blocksize must be positive");
  q.dtype = dtype_from_name(str("dtype"), source + ": " + meta_name);
  if (!doc.HasMember("shape") || !doc["shape"].IsArray()) throw bad(meta_name, "has no \"shape\" list");
  for (const auto& v : doc["shape"].GetArray()) {
    if (!v.IsInt64()) throw bad(meta_name, "\"shape\" must hold integers");
    q.shape.push_back(v.GetInt64());
  }
  auto shape_str = [](const std::vector<int64_t>& s) {
    std::string o = "[";
    for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
    return o + "]";
  };
  if (q.shape != shape)
    throw bad(meta_name, "shape " + shape_str(q.shape) + " but the model's weight is " + shape_str(shape));
  const int64_t N = q.numel(), K = (N + q.blocksize - 1) / q.blocksize;
  q.packed = need(weight);
  if (q.packed.scalar_type() != at::kByte || q.packed.numel() != (N + 1) / 2)
    throw bad(weight, "expected uint8 with " + std::to_string((N + 1) / 2) + " values (" + std::to_string(N) +
                          " 4-bit codes), got " + std::string(c10::toString(q.packed.scalar_type())) + " " +
                          shape_str(q.packed.sizes().vec()));
  q.code = need(weight + ".quant_map");
  if (q.code.scalar_type() != at::kFloat || q.code.numel() != 16)
    throw bad(weight + ".quant_map", "expected 16 float32 values");
  q.absmax = need(weight + ".absmax");
  const bool nested = doc.HasMember("nested_offset");
  if (nested) {
    q.nested_offset = static_cast<float>(num("nested_offset"));  // a float32 tensor's item() in bitsandbytes
    q.nested_blocksize = static_cast<int64_t>(num("nested_blocksize"));
    if (q.nested_blocksize <= 0) throw bad(meta_name, "nested_blocksize must be positive");
    if (doc.HasMember("nested_dtype") && (!doc["nested_dtype"].IsString() ||
                                          std::string(doc["nested_dtype"].GetString()) != "float32"))
      throw bad(meta_name, "not supported yet: nested_dtype other than float32");
    q.nested_absmax = need(weight + ".nested_absmax");
    q.nested_code = need(weight + ".nested_quant_map");
    const int64_t K2 = (K + q.nested_blocksize - 1) / q.nested_blocksize;
    if (q.absmax.scalar_type() != at::kByte || q.absmax.numel() != K)
      throw bad(weight + ".absmax", "expected " + std::to_string(K) + " uint8 values (double quantization), got " +
                                        std::to_string(q.absmax.numel()));
    if (q.nested_absmax.scalar_type() != at::kFloat || q.nested_absmax.numel() != K2)
      throw bad(weight + ".nested_absmax", "expected " + std::to_string(K2) + " float32 values, got " +
                                               std::to_string(q.nested_absmax.numel()));
    if (q.nested_code.scalar_type() != at::kFloat || q.nested_code.numel() != 256)
      throw bad(weight + ".nested_quant_map", "expected 256 float32 values");
  } else if (q.absmax.scalar_type() != at::kFloat || q.absmax.numel() != K) {
    throw bad(weight + ".absmax", "expected " + std::to_string(K) + " float32 values, got " +
                                      std::string(c10::toString(q.absmax.scalar_type())) + " " +
                                      std::to_string(q.absmax.numel()));
  }
  q.packed = q.packed.reshape({-1, 1});
  q.absmax = q.absmax.reshape({-1});
  return q;
}

}  // namespace sky::nn
