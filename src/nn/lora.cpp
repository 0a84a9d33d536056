// LoRA adapters inside a Model, with PEFT's arithmetic and names (peft/tuners/lora/layer.py,
// model.py, utils/save_and_load.py): A [r, in] and B [out, r] beside a Linear or GPT-2 Conv1D,
// y = base(x) + s B(A(dropout(x))) with s = alpha / r (alpha / sqrt(r) with rslora), the rest of
// the model frozen; modules_to_save trained as copies; merge, unload and disable. Which modules an
// adapter targets is decided in lua/peft (PEFT's matching rules); this file does the tensors.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <set>

#include "host/bind.hpp"
#include "nn/model.hpp"
#include "nn/quant4.hpp"

namespace sky::nn {

namespace {

const std::string kPrefix = "base_model.model.";

std::string shape_text(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

void Model::lora_add(const LoraSpec& spec) {
  if (lora_spec_) throw sky::Error("not supported yet: a second adapter on one model (this one has '" + lora_spec_->adapter + "')");
  if (spec.r <= 0)
    throw sky::Error("`r` should be a positive integer value but the value passed is " + std::to_string(spec.r));
  if (spec.bias != "none" && spec.bias != "all" && spec.bias != "lora_only")
    throw sky::Error("LoraConfig: bias must be \"none\", \"all\" or \"lora_only\" (got \"" + spec.bias + "\")");
  if (spec.init != "true" && spec.init != "false" && spec.init != "gaussian")
    throw sky::Error("not supported yet: init_lora_weights = \"" + spec.init + "\"");
  at::NoGradGuard no_grad;
  // Resolve every target before changing anything, so a bad one leaves the model as it was.
  std::map<std::string, std::string> rel_of;  // HF module name → relative name
  for (const std::string& t : spec.targets) {
    std::string rel = rel_module(t);
    const Decl* d = rel.empty() ? nullptr : find_decl(rel + ".weight");
    if (!d) throw sky::Error("LoRA target '" + t + "' is no module of " + class_name());
    if (d->kind == ModuleKind::Embedding)
      throw sky::Error("not supported yet: LoRA on the embedding '" + t + "' (target Linear or Conv1D layers)");
    if (d->kind != ModuleKind::Linear && d->kind != ModuleKind::Conv1D)
      throw sky::Error("Target module '" + t + "' is not supported. Currently, only the following modules are supported: "
                       "`torch.nn.Linear`, `transformers.pytorch_utils.Conv1D`.");
    rel_of[t] = rel;
  }
  std::map<std::string, std::string> saved_rel;  // modules_to_save: relative param name → HF module
  for (const std::string& m : spec.modules_to_save) {
    bool any = false;
    for (const auto& [rel, d] : decls_) {
      if (d.full_name.compare(0, m.size() + 1, m + ".") != 0) continue;
      if (!d.tied_to.empty()) throw sky::Error("not supported yet: modules_to_save on '" + m + "', whose weight is tied");
      for (const auto& [other_rel, other] : decls_)
        if (other.tied_to == rel)
          throw sky::Error("not supported yet: modules_to_save on '" + m + "', whose weight is tied to '" +
                           other.full_name + "'");
      if (quant_.count(rel.substr(0, rel.rfind('.'))))
        throw sky::Error("not supported yet: modules_to_save on the 4-bit module '" + m + "'");
      saved_rel[rel] = m;
      any = true;
    }
    if (!any) throw sky::Error("modules_to_save: '" + m + "' is no module of " + class_name());
  }

  // Freeze the base (PEFT's _mark_only_adapters_as_trainable), then open what the config trains.
  for (auto& [rel, t] : tensors_)
    if (t.is_floating_point()) t.set_requires_grad(false);
  for (const auto& [t, rel] : rel_of) {
    const Decl& d = *find_decl(rel + ".weight");
    int64_t in, out;
    auto q = quant_.find(rel);
    at::Tensor w = tensors_.at(rel + ".weight");
    if (q != quant_.end()) {
      out = q->second->shape[0];
      in = q->second->shape[1];
    } else if (d.kind == ModuleKind::Conv1D) {
      in = w.size(0);
      out = w.size(1);
    } else {
      out = w.size(0);
      in = w.size(1);
    }
    // PEFT's autocast_adapter_dtype: adapters of 16-bit (and 4-bit) layers are float32
    at::ScalarType dt = w.is_floating_point() ? w.scalar_type() : at::kFloat;
    if (dt == at::kHalf || dt == at::kBFloat16) dt = at::kFloat;
    auto opts = at::TensorOptions().dtype(dt).device(w.device());
    LoraLayer l;
    l.module = t;
    l.dropout = spec.lora_dropout;
    l.scaling = spec.use_rslora ? spec.lora_alpha / std::sqrt(static_cast<double>(spec.r))
                                : spec.lora_alpha / static_cast<double>(spec.r);
    // nn.Linear's default init (kaiming_uniform_ with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in)))
    const double bound_a = 1.0 / std::sqrt(static_cast<double>(in));
    l.A = at::empty({spec.r, in}, opts);
    if (spec.init == "gaussian") l.A.normal_(0.0, 1.0 / static_cast<double>(spec.r));
    else l.A.uniform_(-bound_a, bound_a);
    l.B = at::zeros({out, spec.r}, opts);
    if (spec.init == "false") l.B.uniform_(-1.0 / std::sqrt(static_cast<double>(spec.r)), 1.0 / std::sqrt(static_cast<double>(spec.r)));
    l.A.set_requires_grad(spec.trainable);
    l.B.set_requires_grad(spec.trainable);
    lora_[rel] = l;
  }
  for (auto& [rel, t] : tensors_) {
    if (!ends_with(rel, ".bias") || !t.is_floating_point()) continue;
    const bool targeted = lora_.count(rel.substr(0, rel.size() - 5)) > 0;
    if (spec.bias == "all" || (spec.bias == "lora_only" && targeted)) t.set_requires_grad(spec.trainable);
  }
  for (const auto& [rel, module] : saved_rel) {
    at::Tensor& live = tensors_.at(rel);
    saved_originals_[rel] = live;  // frozen, as the wrapper's original_module
    live = live.detach().clone();
    live.set_requires_grad(spec.trainable);
  }
  lora_spec_ = spec;
  adapters_enabled_ = true;
  rebuild_param_list();
}

std::vector<std::pair<std::string, at::Tensor>> Model::lora_state_dict() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& [rel, l] : lora_) {
    out[kPrefix + l.module + ".lora_A.weight"] = l.A;
    out[kPrefix + l.module + ".lora_B.weight"] = l.B;
  }
  const std::string bias = lora_spec_ ? lora_spec_->bias : "none";
  for (const auto& [rel, d] : decls_) {
    if (!d.tied_to.empty()) continue;
    const std::string module_rel = rel.substr(0, rel.rfind('.'));
    if (saved_originals_.count(rel)) {
      out[kPrefix + d.full_name] = tensors_.at(rel);  // the trained copy
    } else if (ends_with(rel, ".bias") && bias != "none") {
      const bool targeted = lora_.count(module_rel) > 0;
      if (bias == "all" || targeted) {
        std::string name = d.full_name;
        if (targeted) name = name.substr(0, name.size() - 5) + ".base_layer.bias";
        out[kPrefix + name] = tensors_.at(rel);
      }
    }
  }
  return {out.begin(), out.end()};
}

void Model::lora_load_state_dict(const std::map<std::string, at::Tensor>& tensors, const std::string& source) {
  if (!lora_spec_) throw sky::Error(class_name() + " has no adapter to load " + source + " into");
  at::NoGradGuard no_grad;
  // every tensor the adapter file may hold, by the name PEFT saves it under
  std::map<std::string, at::Tensor*> slots;
  std::set<std::string> adapter_keys;
  const std::string& a = lora_spec_->adapter;
  for (auto& [rel, l] : lora_) {
    for (auto [which, t] : {std::pair<const char*, at::Tensor*>{"lora_A", &l.A}, {"lora_B", &l.B}}) {
      const std::string key = kPrefix + l.module + "." + which + ".weight";
      slots[key] = t;
      slots[kPrefix + l.module + "." + which + "." + a + ".weight"] = t;  // the in-model name, as some tools save it
      adapter_keys.insert(key);
    }
  }
  for (const auto& [rel, d] : decls_) {
    if (!d.tied_to.empty()) continue;
    at::Tensor* t = &tensors_.at(rel);
    if (ends_with(rel, ".bias") && lora_.count(rel.substr(0, rel.size() - 5)))
      slots[kPrefix + d.full_name.substr(0, d.full_name.size() - 5) + ".base_layer.bias"] = t;
    if (!(ends_with(rel, ".weight") && quant_.count(rel.substr(0, rel.size() - 7)))) slots[kPrefix + d.full_name] = t;
  }
  std::vector<std::string> unexpected;
  std::set<std::string> loaded;
  for (const auto& [name, src] : tensors) {
    auto it = slots.find(name);
    if (it == slots.end()) {
      unexpected.push_back(name);
      continue;
    }
    at::Tensor& dst = *it->second;
    if (!src.sizes().equals(dst.sizes()))
      throw sky::Error(source + ": tensor '" + name + "' has shape " + shape_text(src.sizes()) + " but " + class_name() +
                       " with this adapter expects " + shape_text(dst.sizes()) +
                       " (an adapter made for another base model?)");
    dst.copy_(src);
    for (const auto& [k, slot] : slots)
      if (slot == it->second) loaded.insert(k);
  }
  if (!unexpected.empty()) {
    std::string list;
    for (size_t i = 0; i < unexpected.size() && i < 8; ++i) list += (i ? ", '" : "'") + unexpected[i] + "'";
    if (unexpected.size() > 8) list += ", ... (" + std::to_string(unexpected.size()) + " in all)";
    throw sky::Error(source + ": tensors that match nothing in " + class_name() + " with this adapter: " + list +
                     " (an adapter made for another base model?)");
  }
  std::vector<std::string> missing;
  for (const std::string& k : adapter_keys)
    if (!loaded.count(k)) missing.push_back(k);
  if (!missing.empty()) {
    // PEFT warns and keeps the freshly initialised values
    std::string msg = "Found missing adapter keys while loading the checkpoint " + source + ": [";
    for (size_t i = 0; i < missing.size(); ++i) msg += (i ? ", '" : "'") + missing[i] + "'";
    fprintf(stderr, "%s]\n", msg.c_str());
  }
}

void Model::lora_merge_and_unload() {
  at::NoGradGuard no_grad;
  if (adapters_enabled_ == false) set_adapters_enabled(true);
  for (auto& [rel, l] : lora_) {
    // get_delta_weight: (B @ A) * scaling, in float32 for 16-bit adapters on the CPU; transposed for Conv1D
    const bool upcast = l.A.is_cpu() && (l.A.scalar_type() == at::kHalf || l.A.scalar_type() == at::kBFloat16);
    at::Tensor delta = (upcast ? at::matmul(l.B.to(at::kFloat), l.A.to(at::kFloat)) : at::matmul(l.B, l.A)) * l.scaling;
    const Decl& d = *find_decl(rel + ".weight");
    auto q = quant_.find(rel);
    if (q != quant_.end()) {
      // bnb: dequantize, add, quantize again
      const Quant4Weight& old = *q->second;
      at::Tensor w = quant4_dequantize(old, old.dtype);
      w = w + delta.to(w.scalar_type());
      auto merged = std::make_shared<Quant4Weight>(quant4_quantize(w, old.quant_type, old.nested(), old.blocksize));
      q->second = merged;
      tensors_.at(rel + ".weight") = merged->packed;
      continue;
    }
    at::Tensor& w = tensors_.at(rel + ".weight");
    if (d.kind == ModuleKind::Conv1D) delta = delta.t();
    w.add_(delta.to(w.scalar_type()));
  }
  lora_.clear();
  saved_originals_.clear();  // the modules_to_save copies stay in the model, as PEFT's unload returns them
  lora_spec_.reset();
  rebuild_param_list();
}

void Model::lora_unload() {
  if (!adapters_enabled_) set_adapters_enabled(true);
  lora_.clear();
  saved_originals_.clear();
  lora_spec_.reset();
  rebuild_param_list();
}

void Model::set_adapters_enabled(bool on) {
  if (on == adapters_enabled_) return;
  // modules_to_save: the original module while disabled, the trained copy while enabled
  for (auto& [rel, other] : saved_originals_) std::swap(tensors_.at(rel), other);
  adapters_enabled_ = on;
  rebuild_param_list();
}

std::pair<int64_t, int64_t> Model::peft_parameter_counts() const {
  int64_t trainable = 0, all = 0;
  for (const auto& [name, t] : params_) {
    // bitsandbytes' Params4bit: numel * 2 (two codes per byte)
    const int64_t n = t.scalar_type() == at::kByte ? t.numel() * 2 : t.numel();
    all += n;
    if (t.requires_grad()) trainable += n;
  }
  for (const auto& [rel, t] : saved_originals_) {
    all += t.numel();
    if (t.requires_grad()) trainable += t.numel();
  }
  return {trainable, all};
}

}  // namespace sky::nn
