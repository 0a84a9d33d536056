// Engine: HF Trainer's training_step / optimizer step / prediction_step, natively.
#include "train/engine.hpp"

#include <ATen/autocast_mode.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <mutex>
#include <stdexcept>

#include "dist/dist.hpp"
#include "host/fs.hpp"
#include "sky_config.h"
#include "torch/compat.hpp"
#include "train/ddp.hpp"
#include "train/step_graph.hpp"

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
  std::shared_ptr<sky::dist::Group> group;
  if (cfg_.world_size > 1) {
    group = sky::dist::default_group();
    if (!group || group->world_size() != cfg_.world_size)
      throw std::runtime_error("the engine was told of " + std::to_string(cfg_.world_size) +
                               " ranks but no process group of that size exists (sky.dist.init_process_group)");
    rank_ = group->rank();
  }
  model_->to_device(cfg_.device);
  std::vector<NamedParam> params;
  if (cfg_.fsdp && group) {
    fsdp_ = std::dynamic_pointer_cast<Fsdp>(model_->block_hook_owner());
    if (!fsdp_) fsdp_ = make_fsdp(group);
    params = fsdp_->trainable_shards();
  } else {
    if (std::dynamic_pointer_cast<Fsdp>(model_->block_hook_owner()))
      throw std::runtime_error("the model is sharded by FSDP already: train it with FSDP on the same ranks");
    for (NamedParam& p : model_->named_parameters())
      if (p.param.requires_grad()) params.push_back(p);
  }
  optim_ = std::make_unique<Optimizer>(params, cfg_.optim);
  optim_->set_lr(current_lr());
  if (group && !fsdp_) {
    sync_params_from_rank0();
    ddp_ = std::make_unique<DdpReducer>(params, group, cfg_.ddp_bucket_bytes);
  }
  tr_loss_ = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(cfg_.device));
  if (cfg_.cuda_graphs && fsdp_) throw std::runtime_error("not supported yet: torch_compile (CUDA graphs) with FSDP");
  if (cfg_.cuda_graphs) graph_ = StepGraph::make(*this);
}

// Shards the model over the group's ranks: the blocks of the configured classes become the units.
std::shared_ptr<Fsdp> Engine::make_fsdp(const std::shared_ptr<sky::dist::Group>& group) {
  if (model_->has_quantized_weights())
    throw std::runtime_error("not supported yet: FSDP with 4-bit weights (QLoRA); use LoRA on 16-bit weights");
  FsdpConfig fc = *cfg_.fsdp;
  if (fc.blocks.empty() && cfg_.fsdp_wrap) {
    auto [cls, prefixes] = model_->blocks();
    for (const std::string& want : cfg_.fsdp_block_classes)
      if (want != cls)
        throw std::runtime_error("Could not find the transformer layer class " + want + " in the model" +
                                 (cls.empty() ? std::string(" (it has no transformer blocks)")
                                              : " (its blocks are " + cls + ")"));
    fc.blocks = prefixes;
  }
  std::vector<NamedParam> all = model_->named_parameters();
  auto f = std::make_shared<Fsdp>(std::move(all), fc, group, cfg_.device);
  Fsdp* raw = f.get();
  BlockHook hook = [raw](const std::string& prefix, const at::Tensor& h, const BlockRun& run) {
    return raw->run_block(prefix, h, run);
  };
  if (!fc.blocks.empty() && !model_->set_block_hook(hook, f))
    throw std::runtime_error("not supported yet: FSDP for this model (its blocks cannot be wrapped)");
  return f;
}

void Engine::fsdp_gather(bool trainable_only) {
  if (!fsdp_) throw std::runtime_error("the engine does not shard the model (FSDP is off)");
  full_params_.reset();
  full_params_ = std::make_unique<Fsdp::FullParams>(*fsdp_, trainable_only);
}

void Engine::fsdp_release() { full_params_.reset(); }

Engine::~Engine() = default;

std::vector<at::Tensor> Engine::param_tensors() const {
  std::vector<at::Tensor> ts;
  for (const NamedParam& p : optim_->params()) ts.push_back(p.param);
  return ts;
}

void Engine::sync_params_from_rank0() { sky::dist::sync_parameters(param_tensors(), 0); }

double Engine::current_lr() const { return cfg_.optim.lr * schedule_factor(cfg_.schedule, scheduler_steps_); }

Batch Engine::host_prepare(const Batch& b) const {
  if (cfg_.device.is_cpu()) return b;
  Batch out;
  out.rows = b.rows;
  for (const auto& [k, v] : b.tensors) {
    // An all-ones padding mask says nothing: leave it out (read here on the host, so the model's
    // own check, a device sync, does not run), as HF drops it for SDPA.
    if (k == "attention_mask" && v.is_cpu() && v.all().item<bool>()) continue;
    out.tensors[k] = v;
  }
  return out;
}

Batch Engine::to_device(const Batch& b) const {
  if (cfg_.device.is_cpu()) return b;
  Batch out = host_prepare(b);
  for (auto& [k, v] : out.tensors) v = v.to(cfg_.device, /*non_blocking=*/true);  // asynchronous from pinned memory
  return out;
}

int64_t Engine::count_items(const Batch& batch) const {
  const at::Tensor* labels = batch.find("labels");
  if (!labels) return 0;
  at::Tensor l = *labels;
  if (l.dim() >= 2 && model_->shifts_labels()) l = l.slice(-1, 1);
  return l.ne(-100).sum().item<int64_t>();  // host tensors: no device sync
}

at::Tensor Engine::micro_forward_backward(const Batch& b, std::optional<double> num_items, int64_t accumulation_steps,
                                          const at::Tensor& items_divisor) {
  at::Tensor loss;
  {
    AutocastScope autocast(cfg_.bf16 || cfg_.fp16, cfg_.fp16 ? at::kHalf : at::kBFloat16);
    const bool pass_items = model_->accepts_loss_kwargs() && num_items.has_value();
    // A graph keeps num_items in a device tensor: a summing model divides by 1 (exact), then by it.
    const bool divide_here = pass_items && items_divisor.defined() && model_->loss_sums_over_items();
    ModelOutput out = model_->forward(b, pass_items ? (divide_here ? std::optional<double>(1.0) : num_items) : std::nullopt);
    if (!out.loss.defined())
      throw std::runtime_error("the model returned no loss: the batch has no 'labels' (set label_names or use a collator that adds them)");
    loss = out.loss;
    if (divide_here) loss = loss / items_divisor;
    // HF: divide by the accumulation steps unless the model normalised by num_items_in_batch
    if (!pass_items) loss = loss / static_cast<double>(accumulation_steps);
    // DDP averages gradients: a loss summed over the global num_items is scaled back by the world
    // size; a mean loss (classification, which ignores num_items) already averages correctly
    else if (cfg_.world_size > 1 && cfg_.average_tokens_across_devices && model_->loss_sums_over_items())
      loss = loss * static_cast<double>(cfg_.world_size);
  }
  if (scaler_.enabled) (loss.to(at::kFloat) * scaler_.scale).backward();
  else loss.backward();
  return loss.detach().to(at::kFloat);
}

void Engine::add_to_tr_loss(const at::Tensor& loss, int64_t steps_since_log) {
  // HF's logging_nan_inf_filter, on the device: a non-finite step adds the running mean instead
  at::NoGradGuard no_grad;
  tr_loss_.add_(at::where(loss.isfinite(), loss, tr_loss_ / static_cast<double>(std::max<int64_t>(steps_since_log, 1))));
}

bool Engine::apply_update(bool graph_mode) {
  at::NoGradGuard no_grad;
  if (ddp_) ddp_->finish();  // DDP: the buckets backward did not launch, then the mean over ranks
  if (scaler_.enabled) {
    // GradScaler.unscale_: one fused unscale-and-check over every grad on CUDA, then one read
    std::vector<at::Tensor> grads;
    for (const NamedParam& p : optim_->params())
      if (p.param.grad().defined()) grads.push_back(p.param.grad());
    const auto opts = at::TensorOptions().dtype(at::kFloat).device(cfg_.device);
    at::Tensor found_inf = at::zeros({1}, opts);
    if (cfg_.device.is_cuda()) {
      at::Tensor inv = at::full({1}, 1.0 / scaler_.scale, opts);
      at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv);
    } else {
      const double inv = 1.0 / scaler_.scale;
      for (at::Tensor& g : grads) {
        g.mul_(inv);
        found_inf.add_(g.isfinite().all().logical_not().to(at::kFloat));
      }
    }
    bool overflow = found_inf.item<float>() > 0;
    if (fsdp_) overflow = fsdp_->any_rank(overflow);  // every rank skips the step alike
    if (overflow) {
      scaler_.scale *= scaler_.backoff_factor;
      scaler_.growth_tracker = 0;
      grad_norm_ = at::Tensor();
      return false;
    }
    if (++scaler_.growth_tracker == scaler_.growth_interval) {
      scaler_.scale *= scaler_.growth_factor;
      scaler_.growth_tracker = 0;
    }
  }
  at::Tensor norm;
  if (cfg_.max_grad_norm > 0)
    norm = fsdp_ ? fsdp_->clip_grad_norm(cfg_.max_grad_norm) : clip_grad_norm(optim_->params(), cfg_.max_grad_norm);
  if (graph_mode && norm.defined()) grad_norm_.copy_(norm);  // into the graph's static output
  else grad_norm_ = norm;
  optim_->step();
  if (fsdp_) fsdp_->after_step();
  return true;
}

void Engine::finish_step(StepResult& r) {
  if (r.skipped) return;
  ++scheduler_steps_;
  optim_->set_lr(current_lr());
}

StepResult Engine::train_step(const std::vector<Batch>& micro, std::optional<double> num_items,
                              int64_t accumulation_steps, int64_t steps_since_log) {
  if (micro.empty()) throw std::runtime_error("train_step: no micro-batches");
  StepResult r;
  r.lr = current_lr();
  model_->set_training(true);
  if (graph_ && graph_->run(micro, num_items, accumulation_steps, steps_since_log, r)) {
    ++graph_replays_;
    finish_step(r);
    return r;
  }
  auto stream_scope = graph_ ? graph_->eager_scope() : nullptr;  // eager steps on the graph's stream
  if (grads_static_) optim_->zero_grad_in_place();
  for (size_t k = 0; k < micro.size(); ++k) {
    if (ddp_) ddp_->prepare(k + 1 == micro.size());  // no_sync but for the last micro-batch
    Batch dev = to_device(micro[k]);
    dev.want_logits = false;  // training reads the loss alone
    at::Tensor loss = micro_forward_backward(dev, num_items, accumulation_steps, at::Tensor());
    if (fsdp_) fsdp_->finish_backward();
    add_to_tr_loss(loss, steps_since_log);
  }
  r.skipped = !apply_update(false);
  if (!grads_static_) optim_->zero_grad();
  else if (r.skipped) optim_->zero_grad_in_place();
  finish_step(r);
  return r;
}

double Engine::take_loss() {
  double v = tr_loss_.item<double>();
  tr_loss_.zero_();
  return v;
}

std::optional<double> Engine::grad_norm() const {
  if (!grad_norm_.defined()) return std::nullopt;
  return grad_norm_.item<double>();
}

void Engine::eval_begin() {
  eval_sum_ = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(cfg_.device));
  eval_rows_ = 0;
}

at::Tensor Engine::eval_batch(const Batch& batch, bool want_logits) {
  if (!eval_sum_.defined()) eval_begin();
  model_->set_training(false);
  at::NoGradGuard no_grad;
  auto stream_scope = graph_ ? graph_->eager_scope() : nullptr;
  Batch b = to_device(batch);
  b.want_logits = want_logits;
  AutocastScope autocast(cfg_.bf16 || cfg_.fp16, cfg_.fp16 ? at::kHalf : at::kBFloat16);
  // HF 5.17 passes num_items_in_batch in evaluation too (counted per batch with the same rule as
  // in training), which is why GPT2LMHeadModel's eval loss divides by the unshifted label count.
  std::optional<double> items;
  if (model_->accepts_loss_kwargs() && batch.find("labels")) {
    int64_t n = count_items(batch);
    if (n > 0) items = static_cast<double>(n);
  }
  ModelOutput out = model_->forward(b, items);
  if (out.loss.defined()) {
    eval_sum_.add_(out.loss.detach().to(at::kDouble) * static_cast<double>(batch.rows));
    eval_rows_ += batch.rows;
  }
  return want_logits && out.logits.defined() ? out.logits.detach() : at::Tensor();
}

std::pair<double, int64_t> Engine::eval_end() {
  double sum = eval_sum_.defined() ? eval_sum_.item<double>() : 0.0;
  int64_t rows = eval_rows_;
  eval_sum_ = at::Tensor();
  eval_rows_ = 0;
  return {sum, rows};
}

at::Tensor Engine::to_host(const at::Tensor& t) {
  at::Tensor h = t.to(at::kCPU, t.is_floating_point() ? at::kFloat : t.scalar_type());
  host_logits_bytes_ += h.numel() * static_cast<int64_t>(h.element_size());
  return h;
}

namespace {

// ar.save_to(path) writes through LibTorch's PyTorchStreamWriter, which throws from its destructor
// when a write failed (a full disk): std::terminate. Here the writer never sees a failure: the
// bytes go through a callback that keeps the first error and swallows the rest, and the error is
// raised after the writer is gone. The file appears only complete (temporary name, then rename).
void save_archive(torch::serialize::OutputArchive& ar, const std::string& path) {
  fs::AtomicFileWriter out(path);
  std::exception_ptr failed;
  ar.save_to([&](const void* data, size_t n) -> size_t {
    if (!failed) {
      try {
        out.write(data, n);
      } catch (...) {
        failed = std::current_exception();
      }
    }
    return n;
  });
  if (failed) std::rethrow_exception(failed);
  out.commit();
}

}  // namespace

// HF's names: rng_state_<rank>.pth for each of several ranks when every rank saves (FSDP);
// rng_state.pth when one process saves (one rank, or DDP's rank 0, whose file every rank loads).
std::string Engine::rng_file() const {
  return fsdp_ ? "/rng_state_" + std::to_string(rank_) + ".pth" : "/rng_state.pth";
}

std::string Engine::optimizer_shard_file() const {
  char name[64];
  snprintf(name, sizeof(name), "/optimizer_0/rank-%05d-of-%05d.pt", rank_, static_cast<int>(cfg_.world_size));
  return name;
}

void Engine::state_save(const std::string& folder, bool sharded) {
  const bool main = rank_ == 0;
  {
    torch::serialize::OutputArchive ar;
    if (fsdp_ && !sharded) {
      // FULL: every rank takes part in gathering each state tensor; rank 0 writes them whole
      optim_->state_save(ar, [&](const std::string& name, const at::Tensor& t) { return fsdp_->full_of(name, t); });
    } else {
      optim_->state_save(ar);
    }
    if (fsdp_ && sharded) {
      std::filesystem::create_directories(folder + "/optimizer_0");
      save_archive(ar, folder + optimizer_shard_file());
    } else if (main) {
      save_archive(ar, folder + "/optimizer.pt");
    }
  }
  if (main) {
    torch::serialize::OutputArchive ar;
    ar.write("last_epoch", at::full({}, static_cast<double>(scheduler_steps_), at::kDouble));
    ar.write("base_lr", at::full({}, cfg_.optim.lr, at::kDouble));
    ar.write("loss_scale", at::full({}, scaler_.scale, at::kDouble));
    ar.write("loss_scale_growth_tracker", at::full({}, static_cast<double>(scaler_.growth_tracker), at::kDouble));
    save_archive(ar, folder + "/scheduler.pt");
  }
  {
    torch::serialize::OutputArchive ar;
    ar.write("cpu", at::detail::getDefaultCPUGenerator().get_state());
#if SKY_HAVE_CUDA
    if (cfg_.device.is_cuda()) ar.write("cuda", at::cuda::detail::getDefaultCUDAGenerator(cfg_.device.index() < 0 ? 0 : cfg_.device.index()).get_state());
#endif
    save_archive(ar, folder + rng_file());
  }
}

void Engine::state_load(const std::string& folder, bool sharded) {
  const std::string optimizer = fsdp_ && sharded ? optimizer_shard_file() : "/optimizer.pt";
  std::string rng = rng_file();
  if (!std::filesystem::exists(folder + rng) && std::filesystem::exists(folder + "/rng_state.pth")) rng = "/rng_state.pth";
  for (const std::string& f : {optimizer, std::string("/scheduler.pt"), rng})
    if (!std::filesystem::exists(folder + f)) {
      if (f == optimizer && sharded)
        throw std::runtime_error("checkpoint " + folder + " has no " + f.substr(1) + ": a SHARDED_STATE_DICT checkpoint " +
                                 "resumes on the number of ranks that saved it (this run has " +
                                 std::to_string(cfg_.world_size) + ")");
      throw std::runtime_error("checkpoint " + folder + " has no " + f.substr(1) + " (not a Trainer checkpoint of skyrun?)");
    }
  {
    torch::serialize::InputArchive ar;
    ar.load_from(folder + optimizer);
    if (fsdp_ && !sharded)
      optim_->state_load(ar, [&](const std::string& name, const at::Tensor& t) { return fsdp_->shard_of(name, t); });
    else
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
    ar.load_from(folder + rng);
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

}  // namespace sky::train
