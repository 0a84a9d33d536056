// Engine: HF Trainer's training_step / optimizer step / prediction_step, natively.
#include "train/engine.hpp"

#include <ATen/autocast_mode.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <mutex>
#include <stdexcept>

#include "dist/dist.hpp"
#include "sky_config.h"
#include "torch/compat.hpp"

#if SKY_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

namespace sky::train {

namespace {

// bf16 (or fp16) autocast on CUDA for the scope (HF's bf16=True: fp32 weights, bf16 matmuls).
class AutocastScope {
 public:
  explicit AutocastScope(bool on, at::ScalarType dtype = at::kBFloat16) : on_(on) {
    if (!on_) return;
#if SKY_TORCH_AT_LEAST(2, 4)
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(dtype);
#endif
  }
  ~AutocastScope() {
    if (!on_) return;
#if SKY_TORCH_AT_LEAST(2, 4)
    at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
    at::autocast::set_enabled(false);
#endif
    at::autocast::clear_cache();
  }

 private:
  bool on_;
};

}  // namespace

Engine::Engine(std::shared_ptr<TrainableModel> model, EngineConfig cfg) : model_(std::move(model)), cfg_(cfg) {
  if (cfg_.bf16 && !cfg_.device.is_cuda())
    throw std::runtime_error("not supported yet: bf16 on the CPU (bf16 autocast runs on CUDA)");
  if (cfg_.fp16 && !cfg_.device.is_cuda())
    throw std::runtime_error("not supported yet: fp16 on the CPU (fp16 autocast runs on CUDA)");
  scaler_.enabled = cfg_.fp16 || cfg_.loss_scaling;
  scaler_.scale = cfg_.init_scale;
  model_->to_device(cfg_.device);
  std::vector<NamedParam> params;
  for (NamedParam& p : model_->named_parameters())
    if (p.param.requires_grad()) params.push_back(p);
  optim_ = std::make_unique<Optimizer>(std::move(params), cfg_.optim);
  optim_->set_lr(current_lr());
  if (cfg_.world_size > 1) sync_params_from_rank0();
}

std::vector<at::Tensor> Engine::param_tensors() const {
  std::vector<at::Tensor> ts;
  for (const NamedParam& p : optim_->params()) ts.push_back(p.param);
  return ts;
}

void Engine::sync_params_from_rank0() { sky::dist::sync_parameters(param_tensors(), 0); }

double Engine::current_lr() const { return cfg_.optim.lr * schedule_factor(cfg_.schedule, scheduler_steps_); }

Batch Engine::to_device(const Batch& b) const {
  if (cfg_.device.is_cpu()) return b;
  Batch out;
  out.rows = b.rows;
  for (const auto& [k, v] : b.tensors) out.tensors[k] = v.to(cfg_.device, /*non_blocking=*/true);
  return out;
}

int64_t Engine::count_items(const Batch& batch) const {
  const at::Tensor* labels = batch.find("labels");
  if (!labels) return 0;
  at::Tensor l = *labels;
  if (l.dim() >= 2 && model_->shifts_labels()) l = l.slice(-1, 1);
  return l.ne(-100).sum().item<int64_t>();
}

double Engine::forward_backward(const Batch& batch, std::optional<double> num_items, int64_t accumulation_steps) {
  model_->set_training(true);
  Batch b = to_device(batch);
  at::Tensor loss;
  {
    AutocastScope autocast(cfg_.bf16 || cfg_.fp16, cfg_.fp16 ? at::kHalf : at::kBFloat16);
    bool pass_items = model_->accepts_loss_kwargs() && num_items.has_value();
    ModelOutput out = model_->forward(b, pass_items ? num_items : std::nullopt);
    if (!out.loss.defined())
      throw std::runtime_error("the model returned no loss: the batch has no 'labels' (set label_names or use a collator that adds them)");
    loss = out.loss;
    // HF: divide by the accumulation steps unless the model normalised by num_items_in_batch
    if (!pass_items) loss = loss / static_cast<double>(accumulation_steps);
    else if (cfg_.world_size > 1) loss = loss * static_cast<double>(cfg_.world_size);
  }
  if (scaler_.enabled) (loss.to(at::kFloat) * scaler_.scale).backward();
  else loss.backward();
  return loss.detach().to(at::kFloat).item<double>();
}

StepResult Engine::optimizer_step() {
  StepResult r;
  r.lr = current_lr();
  if (cfg_.world_size > 1) sky::dist::sync_gradients(param_tensors());  // DDP: mean over ranks
  if (scaler_.enabled) {
    // GradScaler.unscale_ then the inf check; a bad step changes nothing but the scale
    at::NoGradGuard no_grad;
    const double inv = 1.0 / scaler_.scale;
    bool found_inf = false;
    for (const NamedParam& p : optim_->params()) {
      at::Tensor g = p.param.grad();
      if (!g.defined()) continue;
      g.mul_(inv);
      if (!found_inf && !g.isfinite().all().item<bool>()) found_inf = true;
    }
    if (found_inf) {
      scaler_.scale *= scaler_.backoff_factor;
      scaler_.growth_tracker = 0;
      optim_->zero_grad();
      r.grad_norm = NAN;
      r.skipped = true;
      return r;
    }
    if (++scaler_.growth_tracker == scaler_.growth_interval) {
      scaler_.scale *= scaler_.growth_factor;
      scaler_.growth_tracker = 0;
    }
  }
  r.grad_norm = cfg_.max_grad_norm > 0 ? clip_grad_norm(optim_->params(), cfg_.max_grad_norm) : NAN;
  optim_->set_lr(r.lr);
  optim_->step();
  ++scheduler_steps_;
  optim_->set_lr(current_lr());
  optim_->zero_grad();
  return r;
}

ModelOutput Engine::eval_batch(const Batch& batch) {
  model_->set_training(false);
  at::NoGradGuard no_grad;
  Batch b = to_device(batch);
  AutocastScope autocast(cfg_.bf16 || cfg_.fp16, cfg_.fp16 ? at::kHalf : at::kBFloat16);
  // HF 5.17 passes num_items_in_batch in evaluation too (counted per batch with the same rule as
  // in training), which is why GPT2LMHeadModel's eval loss divides by the unshifted label count.
  std::optional<double> items;
  if (model_->accepts_loss_kwargs() && b.find("labels")) {
    int64_t n = count_items(b);
    if (n > 0) items = static_cast<double>(n);
  }
  ModelOutput out = model_->forward(b, items);
  ModelOutput cpu;
  if (out.loss.defined()) cpu.loss = out.loss.detach().to(at::kCPU, at::kFloat);
  if (out.logits.defined()) cpu.logits = out.logits.detach().to(at::kCPU, at::kFloat);
  return cpu;
}

void Engine::state_save(const std::string& folder) const {
  {
    torch::serialize::OutputArchive ar;
    optim_->state_save(ar);
    ar.save_to(folder + "/optimizer.pt");
  }
  {
    torch::serialize::OutputArchive ar;
    ar.write("last_epoch", at::full({}, static_cast<double>(scheduler_steps_), at::kDouble));
    ar.write("base_lr", at::full({}, cfg_.optim.lr, at::kDouble));
    ar.write("loss_scale", at::full({}, scaler_.scale, at::kDouble));
    ar.write("loss_scale_growth_tracker", at::full({}, static_cast<double>(scaler_.growth_tracker), at::kDouble));
    ar.save_to(folder + "/scheduler.pt");
  }
  {
    torch::serialize::OutputArchive ar;
    ar.write("cpu", at::detail::getDefaultCPUGenerator().get_state());
#if SKY_HAVE_CUDA
    if (cfg_.device.is_cuda()) ar.write("cuda", at::cuda::detail::getDefaultCUDAGenerator(cfg_.device.index() < 0 ? 0 : cfg_.device.index()).get_state());
#endif
    ar.save_to(folder + "/rng_state.pth");
  }
}

void Engine::state_load(const std::string& folder) {
  for (const char* f : {"/optimizer.pt", "/scheduler.pt", "/rng_state.pth"})
    if (!std::filesystem::exists(folder + f))
      throw std::runtime_error("checkpoint " + folder + " has no " + std::string(f + 1) + " (not a Trainer checkpoint of skyrun?)");
  {
    torch::serialize::InputArchive ar;
    ar.load_from(folder + "/optimizer.pt");
    optim_->state_load(ar);
  }
  {
    torch::serialize::InputArchive ar;
    ar.load_from(folder + "/scheduler.pt");
    at::Tensor last;
    ar.read("last_epoch", last);
    scheduler_steps_ = static_cast<int64_t>(last.item<double>());
    at::Tensor scale, tracker;
    if (ar.try_read("loss_scale", scale) && ar.try_read("loss_scale_growth_tracker", tracker)) {
      scaler_.scale = scale.item<double>();
      scaler_.growth_tracker = static_cast<int64_t>(tracker.item<double>());
    }
    optim_->set_lr(current_lr());
  }
  {
    torch::serialize::InputArchive ar;
    ar.load_from(folder + "/rng_state.pth");
    at::Tensor s;
    ar.read("cpu", s);
    at::Generator gen = at::detail::getDefaultCPUGenerator();  // a handle sharing the default generator
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(s);
#if SKY_HAVE_CUDA
    at::Tensor c;
    if (cfg_.device.is_cuda() && ar.try_read("cuda", c))
    {
      at::Generator gen = at::cuda::detail::getDefaultCUDAGenerator(cfg_.device.index() < 0 ? 0 : cfg_.device.index());
      gen.set_state(c);
    }
#endif
  }
}

void engine_set_seed(uint64_t seed) {
  torch::manual_seed(seed);  // CPU and every CUDA device
}

// ---- the tiny test classifier -----------------------------------------------------------------

namespace {

class TinyClassifier : public TrainableModel {
 public:
  TinyClassifier(int64_t vocab, int64_t hidden, int64_t labels, uint64_t seed) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    embed_ = at::normal(0.0, 0.02, {vocab, hidden}, gen).set_requires_grad(true);
    w_ = at::normal(0.0, 0.02, {labels, hidden}, gen).set_requires_grad(true);
    b_ = at::zeros({labels}).set_requires_grad(true);
  }
  std::vector<NamedParam> named_parameters() override {
    return {{"embed.weight", embed_}, {"classifier.weight", w_}, {"classifier.bias", b_}};
  }
  ModelOutput forward(const Batch& batch, std::optional<double> num_items) override {
    const at::Tensor* ids = batch.find("input_ids");
    if (!ids) throw std::runtime_error("tiny classifier: the batch has no input_ids");
    at::Tensor mask = batch.find("attention_mask") ? *batch.find("attention_mask") : at::ones_like(*ids);
    at::Tensor h = at::embedding(embed_, *ids);                        // (B, T, H)
    at::Tensor m = mask.unsqueeze(-1).to(h.scalar_type());             // (B, T, 1)
    at::Tensor pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0);      // (B, H)
    ModelOutput out;
    out.logits = at::linear(pooled, w_, b_);                           // (B, C)
    if (const at::Tensor* labels = batch.find("labels")) {
      if (num_items) {
        out.loss = at::cross_entropy_loss(out.logits, *labels, {}, at::Reduction::Sum, -100) / *num_items;
      } else {
        out.loss = at::cross_entropy_loss(out.logits, *labels, {}, at::Reduction::Mean, -100);
      }
    }
    return out;
  }
  void set_training(bool) override {}
  void to_device(const at::Device& d) override {
    embed_ = embed_.detach().to(d).set_requires_grad(true);
    w_ = w_.detach().to(d).set_requires_grad(true);
    b_ = b_.detach().to(d).set_requires_grad(true);
  }
  at::Tensor embed_, w_, b_;
};

}  // namespace

std::shared_ptr<TrainableModel> tiny_classifier_new(int64_t vocab, int64_t hidden, int64_t labels, uint64_t seed) {
  if (vocab < 1 || hidden < 1 || labels < 1) throw std::runtime_error("tiny classifier: sizes must be positive");
  return std::make_shared<TinyClassifier>(vocab, hidden, labels, seed);
}

void tiny_classifier_save(TrainableModel& m, const std::string& path) {
  torch::serialize::OutputArchive ar;
  for (NamedParam& p : m.named_parameters()) ar.write(p.name, p.param.detach().cpu());
  std::string tmp = path + ".tmp";
  ar.save_to(tmp);
  std::filesystem::rename(tmp, path);
}

void tiny_classifier_load(TrainableModel& m, const std::string& path) {
  torch::serialize::InputArchive ar;
  ar.load_from(path);
  at::NoGradGuard no_grad;
  for (NamedParam& p : m.named_parameters()) {
    at::Tensor t;
    ar.read(p.name, t);
    p.param.copy_(t);
  }
}

}  // namespace sky::train
