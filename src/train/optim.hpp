// Optimizers as torch.optim runs them on one tensor at a time (the CPU path HF Trainer takes with
// optim="adamw_torch"): AdamW and SGD, HF's two parameter groups (weight decay off for biases and
// norm weights), gradient clipping as torch.nn.utils.clip_grad_norm_. LibTorch only; no Lua.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace sky::train {

enum class OptimKind { OPTIM_ADAMW, OPTIM_ADAMW_FUSED, OPTIM_SGD };

OptimKind optim_kind_from_name(const std::string& name);  // HF's optim names; throws on others

struct OptimConfig {
  OptimKind kind = OptimKind::OPTIM_ADAMW;
  double lr = 5e-5;            // initial lr; the schedule multiplies it
  double weight_decay = 0.0;   // applied to the decay group only
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

struct NamedParam {
  std::string name;
  at::Tensor param;  // requires_grad leaf, updated in place
};

// HF's Trainer.get_decay_parameter_names by name: no decay for names containing "bias",
// "layernorm", "rmsnorm", a ".norm." / "_norm." part, or a LayerNorm module (GPT-2's ln_1/ln_2/ln_f,
// BERT's LayerNorm).
bool param_gets_weight_decay(const std::string& name);

class Optimizer {
 public:
  Optimizer(std::vector<NamedParam> params, OptimConfig cfg);

  // The lr of the next step; on CUDA it also lives in a device tensor that the fused kernel reads,
  // so a captured step (CUDA graph) sees each new value (set outside the capture).
  void set_lr(double lr);
  double lr() const { return lr_; }
  void step();       // uses each param's .grad; params without a grad are skipped, as torch does
  void zero_grad();  // set_to_none, as model.zero_grad() does in torch 2.x
  void zero_grad_in_place();  // grads kept (a CUDA graph owns them), filled with zeros
  // A replayed graph ran step() on the device: advance the host copy of each step count.
  void count_replayed_step();
  // The fused AdamW path (CUDA, adamw_torch_fused): device step counts, lr tensor; capturable.
  bool fused() const;

  const std::vector<NamedParam>& params() const { return params_; }
  int64_t decay_count() const;

  // State as named tensors (exp_avg.<name>, exp_avg_sq.<name>, step.<name>), for checkpoints.
  // saved_of maps each state tensor to what is written (FSDP: the full tensor gathered from the
  // shards); mine_of maps what was read to this optimizer's tensor (FSDP: this rank's rows).
  using StateMap = std::function<at::Tensor(const std::string& param, const at::Tensor& t)>;
  void state_save(torch::serialize::OutputArchive& ar, const StateMap& saved_of = {}) const;
  void state_load(torch::serialize::InputArchive& ar, const StateMap& mine_of = {});

 private:
  struct ParamState {
    double step = 0;
    at::Tensor exp_avg, exp_avg_sq;
    at::Tensor step_t;  // fused path: float32 scalar on the device, mirrors step
  };
  void step_fused();
  void step_adamw_single(size_t i, const at::Tensor& grad, double wd);
  std::vector<NamedParam> params_;
  std::vector<bool> decay_;
  std::vector<ParamState> state_;
  OptimConfig cfg_;
  double lr_;
  at::Tensor lr_t_;  // fused path: float32 scalar on the device
};

// torch.nn.utils.clip_grad_norm_(params, max_norm, 2): returns the total norm before clipping (a
// float32 scalar on the grads' device: reading it is the caller's sync); grads are multiplied by
// clamp(max_norm / (total + 1e-6), max=1). max_norm <= 0: norm only. Undefined without grads.
at::Tensor clip_grad_norm(const std::vector<NamedParam>& params, double max_norm);

}  // namespace sky::train
