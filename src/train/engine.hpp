// The training step, native: a model seen through TrainableModel, batches of named tensors, the
// optimizer and lr schedule, gradient clipping, bf16 autocast on CUDA, and the tensor state of a
// checkpoint (optimizer, scheduler, RNG). The loop around it (epochs, logging, evaluation,
// callbacks, checkpoint folders) is Lua: lua/transformers/trainer.lua.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "train/optim.hpp"
#include "train/schedule.hpp"

namespace sky::train {

// B: rows, T: tokens. input_ids (B, T) int64, attention_mask (B, T) int64, labels (B, T) or (B).
struct Batch {
  std::map<std::string, at::Tensor> tensors;
  int64_t rows = 0;
  const at::Tensor* find(const std::string& name) const {
    auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : &it->second;
  }
};

struct ModelOutput {
  at::Tensor loss;    // scalar; undefined without labels
  at::Tensor logits;  // (B, C) or (B, T, V)
};

// What the Trainer needs of a model. Models of src/nn and the tiny test model implement it.
class TrainableModel {
 public:
  virtual ~TrainableModel() = default;
  virtual std::vector<NamedParam> named_parameters() = 0;
  // num_items_in_batch: tokens (or rows) with a label over the whole accumulated batch; a model
  // that accepts it sums its loss and divides by it (HF's model_accepts_loss_kwargs).
  virtual ModelOutput forward(const Batch& batch, std::optional<double> num_items_in_batch) = 0;
  virtual void set_training(bool training) = 0;
  virtual void to_device(const at::Device& device) = 0;
  virtual bool accepts_loss_kwargs() const { return true; }
  // Labels are shifted inside the model (causal LM): num_items counts labels[:, 1:].
  virtual bool shifts_labels() const { return false; }
};

// torch.amp.GradScaler's dynamic loss scale (fp16): scale the loss, unscale the grads, skip the
// step (and the schedule) when a grad is inf/NaN and halve the scale; double it after
// growth_interval good steps.
struct LossScaler {
  bool enabled = false;
  double scale = 65536.0;
  double growth_factor = 2.0, backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  int64_t growth_tracker = 0;
};

struct EngineConfig {
  OptimConfig optim;
  Schedule schedule;
  double max_grad_norm = 1.0;
  bool bf16 = false;
  bool fp16 = false;            // fp16 autocast on CUDA, with the loss scaler
  bool loss_scaling = false;    // the scaler without fp16 (tests: scaling by 2^k is exact in fp32)
  double init_scale = 65536.0;
  at::Device device = at::kCPU;
  // DDP over sky::dist's default group (when one of several ranks exists): parameters start
  // from rank 0's, gradients are averaged before clipping. With num_items_in_batch counted over
  // every rank (HF's average_tokens_across_devices), each rank's loss is multiplied by the world
  // size so that the averaged gradient is the one of the global batch.
  int64_t world_size = 1;
};

struct StepResult {
  double grad_norm = 0;  // before clipping; NaN when clipping is off
  double lr = 0;         // the lr this step used
  bool skipped = false;  // fp16: inf/NaN grads, no update, schedule not advanced
};

class Engine {
 public:
  Engine(std::shared_ptr<TrainableModel> model, EngineConfig cfg);

  // forward + backward of one micro-batch; returns the loss value training_step returns (already
  // divided by accumulation steps when the model does not take num_items_in_batch).
  double forward_backward(const Batch& batch, std::optional<double> num_items, int64_t accumulation_steps);
  // clip, step with the scheduled lr, advance the schedule, zero grads.
  StepResult optimizer_step();
  // loss (mean over the batch, NaN without labels) and logits on the CPU, in fp32.
  ModelOutput eval_batch(const Batch& batch);

  int64_t scheduler_steps() const { return scheduler_steps_; }
  double loss_scale() const { return scaler_.enabled ? scaler_.scale : 1.0; }
  double current_lr() const;
  TrainableModel& model() { return *model_; }
  const EngineConfig& config() const { return cfg_; }
  Optimizer& optimizer() { return *optim_; }

  // optimizer.pt, scheduler.pt, rng_state.pth in folder (ours: torch archives)
  void state_save(const std::string& folder) const;
  void state_load(const std::string& folder);

  // tokens with a label in batch (labels[:, 1:] for models that shift them)
  int64_t count_items(const Batch& batch) const;

 private:
  Batch to_device(const Batch& b) const;
  std::vector<at::Tensor> param_tensors() const;
  void sync_params_from_rank0();
  std::shared_ptr<TrainableModel> model_;
  EngineConfig cfg_;
  std::unique_ptr<Optimizer> optim_;
  int64_t scheduler_steps_ = 0;
  LossScaler scaler_;
};

// Seeds torch's CPU (and CUDA) generators, as transformers.set_seed does for torch.
void engine_set_seed(uint64_t seed);

// A small sequence classifier (embedding, masked mean, linear; cross-entropy over rows) for the
// Trainer's own tests when no src/nn model is wanted. Parameters "embed.weight",
// "classifier.weight", "classifier.bias".
std::shared_ptr<TrainableModel> tiny_classifier_new(int64_t vocab, int64_t hidden, int64_t labels, uint64_t seed);
void tiny_classifier_save(TrainableModel& m, const std::string& path);
void tiny_classifier_load(TrainableModel& m, const std::string& path);

}  // namespace sky::train
