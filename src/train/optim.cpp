// torch.optim.AdamW / SGD (torch 2.x, _single_tensor_adam with decoupled weight decay) and
// clip_grad_norm_, op for op, so that losses match HF Trainer to float rounding.
#include "train/optim.hpp"

#include <cmath>
#include <regex>
#include <stdexcept>

#include "torch/compat.hpp"

namespace sky::train {

OptimKind optim_kind_from_name(const std::string& name) {
  if (name == "adamw_torch") return OptimKind::OPTIM_ADAMW;
  if (name == "adamw_torch_fused") return OptimKind::OPTIM_ADAMW_FUSED;
  if (name == "sgd") return OptimKind::OPTIM_SGD;
  throw std::invalid_argument("'" + name + "' is not a valid OptimizerNames");
}

bool param_gets_weight_decay(const std::string& name) {
  std::string low = name;
  for (char& c : low) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // HF's forbidden name patterns, searched in the lower-cased full name
  static const std::regex forbidden(R"(bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.))");
  if (std::regex_search(low, forbidden)) return false;
  // nn.LayerNorm modules HF excludes by type: GPT-2 names them ln_1, ln_2, ln_f; others "*layer_norm*", "*ln*"
  static const std::regex layer_norm_module(R"((?:^|\.)(?:ln_[^.]*|ln|layer_norm[^.]*|[^.]*_ln)\.weight$)");
  if (std::regex_search(low, layer_norm_module)) return false;
  return true;
}

Optimizer::Optimizer(std::vector<NamedParam> params, OptimConfig cfg)
    : params_(std::move(params)), cfg_(cfg), lr_(cfg.lr) {
  decay_.reserve(params_.size());
  for (const NamedParam& p : params_) decay_.push_back(param_gets_weight_decay(p.name));
  state_.resize(params_.size());
}

int64_t Optimizer::decay_count() const {
  int64_t n = 0;
  for (bool d : decay_) n += d;
  return n;
}

void Optimizer::zero_grad() {
  for (NamedParam& p : params_) {
    if (p.param.grad().defined()) p.param.mutable_grad() = at::Tensor();
  }
}

void Optimizer::zero_grad_in_place() {
  at::NoGradGuard no_grad;
  for (NamedParam& p : params_) {
    if (p.param.grad().defined()) p.param.mutable_grad().zero_();
  }
}

bool Optimizer::fused() const {
#if SKY_TORCH_AT_LEAST(2, 2)
  return cfg_.kind == OptimKind::OPTIM_ADAMW_FUSED && !params_.empty() && params_[0].param.is_cuda();
#else
  return false;
#endif
}

void Optimizer::set_lr(double lr) {
  lr_ = lr;
  if (!fused()) return;
  if (!lr_t_.defined()) lr_t_ = at::empty({}, params_[0].param.options().dtype(at::kFloat));
  lr_t_.fill_(lr);  // a kernel with the value as argument: no sync, ordered before the next step
}

void Optimizer::count_replayed_step() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (state_[i].step_t.defined()) state_[i].step += 1;
}

void Optimizer::step_adamw_single(size_t i, const at::Tensor& grad, double wd) {
  at::Tensor param = params_[i].param;
  ParamState& st = state_[i];
  if (!st.exp_avg.defined()) {
    st.exp_avg = at::zeros_like(param, at::MemoryFormat::Preserve);
    st.exp_avg_sq = at::zeros_like(param, at::MemoryFormat::Preserve);
  }
  st.step += 1;
  const double lr = lr_, beta1 = cfg_.beta1, beta2 = cfg_.beta2;
  if (wd != 0) param.mul_(1 - lr * wd);
  st.exp_avg.lerp_(grad, 1 - beta1);
  st.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  const double bias_correction1 = 1 - std::pow(beta1, st.step);
  const double bias_correction2 = 1 - std::pow(beta2, st.step);
  const double step_size = lr / bias_correction1;
  const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
  at::Tensor denom = (st.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(cfg_.eps);
  param.addcdiv_(st.exp_avg, denom, -step_size);
}

// torch's fused AdamW kernel, one launch per group, as optim="adamw_torch_fused" runs it, with the
// lr and the step counts in device tensors (torch's capturable form): nothing here reads the
// device, so the step can be captured in a CUDA graph and replayed.
void Optimizer::step_fused() {
#if SKY_TORCH_AT_LEAST(2, 2)
  if (!lr_t_.defined()) set_lr(lr_);
  for (int group = 0; group < 2; ++group) {
    std::vector<at::Tensor> ps, gs, m, v, vmax, steps;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (decay_[i] != (group == 0)) continue;
      at::Tensor g = params_[i].param.grad();
      if (!g.defined()) continue;
      ParamState& st = state_[i];
      if (!st.exp_avg.defined()) {
        st.exp_avg = at::zeros_like(params_[i].param, at::MemoryFormat::Preserve);
        st.exp_avg_sq = at::zeros_like(params_[i].param, at::MemoryFormat::Preserve);
      }
      if (!st.step_t.defined()) st.step_t = at::full({}, st.step, params_[i].param.options().dtype(at::kFloat));
      st.step += 1;
      ps.push_back(params_[i].param);
      gs.push_back(g);
      m.push_back(st.exp_avg);
      v.push_back(st.exp_avg_sq);
      steps.push_back(st.step_t);
    }
    if (ps.empty()) continue;
    at::_foreach_add_(steps, 1);  // torch's _fused_adamw: the counts advance before the kernel
    const double wd = group == 0 ? cfg_.weight_decay : 0.0;
    at::_fused_adamw_(ps, gs, m, v, vmax, steps, lr_t_, cfg_.beta1, cfg_.beta2, wd, cfg_.eps, false, false,
                      c10::nullopt, c10::nullopt);
  }
#endif
}

void Optimizer::step() {
  at::NoGradGuard no_grad;
  if (fused()) {
    step_fused();
    return;
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor grad = params_[i].param.grad();
    if (!grad.defined()) continue;
    const double wd = decay_[i] ? cfg_.weight_decay : 0.0;
    if (cfg_.kind == OptimKind::OPTIM_SGD) {
      at::Tensor g = wd != 0 ? grad.add(params_[i].param, wd) : grad;
      params_[i].param.add_(g, -lr_);
      state_[i].step += 1;
    } else {
      step_adamw_single(i, grad, wd);
    }
  }
}

void Optimizer::state_save(torch::serialize::OutputArchive& ar, const StateMap& saved_of) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamState& st = state_[i];
    const std::string& n = params_[i].name;
    // the fused path counts on the device (a replayed graph advances it without the host)
    const double step = st.step_t.defined() ? st.step_t.item<double>() : st.step;
    ar.write("step." + n, at::full({}, step, at::kDouble));
    if (st.exp_avg.defined()) {
      ar.write("exp_avg." + n, saved_of ? saved_of(n, st.exp_avg) : st.exp_avg.cpu());
      ar.write("exp_avg_sq." + n, saved_of ? saved_of(n, st.exp_avg_sq) : st.exp_avg_sq.cpu());
    }
  }
}

void Optimizer::state_load(torch::serialize::InputArchive& ar, const StateMap& mine_of) {
  for (size_t i = 0; i < params_.size(); ++i) {
    ParamState& st = state_[i];
    const std::string& n = params_[i].name;
    at::Tensor step;
    if (!ar.try_read("step." + n, step))
      throw std::runtime_error("optimizer state has no entry for parameter '" + n + "'");
    st.step = step.item<double>();
    st.step_t = at::Tensor();  // the fused path makes it again from st.step
    at::Tensor m, v;
    if (ar.try_read("exp_avg." + n, m) && ar.try_read("exp_avg_sq." + n, v)) {
      if (mine_of) {
        m = mine_of(n, m);
        v = mine_of(n, v);
      }
      if (!m.sizes().equals(params_[i].param.sizes()))
        throw std::runtime_error("optimizer state for '" + n + "' has shape " + c10::str(m.sizes()) +
                                 ", the parameter " + c10::str(params_[i].param.sizes()));
      st.exp_avg = m.to(params_[i].param.options()).contiguous();
      st.exp_avg_sq = v.to(params_[i].param.options()).contiguous();
    }
  }
}

at::Tensor clip_grad_norm(const std::vector<NamedParam>& params, double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads, norms;
  for (const NamedParam& p : params)
    if (p.param.grad().defined()) grads.push_back(p.param.grad());
  if (grads.empty()) return at::Tensor();
  // torch takes the foreach kernels on CUDA (one launch for all norms, one for the scaling) and
  // one op per tensor on the CPU; so do we.
  const bool foreach = SKY_TORCH_AT_LEAST(2, 1) && grads[0].is_cuda();
#if SKY_TORCH_AT_LEAST(2, 1)
  if (foreach) norms = at::_foreach_norm(grads, 2);
#endif
  if (!foreach)
    for (const at::Tensor& g : grads) norms.push_back(at::linalg_vector_norm(g, 2));
  at::Tensor total = at::linalg_vector_norm(at::stack(norms), 2);
  if (max_norm > 0) {
    // Python's `max_norm / (total_norm + 1e-6)` is Tensor.__rtruediv__: reciprocal, then multiply
    at::Tensor coef = (total + 1e-6).reciprocal() * max_norm;
    at::Tensor clamped = at::clamp_max(coef, 1.0);
#if SKY_TORCH_AT_LEAST(2, 1)
    if (foreach) at::_foreach_mul_(grads, clamped);
#endif
    if (!foreach)
      for (at::Tensor& g : grads) g.mul_(clamped);
  }
  return total;
}

}  // namespace sky::train
