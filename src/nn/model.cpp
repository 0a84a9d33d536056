// The architecture-independent half of a model: parameters by HF name, loading from a
// memory-mapped checkpoint (aliasing the mapping when no conversion is needed, so nothing is
// copied), HF's missing/unexpected reporting, saving, losses and generation.
#include "nn/model.hpp"

#include <torch/torch.h>
#include <ATen/autocast_mode.h>

#include <rapidjson/document.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "host/bind.hpp"
#include "sky_config.h"
#include "nn/arch.hpp"
#include "nn/quant4.hpp"
#include "nn/safetensors.hpp"
#include "torch/compat.hpp"

#if SKY_HAVE_KERNELS
#include <ATen/cuda/CUDAContext.h>

#include "nn/kernels/kernels.h"
#endif

namespace sky::nn {

namespace {

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

at::ScalarType scalar_type_of(Dtype d, const std::string& file, const std::string& name) {
  switch (d) {
    case Dtype::F64: return at::kDouble;
    case Dtype::F32: return at::kFloat;
    case Dtype::F16: return at::kHalf;
    case Dtype::BF16: return at::kBFloat16;
    case Dtype::I64: return at::kLong;
    case Dtype::I32: return at::kInt;
    case Dtype::I16: return at::kShort;
    case Dtype::I8: return at::kChar;
    case Dtype::U8: return at::kByte;
    case Dtype::BOOL: return at::kBool;
#if SKY_TORCH_AT_LEAST(2, 1)
    case Dtype::F8_E4M3: return at::kFloat8_e4m3fn;
    case Dtype::F8_E5M2: return at::kFloat8_e5m2;
#endif
    default: break;
  }
  throw sky::Error(file + ": tensor '" + name + "': not supported yet: dtype " + dtype_name(d) + " with LibTorch " +
                   TORCH_VERSION);
}

Dtype st_dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return Dtype::F64;
    case at::kFloat: return Dtype::F32;
    case at::kHalf: return Dtype::F16;
    case at::kBFloat16: return Dtype::BF16;
    case at::kLong: return Dtype::I64;
    case at::kInt: return Dtype::I32;
    case at::kShort: return Dtype::I16;
    case at::kChar: return Dtype::I8;
    case at::kByte: return Dtype::U8;
    case at::kBool: return Dtype::BOOL;
#if SKY_TORCH_AT_LEAST(2, 1)
    case at::kFloat8_e4m3fn: return Dtype::F8_E4M3;
    case at::kFloat8_e5m2: return Dtype::F8_E5M2;
#endif
    default: break;
  }
  throw sky::Error(std::string("not supported yet: saving tensors of dtype ") + c10::toString(t));
}

// ---- dtype and device names ----------------------------------------------------------------------

at::ScalarType dtype_from_string(const std::string& s) {
  if (s == "float32" || s == "fp32" || s == "float") return at::kFloat;
  if (s == "bfloat16" || s == "bf16") return at::kBFloat16;
  if (s == "float16" || s == "fp16" || s == "half") return at::kHalf;
  if (s == "float64" || s == "double") return at::kDouble;
  throw sky::Error("unknown dtype '" + s + "' (use \"auto\", \"float32\", \"bfloat16\" or \"float16\")");
}

std::string dtype_to_string(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kBool: return "bool";
    case at::kByte: return "uint8";
    default: return c10::toString(t);
  }
}

at::Device device_from_string(const std::string& s) {
  at::Device d(at::kCPU);
  try {
    d = at::Device(s == "auto" ? (torch::cuda::is_available() ? "cuda" : "cpu") : s);
  } catch (const std::exception&) {
    throw sky::Error("unknown device '" + s + "' (use \"cpu\", \"cuda\" or \"cuda:N\")");
  }
  if (d.is_cuda()) {
    if (!torch::cuda::is_available()) throw sky::Error("device '" + s + "' asked for but CUDA is not available here");
    if (d.has_index() && d.index() >= static_cast<int>(torch::cuda::device_count()))
      throw sky::Error("device '" + s + "' asked for but only " + std::to_string(torch::cuda::device_count()) +
                       " CUDA device(s) are visible");
  }
  return d;
}

// ---- parameters ------------------------------------------------------------------------------------

std::string Model::class_name() const {
  std::string base = hf_base_class();
  switch (head_) {
    case ModelHead::Base: return base + "Model";
    case ModelHead::CausalLM: return base == "GPT2" ? "GPT2LMHeadModel" : base + "ForCausalLM";
    case ModelHead::SequenceClassification: return base + "ForSequenceClassification";
  }
  return base;
}

std::string Model::full_name(const std::string& rel, bool head_param) const {
  if (head_ == ModelHead::Base || head_param) return rel;
  return base_prefix() + "." + rel;
}

void Model::declare(const std::string& name, std::vector<int64_t> shape, Init init, bool head_param) {
  Decl d{full_name(name, head_param), std::move(shape), init, ""};
  d.head_param = head_param;
  decls_.push_back({name, d});
}

void Model::declare_tied(const std::string& name, const std::string& target, bool head_param) {
  Decl d{full_name(name, head_param), {}, Init::Zeros, target};
  d.head_param = head_param;
  d.kind = ModuleKind::Linear;  // a tied output layer (lm_head) is an nn.Linear in HF
  decls_.push_back({name, d});
}

void Model::declare_linear(const std::string& module, int64_t out, int64_t in, bool head_param, bool bias) {
  declare(module + ".weight", {out, in}, Init::Normal, head_param);
  decls_.back().second.kind = ModuleKind::Linear;
  if (bias) {
    declare(module + ".bias", {out}, Init::Zeros, head_param);
    decls_.back().second.kind = ModuleKind::Linear;
  }
}

void Model::declare_conv1d(const std::string& module, int64_t in, int64_t out) {
  declare(module + ".weight", {in, out}, Init::Normal);
  decls_.back().second.kind = ModuleKind::Conv1D;
  declare(module + ".bias", {out}, Init::Zeros);
  decls_.back().second.kind = ModuleKind::Conv1D;
}

void Model::declare_embedding(const std::string& name, int64_t num, int64_t dim) {
  declare(name, {num, dim}, Init::Normal);
  decls_.back().second.kind = ModuleKind::Embedding;
}

void Model::declare_layer_norm(const std::string& module, int64_t n) {
  declare(module + ".weight", {n}, Init::Ones);
  declare(module + ".bias", {n}, Init::Zeros);
}

void Model::declare_decoder_head(const std::string& embedding, int64_t hidden, int64_t vocab) {
  if (head_ == ModelHead::CausalLM) {
    if (config_.tie_word_embeddings) declare_tied("lm_head.weight", embedding);
    else declare_linear("lm_head", vocab, hidden, true, false);
  } else if (head_ == ModelHead::SequenceClassification) {
    declare_linear("score", config_.num_labels, hidden, true, false);
  }
}

at::Tensor& Model::P(const std::string& name) {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw sky::Error(class_name() + ": no parameter '" + name + "'");
  return it->second;
}

at::Tensor Model::parameter(const std::string& name) const {
  for (const auto& [n, t] : params_)
    if (n == name) return t;
  throw sky::Error(class_name() + " has no parameter '" + name + "'");
}

int64_t Model::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel();
  for (const auto& [rel, q] : quant_) n += q->numel() - q->packed.numel();  // 4-bit weights count unpacked
  return n;
}

void Model::rebuild_param_list() {
  params_.clear();
  for (const auto& [rel, d] : decls_) {
    if (!d.tied_to.empty()) {
      tensors_[rel] = tensors_.at(d.tied_to);
      continue;
    }
    params_.emplace_back(d.full_name, tensors_.at(rel));
  }
  // LoRA's A and B after the base parameters, under PEFT's names (without "base_model.model.")
  for (const auto& [rel, l] : lora_) {
    const std::string& a = lora_spec_->adapter;
    params_.emplace_back(l.module + ".lora_A." + a + ".weight", l.A);
    params_.emplace_back(l.module + ".lora_B." + a + ".weight", l.B);
  }
}

const Model::Decl* Model::find_decl(const std::string& rel) const {
  if (decl_index_.size() != decls_.size()) {
    decl_index_.clear();
    for (size_t i = 0; i < decls_.size(); ++i) decl_index_[decls_[i].first] = i;
  }
  auto it = decl_index_.find(rel);
  return it == decl_index_.end() ? nullptr : &decls_[it->second].second;
}

std::vector<ModuleInfo> Model::modules() const {
  std::vector<ModuleInfo> out;
  std::map<std::string, size_t> index;  // HF module name → position in out
  for (const auto& [rel, d] : decls_) {
    const size_t dot = d.full_name.rfind('.');
    if (dot == std::string::npos) continue;
    const std::string module = d.full_name.substr(0, dot), leaf = d.full_name.substr(dot + 1);
    auto it = index.find(module);
    if (it == index.end()) {
      it = index.emplace(module, out.size()).first;
      ModuleInfo m;
      m.name = module;
      m.kind = d.kind;
      m.output_layer = d.head_param;
      out.push_back(m);
    }
    ModuleInfo& m = out[it->second];
    if (leaf == "bias") m.has_bias = true;
    if (leaf == "weight") {
      std::vector<int64_t> shape = d.shape;
      if (!d.tied_to.empty()) shape = find_decl(d.tied_to)->shape;  // [V, C] as the embedding
      if (shape.size() == 2) {
        m.out = d.kind == ModuleKind::Conv1D ? shape[1] : shape[0];
        m.in = d.kind == ModuleKind::Conv1D ? shape[0] : shape[1];
      }
    }
  }
  return out;
}

std::string Model::rel_module(const std::string& hf_module) const {
  for (const auto& [rel, d] : decls_)
    if (d.full_name == hf_module + ".weight") return rel.substr(0, rel.size() - 7);
  return "";
}

at::Tensor Model::base_linear(const std::string& name, const Decl& w, const at::Tensor& x) {
  auto b = tensors_.find(name + ".bias");
  const at::Tensor bias = b == tensors_.end() ? at::Tensor() : b->second;
  if (!quant_.empty()) {
    auto q = quant_.find(name);
    if (q != quant_.end()) return quant4_linear(x, q->second, bias, quant4_opts_->compute_dtype);
  }
  const at::Tensor& weight = tensors_.at(name + ".weight");
  if (w.kind != ModuleKind::Conv1D) return at::linear(x, weight, bias);
  // Conv1D: x [.., in] → [.., out] as addmm(b, x, W)
  at::Tensor y = at::addmm(bias, x.reshape({-1, x.size(-1)}), weight);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = y.size(-1);
  return y.view(shape);
}

at::Tensor Model::linear(const std::string& name, const at::Tensor& x) {
  const Decl* wd = find_decl(name + ".weight");
  if (!wd) throw sky::Error(class_name() + ": no linear layer '" + name + "'");
  at::Tensor y = base_linear(name, *wd, x);
  if (lora_.empty() || !adapters_enabled_) return y;
  auto l = lora_.find(name);
  if (l == lora_.end()) return y;
  // PEFT's lora.Linear: result + lora_B(lora_A(dropout(x))) * scaling, x cast to the adapter's dtype
  const LoraLayer& a = l->second;
  at::Tensor in = x.scalar_type() == a.A.scalar_type() ? x : x.to(a.A.scalar_type());
  if (training_ && a.dropout > 0) in = at::dropout(in, a.dropout, true);
  at::Tensor out = y + at::linear(at::linear(in, a.A), a.B) * a.scaling;
  return out.scalar_type() == y.scalar_type() ? out : out.to(y.scalar_type());
}

at::Tensor Model::dropout(const at::Tensor& x, double p) const {
  return training_ && p > 0 ? at::dropout(x, p, true) : x;
}

at::Device Model::device() const { return params_.empty() ? at::Device(at::kCPU) : params_[0].second.device(); }

at::ScalarType Model::dtype() const {
  for (const auto& [n, t] : params_)
    if (at::isFloatingType(t.scalar_type())) return t.scalar_type();
  return at::kFloat;
}

void Model::to(std::optional<at::Device> device, std::optional<at::ScalarType> dtype) {
  at::NoGradGuard no_grad;
  auto move = [&](at::Tensor& t) {
    if (!t.defined()) return;
    bool req = t.requires_grad();
    at::Tensor n = t;
    if (device) n = n.to(*device);
    if (dtype && at::isFloatingType(n.scalar_type())) n = n.to(*dtype);
    if (!n.is_same(t)) {
      t = n.detach();
      t.set_requires_grad(req);
    }
  };
  for (const auto& [rel, d] : decls_) {
    const bool weight = rel.size() > 7 && rel.compare(rel.size() - 7, 7, ".weight") == 0;
    if (!d.tied_to.empty() || (weight && quant_.count(rel.substr(0, rel.size() - 7)))) continue;
    move(tensors_.at(rel));
  }
  for (auto& [rel, l] : lora_) {
    move(l.A);
    move(l.B);
  }
  for (auto& [rel, t] : saved_originals_) move(t);
  if (device) {
    // 4-bit weights change device, never dtype
    for (auto& [rel, q] : quant_) {
      auto moved = std::make_shared<Quant4Weight>(*q);
      for (at::Tensor* t : {&moved->packed, &moved->absmax, &moved->code, &moved->nested_absmax, &moved->nested_code})
        if (t->defined()) *t = t->to(*device);
      q = moved;
      tensors_.at(rel + ".weight") = moved->packed;
    }
  }
  rebuild_param_list();
  if (dtype) config_.dtype = dtype_to_string(*dtype);
}

// ---- loading ---------------------------------------------------------------------------------------

// HF renames these when loading old checkpoints (LayerNorm gamma/beta).
static std::string legacy_name(const std::string& n) {
  auto ends = [&](const char* s) {
    size_t l = strlen(s);
    return n.size() >= l && n.compare(n.size() - l, l, s) == 0;
  };
  if (ends(".gamma")) return n.substr(0, n.size() - 6) + ".weight";
  if (ends(".beta")) return n.substr(0, n.size() - 5) + ".bias";
  return n;
}

bool Model::quantizable(const std::string& rel_module, const Quant4Options& q) const {
  const Decl* d = find_decl(rel_module + ".weight");
  if (!d || !d->tied_to.empty() || (d->kind != ModuleKind::Linear && d->kind != ModuleKind::Conv1D)) return false;
  // transformers keeps the output layer (get_keys_to_not_convert) and llm_int8_skip_modules as they are
  const std::string name = d->full_name.substr(0, d->full_name.size() - 7);
  const std::string leaf = name.substr(name.rfind('.') + 1);
  if (d->head_param && (leaf == "lm_head" || leaf == "score" || leaf == "classifier")) return false;
  for (const std::string& k : q.skip_modules)
    if (name == k || name.compare(0, k.size() + 1, k + ".") == 0 ||
        (name.size() > k.size() && name.compare(name.size() - k.size() - 1, k.size() + 1, "." + k) == 0))
      return false;
  return true;
}

// Reads a tensor of the checkpoint into memory (a copy), or an undefined tensor when absent.
static at::Tensor read_tensor(const SafetensorsCheckpoint& ckpt, const std::string& name) {
  auto f = ckpt.find(name);
  if (!f) return at::Tensor();
  const TensorEntry& e = *f->entry;
  at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(scalar_type_of(e.dtype, f->file->path(), e.name)));
  if (e.end > e.begin) f->file->read(e, t.data_ptr());  // our own copy, never the mapping
  return t;
}

void Model::materialize(at::ScalarType dtype, at::Device device, const SafetensorsCheckpoint* ckpt,
                        const std::string& source, LoadReport* report, bool dtype_auto, const Quant4Options* quant) {
  at::NoGradGuard no_grad;
  // Checkpoint names → our full names: the checkpoint may come from the class with or without a
  // head (HF's base_model_prefix rule), and may use legacy LayerNorm names.
  std::map<std::string, std::string> ckpt_by_ours;  // our full name → checkpoint name
  std::vector<std::string> unused;
  std::map<std::string, bool> used;
  const std::string prefix = base_prefix() + ".";
  if (ckpt) {
    std::map<std::string, std::string> ours;  // full names we declare (untied)
    for (const auto& [rel, d] : decls_)
      if (d.tied_to.empty()) ours[d.full_name] = rel;
    for (const std::string& cname : ckpt->names()) {
      std::string n = legacy_name(cname);
      std::string candidate;
      if (ours.count(n)) candidate = n;
      else if (head_ != ModelHead::Base && ours.count(prefix + n)) candidate = prefix + n;
      else if (head_ == ModelHead::Base && n.rfind(prefix, 0) == 0 && ours.count(n.substr(prefix.size())))
        candidate = n.substr(prefix.size());
      if (!candidate.empty() && !ckpt_by_ours.count(candidate)) ckpt_by_ours[candidate] = cname;
      else used[cname] = false;
    }
  }
  if (quant) quant4_opts_ = *quant;
  for (const auto& [rel, d] : decls_) {
    if (!d.tied_to.empty()) continue;
    auto opts = at::TensorOptions().dtype(dtype).device(device);
    at::Tensor t;
    auto it = ckpt_by_ours.find(d.full_name);
    const bool is_weight = rel.size() > 7 && rel.compare(rel.size() - 7, 7, ".weight") == 0;
    const std::string module = is_weight ? rel.substr(0, rel.size() - 7) : "";
    if (quant && is_weight && quantizable(module, *quant)) {
      // a 4-bit weight: as saved in 4 bits, or quantized here from the full-precision one
      std::vector<int64_t> out_in = d.shape;
      if (d.kind == ModuleKind::Conv1D) std::swap(out_in[0], out_in[1]);  // transformers quantizes Conv1D as [out, in]
      std::shared_ptr<Quant4Weight> q;
      if (it != ckpt_by_ours.end() && ckpt->find(it->second)->entry->dtype == Dtype::U8) {
        const std::string base = it->second;
        const std::string file = ckpt->find(base)->file->path();
        q = std::make_shared<Quant4Weight>(quant4_from_saved(
            [&](const std::string& n) {
              used.erase(n);
              return read_tensor(*ckpt, n);
            },
            base, out_in, file));
        for (at::Tensor* x : {&q->packed, &q->absmax, &q->code, &q->nested_absmax, &q->nested_code})
          if (x->defined()) *x = x->to(device);
      } else {
        at::Tensor w;
        if (it != ckpt_by_ours.end()) {
          w = read_tensor(*ckpt, it->second);
          if (!w.sizes().equals(d.shape))
            throw sky::Error(ckpt->find(it->second)->file->path() + ": tensor '" + it->second + "' has shape " +
                             shape_str(w.sizes()) + " but " + class_name() + " expects " + shape_str(d.shape));
          w = w.to(opts.dtype(dtype_auto && w.is_floating_point() ? w.scalar_type() : dtype));
        } else {
          if (report) report->missing.push_back(d.full_name);
          w = at::empty(d.shape, opts).normal_(0.0, config_.initializer_range);
        }
        if (d.kind == ModuleKind::Conv1D) w = w.t();
        q = std::make_shared<Quant4Weight>(quant4_quantize(w.contiguous(), quant->quant_type, quant->double_quant));
      }
      quant_[module] = q;
      tensors_[rel] = q->packed;
      continue;
    }
    if (it != ckpt_by_ours.end()) {
      auto found = ckpt->find(it->second);
      const TensorEntry& e = *found->entry;
      at::ScalarType st = scalar_type_of(e.dtype, found->file->path(), e.name);
      if (e.shape != d.shape) {
        std::string m = d.full_name + ": checkpoint " + shape_str(e.shape) + " vs model " + shape_str(d.shape);
        if (report) report->mismatched.push_back(m);
        throw sky::Error(found->file->path() + ": tensor '" + e.name + "' has shape " + shape_str(e.shape) + " but " +
                         class_name() + " expects " + shape_str(d.shape));
      }
      at::ScalarType target = at::isFloatingType(st) ? (dtype_auto ? st : dtype) : st;
      const SafetensorsFile& file = *found->file;
      bool aligned = file.mapped() && reinterpret_cast<uintptr_t>(file.data(e)) % dtype_size(e.dtype) == 0;
      if (target == st && device.is_cpu() && aligned) {
        // A file that cannot change (see SafetensorsFile): alias its private mapping, no copy;
        // the tensor keeps the mapping alive.
        std::shared_ptr<SafetensorsFile> keep;
        for (const auto& f : ckpt->files())
          if (f.get() == found->file) keep = f;
        t = at::from_blob(const_cast<uint8_t*>(file.data(e)), d.shape, [keep](void*) mutable { keep.reset(); },
                          at::TensorOptions().dtype(st));
      } else {
        at::Tensor src;
        if (aligned) {
          src = at::from_blob(const_cast<uint8_t*>(file.data(e)), d.shape, at::TensorOptions().dtype(st));
        } else {  // our own copy: later changes to the file cannot reach it
          src = at::empty(d.shape, at::TensorOptions().dtype(st));
          file.read(e, src.data_ptr());
        }
        t = target == st && device.is_cpu() && !aligned ? src : src.to(opts.dtype(target), /*non_blocking=*/false, /*copy=*/true);
        file.release(e);
      }
    } else {
      if (report) report->missing.push_back(d.full_name);
      // HF's _init_weights: Linear/Embedding normal(0, initializer_range), biases 0, norms 1.
      if (d.init == Init::Normal) t = at::empty(d.shape, opts).normal_(0.0, config_.initializer_range);
      else if (d.init == Init::Ones) t = at::ones(d.shape, opts);
      else t = at::zeros(d.shape, opts);
    }
    if (at::isFloatingType(t.scalar_type())) t.set_requires_grad(true);
    tensors_[rel] = t;
  }
  if (report) {
    for (const auto& [name, u] : used) {
      // GPT-2's causal-mask buffers and BERT's position_ids were saved by old versions.
      bool buffer = name.find(".attn.bias") != std::string::npos || name.find(".attn.masked_bias") != std::string::npos ||
                    name.find("position_ids") != std::string::npos;
      if (!buffer) report->unexpected.push_back(name);
    }
  }
  rebuild_param_list();
  (void)source;
}

std::string LoadReport::warnings(const std::string& class_name, const std::string& source) const {
  auto list = [](const std::vector<std::string>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", '" : "'") + v[i] + "'";
    return s + "]";
  };
  std::string out;
  if (!unexpected.empty())
    out += "Some weights of the model checkpoint at " + source + " were not used when initializing " + class_name +
           ": " + list(unexpected) + "\n";
  if (!missing.empty())
    out += "Some weights of " + class_name + " were not initialized from the model checkpoint at " + source +
           " and are newly initialized: " + list(missing) +
           "\nYou should probably TRAIN this model on a down-stream task to be able to use it for predictions and "
           "inference.\n";
  return out;
}

static std::shared_ptr<Model> build(const ModelConfig& config, ModelHead head) {
  std::shared_ptr<Model> m = arch_create(config, head);
  if (!m) throw sky::Error("not supported yet: model_type '" + config.model_type + "'");
  return m;
}

Quant4Options quant4_options_from_json(const std::string& json, const std::string& where) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) throw sky::Error(where + ": quantization_config is not a JSON object");
  auto flag = [&](const char* k) { return doc.HasMember(k) && doc[k].IsBool() && doc[k].GetBool(); };
  auto str = [&](const char* k, const char* dflt) {
    return doc.HasMember(k) && doc[k].IsString() ? std::string(doc[k].GetString()) : std::string(dflt);
  };
  const std::string method = str("quant_method", "bitsandbytes");
  if (method != "bitsandbytes") throw sky::Error(where + ": not supported yet: quant_method \"" + method + "\"");
  if (flag("load_in_8bit") || flag("_load_in_8bit"))
    throw sky::Error(where + ": not supported yet: 8-bit weights (load_in_8bit); 4-bit (load_in_4bit) works");
  if (!flag("load_in_4bit") && !flag("_load_in_4bit")) throw sky::Error(where + ": quantization_config has neither load_in_4bit nor load_in_8bit");
  Quant4Options q;
  q.quant_type = str("bnb_4bit_quant_type", "fp4");
  if (q.quant_type != "nf4" && q.quant_type != "fp4")
    throw sky::Error(where + ": bnb_4bit_quant_type must be \"nf4\" or \"fp4\" (got \"" + q.quant_type + "\")");
  q.double_quant = flag("bnb_4bit_use_double_quant");
  const std::string compute = str("bnb_4bit_compute_dtype", "float32");
  q.compute_dtype = dtype_from_string(compute);
  const std::string storage = str("bnb_4bit_quant_storage", "uint8");
  if (storage != "uint8") throw sky::Error(where + ": not supported yet: bnb_4bit_quant_storage \"" + storage + "\"");
  if (doc.HasMember("llm_int8_skip_modules") && doc["llm_int8_skip_modules"].IsArray())
    for (const auto& v : doc["llm_int8_skip_modules"].GetArray())
      if (v.IsString()) q.skip_modules.push_back(v.GetString());
  q.config_json = json;
  return q;
}

std::shared_ptr<Model> model_from_pretrained(const std::string& folder, const LoadOptions& opts, LoadReport* report) {
  ModelConfig config = config_load(folder);
  std::optional<Quant4Options> quant = opts.quant4;
  if (!quant && !config.quantization_config.empty())  // saved in 4 bits
    quant = quant4_options_from_json(config.quantization_config, folder + "/config.json");
  if (quant) config.quantization_config = quant->config_json;
  if (opts.num_labels) {
    config.num_labels = *opts.num_labels;
    if (opts.id2label.empty() && static_cast<int64_t>(config.id2label.size()) != config.num_labels) {
      config.id2label.clear();
      config.label2id.clear();
      for (int64_t i = 0; i < config.num_labels; ++i) {
        config.id2label[i] = "LABEL_" + std::to_string(i);
        config.label2id["LABEL_" + std::to_string(i)] = i;
      }
    }
  }
  if (!opts.id2label.empty()) {
    config.id2label = opts.id2label;
    config.num_labels = static_cast<int64_t>(opts.id2label.size());
    config.label2id.clear();
    for (const auto& [i, n] : opts.id2label) config.label2id[n] = i;
  }
  if (!opts.label2id.empty()) config.label2id = opts.label2id;
  if (!opts.problem_type.empty()) config.problem_type = opts.problem_type;
  if (!opts.attn_implementation.empty()) config.attn_implementation = opts.attn_implementation;
  if (!SafetensorsCheckpoint::exists(folder)) {
    namespace fs = std::filesystem;
    if (fs::exists(fs::path(folder) / "pytorch_model.bin"))
      throw sky::Error(folder + ": not supported yet: pytorch_model.bin checkpoints (only safetensors)");
    throw sky::Error(folder + ": no model.safetensors or model.safetensors.index.json");
  }
  SafetensorsCheckpoint ckpt = SafetensorsCheckpoint::open(folder);
  at::Device device = device_from_string(opts.device);
  bool dtype_auto = opts.dtype == "auto";
  at::ScalarType dtype = dtype_auto ? at::kFloat : dtype_from_string(opts.dtype);
  std::shared_ptr<Model> m = build(config, opts.head);
  LoadReport local;
  m->materialize(dtype, device, &ckpt, folder, report ? report : &local, dtype_auto, quant ? &*quant : nullptr);
  if (!m->params_.empty() && m->config_.architectures.size() != 1) m->config_.architectures.clear();
  m->config_.architectures = {m->class_name()};
  m->config_.dtype = dtype_to_string(m->dtype());
  return m;
}

std::shared_ptr<Model> model_from_config(const ModelConfig& config, ModelHead head, at::ScalarType dtype,
                                         at::Device device, const Quant4Options* quant) {
  ModelConfig c = config;
  if (quant) c.quantization_config = quant->config_json;
  std::shared_ptr<Model> m = build(c, head);
  m->materialize(dtype, device, nullptr, "", nullptr, false, quant);
  m->config_.architectures = {m->class_name()};
  m->config_.dtype = dtype_to_string(dtype);
  return m;
}

// ---- saving ----------------------------------------------------------------------------------------

void Model::save_pretrained(const std::string& dir, uint64_t max_shard_size) const {
  std::vector<at::Tensor> keep;  // contiguous CPU copies alive while writing
  std::vector<TensorToWrite> out;
  auto add = [&](const std::string& name, const at::Tensor& t) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    keep.push_back(c);
    out.push_back(TensorToWrite{name, st_dtype_of(c.scalar_type()), c.sizes().vec(), c.data_ptr()});
  };
  // the base model's own tensors (adapters are saved by PEFT's save_pretrained, not here); the
  // modules_to_save originals while the adapter is enabled; 4-bit weights in bitsandbytes' layout
  for (const auto& [rel, d] : decls_) {
    if (!d.tied_to.empty()) continue;
    auto q = quant_.find(rel.size() > 7 ? rel.substr(0, rel.size() - 7) : "");
    if (q != quant_.end() && rel.compare(rel.size() - 7, 7, ".weight") == 0) {
      for (const auto& [name, t] : quant4_saved_tensors(*q->second, d.full_name)) add(name, t);
      continue;
    }
    auto orig = saved_originals_.find(rel);
    add(d.full_name, orig != saved_originals_.end() && adapters_enabled_ ? orig->second : tensors_.at(rel));
  }
  std::filesystem::create_directories(dir);
  ModelConfig c = config_;
  c.architectures = {class_name()};
  c.dtype = dtype_to_string(dtype());
  safetensors_write_checkpoint(dir, "model", out, {{"format", "pt"}}, max_shard_size);
  write_file_atomic((std::filesystem::path(dir) / "config.json").string(), config_to_json(c));
}

// ---- losses ----------------------------------------------------------------------------------------

namespace {

// Cross entropy summed over the rows whose target is not -100, as HF's ForCausalLMLoss computes it
// (logits upcast to float32, then log_softmax and nll_loss), without keeping the float32 copy:
// forward keeps the logits as they are (bf16 under autocast); backward recomputes softmax a slice of
// rows at a time. torch's path keeps a float32 log_softmax for backward and makes two more float32
// [N, V] tensors there: for a 150k vocabulary that is gigabytes.
class SumCrossEntropy : public torch::autograd::Function<SumCrossEntropy> {
 public:
  static int64_t rows_per_slice(int64_t V) { return std::max<int64_t>(1, (int64_t{32} << 20) / std::max<int64_t>(V, 1)); }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& target) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const int64_t N = logits.size(0), V = logits.size(1), step = rows_per_slice(V);
    at::Tensor lse = at::empty({N}, logits.options().dtype(at::kFloat));
    for (int64_t s = 0; s < N; s += step) {
      const int64_t n = std::min(step, N - s);
      lse.narrow(0, s, n).copy_(at::logsumexp(logits.narrow(0, s, n).to(at::kFloat), {-1}));
    }
    at::Tensor valid = target.ne(-100);
    at::Tensor picked = logits.gather(1, target.masked_fill(valid.logical_not(), 0).unsqueeze(1)).squeeze(1).to(at::kFloat);
    ctx->save_for_backward({logits, target});
    return ((lse - picked) * valid).sum();
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &logits = saved[0], &target = saved[1];
    const at::Tensor& g = grads[0];  // d loss / d sum: a float32 scalar
    const int64_t N = logits.size(0), V = logits.size(1), step = rows_per_slice(V);
    at::Tensor grad = at::empty_like(logits);
    at::Tensor valid = target.ne(-100);
    at::Tensor safe = target.masked_fill(valid.logical_not(), 0).unsqueeze(1);
    at::Tensor weight = valid.to(at::kFloat).unsqueeze(1) * g;  // [N, 1]: 0 for ignored rows
    for (int64_t s = 0; s < N; s += step) {
      const int64_t n = std::min(step, N - s);
      // softmax in float32 (one kernel), minus one at the target, times the row's weight written
      // straight into the logits' dtype
      at::Tensor p = at::softmax(logits.narrow(0, s, n), -1, at::kFloat);
      p.scatter_add_(1, safe.narrow(0, s, n), at::full({n, 1}, -1.0, p.options()));
      at::Tensor out = grad.narrow(0, s, n);
      at::mul_out(out, p, weight.narrow(0, s, n));
    }
    return {grad, at::Tensor()};
  }
};

// The lm_head and the summed cross entropy in one, a chunk of rows at a time, so that the
// [N, V] logits never exist whole (for Qwen3's 152k vocabulary and 8k tokens they are 2.5 GB in
// bf16, 5 GB in float32): forward computes each chunk's logits, its loss and, when a gradient is
// wanted, the chunk's gradients for h and W right away (the softmax is at hand), keeping only
// those; backward scales them by the incoming gradient. h [N, C] and W [V, C] come in the compute
// dtype (bf16 under autocast); softmax and the loss in float32, as SumCrossEntropy.
// CUDA autocast off for a scope, restored after (also when an exception leaves it).
class AutocastOff {
 public:
  explicit AutocastOff(bool cuda) {
#if SKY_TORCH_AT_LEAST(2, 4)
    was_ = cuda && at::autocast::is_autocast_enabled(at::kCUDA);
    if (was_) at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
    was_ = cuda && at::autocast::is_enabled();
    if (was_) at::autocast::set_enabled(false);
#endif
  }
  ~AutocastOff() {
#if SKY_TORCH_AT_LEAST(2, 4)
    if (was_) at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    if (was_) at::autocast::set_enabled(true);
#endif
  }

 private:
  bool was_ = false;
};

class FusedLinearCrossEntropy : public torch::autograd::Function<FusedLinearCrossEntropy> {
 public:
  static int64_t rows_per_chunk(int64_t V) { return std::max<int64_t>(1, (int64_t{256} << 20) / std::max<int64_t>(V, 1)); }

  // sum over valid rows of the cross entropy; grad_h/grad_w filled when defined
  static at::Tensor run(const at::Tensor& h, const at::Tensor& w, const at::Tensor& target, at::Tensor* grad_h,
                        at::Tensor* grad_w) {
    const int64_t N = h.size(0), step = rows_per_chunk(w.size(0));
    at::Tensor valid = target.ne(-100);
    at::Tensor safe = target.masked_fill(valid.logical_not(), 0).unsqueeze(1);  // [N, 1]
    at::Tensor total = at::zeros({}, h.options().dtype(at::kFloat));
    for (int64_t s = 0; s < N; s += step) {
      const int64_t n = std::min(step, N - s);
      at::Tensor hc = h.narrow(0, s, n);
      at::Tensor logits = at::mm(hc, w.t());  // [n, V]
#if SKY_HAVE_KERNELS
      if (logits.is_cuda()) {
        // our kernel: loss per row and, in place, d loss / d logits (two reads, one write of the chunk)
        at::Tensor row_loss = at::empty({n}, h.options().dtype(at::kFloat));
        at::Tensor tc = target.narrow(0, s, n).contiguous();
        const int kd = logits.scalar_type() == at::kBFloat16 ? SKY_KDTYPE_BF16
                       : logits.scalar_type() == at::kHalf   ? SKY_KDTYPE_F16
                                                              : SKY_KDTYPE_F32;
        if (int err = sky_cross_entropy_rows(logits.data_ptr(), kd, n, logits.size(1), tc.data_ptr<int64_t>(), -100,
                                             row_loss.data_ptr<float>(), at::cuda::getCurrentCUDAStream().stream()))
          throw sky::Error("cross entropy kernel failed to launch (CUDA error " + std::to_string(err) + ")");
        total.add_(row_loss.sum());
        if (!grad_h) continue;
        grad_h->narrow(0, s, n).copy_(at::mm(logits, w));
        grad_w->add_(at::mm(logits.t(), hc));
        continue;
      }
#endif
      at::Tensor v = valid.narrow(0, s, n);
      at::Tensor lse = at::logsumexp(logits.to(at::kFloat), {-1});
      at::Tensor picked = logits.gather(1, safe.narrow(0, s, n)).squeeze(1).to(at::kFloat);
      total.add_(((lse - picked) * v).sum());
      if (!grad_h) continue;
      at::Tensor p = at::softmax(logits, -1, at::kFloat);
      p.scatter_add_(1, safe.narrow(0, s, n), at::full({n, 1}, -1.0, p.options()));
      at::Tensor g = (p * v.to(at::kFloat).unsqueeze(1)).to(h.scalar_type());  // [n, V]: d sum / d logits
      grad_h->narrow(0, s, n).copy_(at::mm(g, w));
      grad_w->add_(at::mm(g.t(), hc));
    }
    return total;
  }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& h, const at::Tensor& w,
                            const at::Tensor& target) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor grad_h = at::empty_like(h);
    at::Tensor grad_w = at::zeros(w.sizes(), w.options().dtype(at::kFloat));
    at::Tensor total = run(h, w, target, &grad_h, &grad_w);
    ctx->save_for_backward({grad_h, grad_w.to(w.scalar_type())});
    return total;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& g = grads[0];  // d loss / d sum: a float32 scalar
    return {saved[0] * g.to(saved[0].scalar_type()), saved[1] * g.to(saved[1].scalar_type()), at::Tensor()};
  }
};

}  // namespace

void Model::causal_lm_head(const at::Tensor& h, const ForwardArgs& a, ForwardOutput& out) {
  const bool adapted = (adapters_enabled_ && lora_.count("lm_head")) || quant_.count("lm_head");  // linear() does those
  const bool fused = a.labels.defined() && !a.return_logits && !adapted && tensors_.count("lm_head.bias") == 0;
  if (!fused) {
    out.logits = linear("lm_head", h);  // [B, T, V]
    if (a.labels.defined()) out.loss = causal_lm_loss(out.logits, a.labels, a.num_items_in_batch);
    return;
  }
  // As causal_lm_loss: labels shifted left by one, -100 padded on the right.
  at::Tensor lab = a.labels.to(h.device()).to(at::kLong);
  at::Tensor shifted = at::constant_pad_nd(lab, {0, 1}, -100).narrow(-1, 1, lab.size(-1)).contiguous().view({-1});
  // The compute dtype linear() would get under autocast; the casts stay differentiable.
  at::ScalarType dt = h.scalar_type();
#if SKY_TORCH_AT_LEAST(2, 4)
  if (h.is_cuda() && at::autocast::is_autocast_enabled(at::kCUDA)) dt = at::autocast::get_autocast_dtype(at::kCUDA);
#else
  if (h.is_cuda() && at::autocast::is_enabled()) dt = at::autocast::get_autocast_gpu_dtype();
#endif
  const at::Tensor& w = P("lm_head.weight");
  at::Tensor h2 = h.reshape({-1, h.size(-1)}).to(dt);
  at::Tensor w2 = w.to(dt);
  at::Tensor sum;
  {
    AutocastOff off(h.is_cuda());  // the matmuls run in dt as they are, not re-cast
    if (at::GradMode::is_enabled() && (h2.requires_grad() || w2.requires_grad()))
      sum = FusedLinearCrossEntropy::apply(h2, w2, shifted);
    else
      sum = FusedLinearCrossEntropy::run(h2, w2, shifted, nullptr, nullptr);
  }
  if (a.num_items_in_batch > 0) out.loss = sum / a.num_items_in_batch;
  else out.loss = sum / shifted.ne(-100).sum().to(at::kFloat);
}

at::Tensor Model::causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels, double num_items_in_batch) const {
  // HF ForCausalLMLoss: upcast, pad labels with -100 on the right, shift left by one.
  at::Tensor lab = labels.to(logits.device()).to(at::kLong);
  at::Tensor shifted = at::constant_pad_nd(lab, {0, 1}, -100).narrow(-1, 1, lab.size(-1)).contiguous().view({-1});
  const int64_t V = logits.size(-1);
  at::Tensor sum = SumCrossEntropy::apply(logits.reshape({-1, V}), shifted);
  if (num_items_in_batch > 0) return sum / num_items_in_batch;
  return sum / shifted.ne(-100).sum().to(at::kFloat);  // reduction "mean": NaN when every label is -100, as torch
}

at::Tensor Model::classification_loss(const at::Tensor& logits, const at::Tensor& labels) {
  int64_t L = config_.num_labels;
  at::Tensor lab = labels.to(logits.device());
  if (config_.problem_type.empty()) {
    if (L == 1) config_.problem_type = "regression";
    else if (lab.scalar_type() == at::kLong || lab.scalar_type() == at::kInt) config_.problem_type = "single_label_classification";
    else config_.problem_type = "multi_label_classification";
  }
  if (config_.problem_type == "regression") {
    at::Tensor lf = logits.to(at::kFloat);
    if (L == 1) return at::mse_loss(lf.squeeze(), lab.to(at::kFloat).squeeze());
    return at::mse_loss(lf, lab.to(at::kFloat));
  }
  if (config_.problem_type == "single_label_classification")
    return at::cross_entropy_loss(logits.reshape({-1, L}), lab.reshape({-1}).to(at::kLong), {}, at::Reduction::Mean, -100);
  if (config_.problem_type == "multi_label_classification")
    return at::binary_cross_entropy_with_logits(logits, lab.to(logits.scalar_type()));
  throw sky::Error("unknown problem_type '" + config_.problem_type +
                   "' (regression, single_label_classification or multi_label_classification)");
}

// ---- generation ------------------------------------------------------------------------------------

namespace {

std::string num_str(double v) {
  char buf[64];
  snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// Out-of-range settings are errors before any work (HF's GenerationConfig.validate and logits
// warpers refuse most of them; a top_p above 1 HF ignores silently, here it is refused too).
void check_generate_options(const GenerateOptions& o) {
  if (o.max_new_tokens <= 0)
    throw sky::Error("generate: max_new_tokens must be greater than 0 (got " + std::to_string(o.max_new_tokens) + ")");
  if (!(o.top_p >= 0.0 && o.top_p <= 1.0))
    throw sky::Error("generate: top_p must be a number from 0 to 1 (got " + num_str(o.top_p) + ")");
  if (o.top_k < 0) throw sky::Error("generate: top_k must be 0 (off) or a positive integer (got " + std::to_string(o.top_k) + ")");
  if (!std::isfinite(o.temperature) || o.temperature < 0 || (o.do_sample && o.temperature == 0))
    throw sky::Error("generate: temperature must be a strictly positive finite number (got " + num_str(o.temperature) +
                     ")" + (o.temperature == 0 ? "; for greedy decoding set do_sample = false" : ""));
}

}  // namespace

at::Tensor Model::generate(const at::Tensor& input_ids, const GenerateOptions& o) {
  if (head_ != ModelHead::CausalLM) throw sky::Error(class_name() + " cannot generate: it is not a causal LM");
  if (input_ids.dim() != 2) throw sky::Error("generate: input_ids must be [batch, length]");
  check_generate_options(o);
  at::NoGradGuard no_grad;
  bool was_training = training_;
  training_ = false;
  at::Device dev = device();
  at::Tensor ids = input_ids.to(dev).to(at::kLong);
  int64_t B = ids.size(0);
  at::Tensor mask = o.attention_mask.defined() ? o.attention_mask.to(dev).to(at::kLong) : at::ones_like(ids);
  std::vector<int64_t> eos = o.eos_token_ids;
  int64_t pad = o.pad_token_id >= 0 ? o.pad_token_id : (eos.empty() ? 0 : eos[0]);
  at::Tensor finished = at::zeros({B}, at::TensorOptions().dtype(at::kBool).device(dev));
  KVCache cache;
  at::Tensor step_ids = ids;
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    // Positions from the mask (left padding), as HF's prepare_inputs_for_generation.
    at::Tensor pos = (mask.cumsum(-1) - 1).masked_fill(mask.eq(0), 1);
    pos = pos.narrow(1, pos.size(1) - step_ids.size(1), step_ids.size(1));
    ForwardArgs a;
    a.input_ids = step_ids;
    a.attention_mask = mask;
    a.position_ids = pos;
    a.cache = &cache;
    at::Tensor logits = forward(a).logits.select(1, -1).to(at::kFloat);  // [B, V]
    at::Tensor next;
    if (o.do_sample) {
      logits = logits / o.temperature;
      if (o.top_k > 0 && o.top_k < logits.size(-1)) {
        at::Tensor kth = std::get<0>(logits.topk(o.top_k, -1)).narrow(-1, o.top_k - 1, 1);
        logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
      }
      if (o.top_p < 1.0) {
        // HF TopPLogitsWarper: drop the low tail whose cumulative probability is <= 1 - top_p.
        auto [sorted, idx] = logits.sort(-1, false);
        at::Tensor cum = sorted.softmax(-1).cumsum(-1);
        at::Tensor remove = cum <= (1 - o.top_p);
        remove.narrow(-1, remove.size(-1) - 1, 1).fill_(false);
        logits = logits.masked_fill(remove.scatter(-1, idx, remove), -std::numeric_limits<float>::infinity());
      }
      next = at::multinomial(logits.softmax(-1), 1).squeeze(1);
    } else {
      next = logits.argmax(-1);
    }
    next = at::where(finished, at::full_like(next, pad), next);
    ids = at::cat({ids, next.unsqueeze(1)}, 1);
    mask = at::cat({mask, at::ones({B, 1}, mask.options())}, 1);
    for (int64_t e : eos) finished = finished.logical_or(next.eq(e));
    step_ids = next.unsqueeze(1);
    if (!eos.empty() && finished.all().item<bool>()) break;
  }
  training_ = was_training;
  return ids;
}

}  // namespace sky::nn

namespace sky::nn {

std::shared_ptr<Model> arch_create(const ModelConfig& c, ModelHead head) {
  const std::string& t = c.model_type;
  if (t == "gpt2") return arch_gpt2_create(c, head);
  if (t == "llama" || t == "mistral" || t == "qwen2" || t == "qwen3") return arch_llama_create(c, head);
  if (t == "bert" || t == "distilbert") return arch_bert_create(c, head);
  return nullptr;
}

}  // namespace sky::nn
