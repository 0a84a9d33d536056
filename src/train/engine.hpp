// The training step, native: a model seen through TrainableModel, batches of named tensors, the
// optimizer and lr schedule, gradient clipping, bf16 autocast on CUDA, CUDA graphs of the whole
// step for static shapes, and the tensor state of a checkpoint (optimizer, scheduler, RNG). The
// loop around it (epochs, logging, evaluation, callbacks, checkpoint folders) is Lua:
// lua/transformers/trainer.lua, which crosses into the engine once per optimizer step.
//
// Host syncs: a step reads nothing back from the device (bf16/fp32); fp16's loss scaler reads one
// flag per step (as torch.amp.GradScaler does). Losses and the grad norm stay on the device until
// the loop asks for them at a logging step (take_loss, grad_norm).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/dist.hpp"
#include "train/fsdp.hpp"
#include "train/optim.hpp"
#include "train/schedule.hpp"

namespace sky::train {

// B: rows, T: tokens. input_ids (B, T) int64, attention_mask (B, T) int64, labels (B, T) or (B).
// Tensors are on the CPU (pinned when the native data path made them) until the engine moves them.
struct Batch {
  std::map<std::string, at::Tensor> tensors;
  int64_t rows = 0;
  // false: the model may skip the logits (a causal LM's fused lm_head + loss); the engine clears
  // it for training steps and for evaluation without predictions
  bool want_logits = true;
  const at::Tensor* find(const std::string& name) const {
    auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : &it->second;
  }
};

struct ModelOutput {
  at::Tensor loss;    // scalar; undefined without labels
  at::Tensor logits;  // (B, C) or (B, T, V)
};

// Runs one transformer block around `run` (FSDP gathers the block's parameters first). prefix:
// the block's HF parameter prefix ("transformer.h.3.").
using BlockHook = std::function<at::Tensor(const std::string& prefix, const at::Tensor& h, const BlockRun& run)>;

// What the Trainer needs of a model. The models of src/nn implement it (model_lookup.cpp); PEFT
// models reach it through the same adapter (frozen tensors have requires_grad = false and never
// reach the optimizer).
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
  // The loss is a sum divided by num_items_in_batch (causal LM), not a mean that ignores it.
  virtual bool loss_sums_over_items() const { return false; }
  // The transformer blocks: HF's class name (its _no_split_modules: "GPT2Block",
  // "LlamaDecoderLayer", ...) and each block's parameter prefix, in forward order; empty when the
  // model has none.
  virtual std::pair<std::string, std::vector<std::string>> blocks() const { return {}; }
  // Runs every block through hook from now on, the owner kept with the model; false when the
  // model cannot. owner() returns what was set.
  virtual bool set_block_hook(BlockHook /*hook*/, std::shared_ptr<BlockHookOwner> /*owner*/) { return false; }
  virtual std::shared_ptr<BlockHookOwner> block_hook_owner() const { return nullptr; }
  // Weights stored in 4 bits (QLoRA): FSDP does not shard those.
  virtual bool has_quantized_weights() const { return false; }
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
  // every rank (HF's average_tokens_across_devices), each rank's summed loss (a causal LM's) is
  // multiplied by the world size so that the averaged gradient is the one of the global batch; a
  // mean loss (classification) is left as it is.
  int64_t world_size = 1;
  // TrainingArguments.average_tokens_across_devices = false: num_items_in_batch is this rank's
  // count and the loss is not multiplied (the averaged gradient is the mean of the ranks' means).
  bool average_tokens_across_devices = true;
  // FSDP instead of DDP when several ranks exist (fsdp.hpp); blocks are named by class in
  // fsdp_block_class (the prefixes come from the model); empty class list: the model's own.
  std::optional<FsdpConfig> fsdp;
  std::vector<std::string> fsdp_block_classes;
  bool fsdp_wrap = true;  // false (NO_WRAP): the whole model is one unit, gathered between steps
  // DDP: gradients all-reduced in buckets of this many bytes as backward produces them.
  size_t ddp_bucket_bytes = 25u << 20;
  // TrainingArguments.torch_compile: on CUDA, capture the whole step (forward, backward, clipping,
  // fused AdamW with the lr in a device tensor) in a CUDA graph the first time a shape is seen
  // twice, and replay it while the shapes stay; other shapes run eager (one notice).
  bool cuda_graphs = false;
};

struct StepResult {
  double lr = 0;         // the lr this step used
  bool skipped = false;  // fp16: inf/NaN grads, no update, schedule not advanced
  bool graphed = false;  // the step was a CUDA graph replay
};

class StepGraph;      // step_graph.hpp
class DdpReducer;     // ddp.hpp
class CudaStepGraph;  // its CUDA implementation (step_graph.cpp)

class Engine {
 public:
  Engine(std::shared_ptr<TrainableModel> model, EngineConfig cfg);
  ~Engine();

  // One optimizer step (HF's training_step for each micro-batch, then the optimizer step):
  // forward + backward of every micro-batch, unscale and check (fp16), DDP gradient mean, clip,
  // update with the scheduled lr, advance the schedule. Each micro-batch's loss (divided by
  // accumulation_steps when the model does not take num_items) is added to the device-side
  // tr_loss with HF's logging_nan_inf_filter: a non-finite loss adds tr_loss / steps_since_log
  // instead (steps_since_log = 1 + global_step - last logged step).
  StepResult train_step(const std::vector<Batch>& micro, std::optional<double> num_items,
                        int64_t accumulation_steps, int64_t steps_since_log);
  // tr_loss read (one sync) and reset to zero, as HF's _maybe_log_save_evaluate does.
  double take_loss();
  // The last step's total grad norm before clipping (one sync); nullopt when clipping is off or
  // the step was skipped.
  std::optional<double> grad_norm() const;

  // Evaluation. eval_batch runs the model without grad; its loss (mean over the batch) is summed
  // on the device, weighted by rows; logits are returned (on the device) only when want_logits.
  void eval_begin();
  at::Tensor eval_batch(const Batch& batch, bool want_logits);
  // (sum of loss x rows, rows with a loss) since eval_begin: one sync.
  std::pair<double, int64_t> eval_end();
  // Host copy of (the result of) logits as float32, counted in host_logits_bytes().
  at::Tensor to_host(const at::Tensor& t);
  int64_t host_logits_bytes() const { return host_logits_bytes_; }

  int64_t scheduler_steps() const { return scheduler_steps_; }
  double loss_scale() const { return scaler_.enabled ? scaler_.scale : 1.0; }
  double current_lr() const;
  int64_t graph_replays() const { return graph_replays_; }
  TrainableModel& model() { return *model_; }
  const EngineConfig& config() const { return cfg_; }
  Optimizer& optimizer() { return *optim_; }
  // The FSDP state when the model is sharded over the ranks, else nullptr.
  Fsdp* fsdp() const { return fsdp_.get(); }
  // FSDP: every parameter's full tensor in the model (trainable_only: the trainable ones') until
  // fsdp_release(), in the shards' dtype, to save a FULL state dict; every rank calls both.
  void fsdp_gather(bool trainable_only);
  void fsdp_release();
  DdpReducer* ddp() const { return ddp_.get(); }

  // optimizer.pt, scheduler.pt, rng_state.pth in folder (ours: torch archives). With several
  // ranks every rank calls them: rng_state_<rank>.pth is each rank's (HF's names); under FSDP
  // the optimizer state is gathered into rank 0's optimizer.pt (full, any world size loads it),
  // or with sharded = true each rank writes optimizer_0/rank-<r>-of-<W>.pt (the same world size
  // loads it). Only rank 0 writes the shared files.
  void state_save(const std::string& folder, bool sharded = false);
  void state_load(const std::string& folder, bool sharded = false);

  // tokens with a label in batch (labels[:, 1:] for models that shift them); host batches only
  int64_t count_items(const Batch& batch) const;

 private:
  friend class CudaStepGraph;
  Batch to_device(const Batch& b) const;
  Batch host_prepare(const Batch& b) const;  // what to_device would copy, still on the host
  std::vector<at::Tensor> param_tensors() const;
  void sync_params_from_rank0();
  std::string rng_file() const;
  std::string optimizer_shard_file() const;
  std::shared_ptr<Fsdp> make_fsdp(const std::shared_ptr<sky::dist::Group>& group);
  // forward + backward of one micro-batch on device tensors; returns the detached float32 loss
  // (items_scale: a device scalar dividing the summed loss, for graphs; undefined otherwise)
  at::Tensor micro_forward_backward(const Batch& dev, std::optional<double> num_items, int64_t accumulation_steps,
                                    const at::Tensor& items_divisor);
  void add_to_tr_loss(const at::Tensor& loss, int64_t steps_since_log);
  // unscale (fp16), mean over ranks, clip, update with lr_t: no host sync; returns false when
  // the fp16 check found inf/NaN (one sync, fp16 only)
  bool apply_update(bool graph_mode);
  void finish_step(StepResult& r);
  std::shared_ptr<TrainableModel> model_;
  EngineConfig cfg_;
  std::unique_ptr<Optimizer> optim_;
  int64_t scheduler_steps_ = 0;
  LossScaler scaler_;
  at::Tensor tr_loss_;    // float32 scalar on the device (HF's tr_loss)
  at::Tensor grad_norm_;  // float32 scalar on the device, or undefined
  at::Tensor eval_sum_;   // float64 scalar on the device
  int64_t eval_rows_ = 0;
  int64_t host_logits_bytes_ = 0;
  int64_t graph_replays_ = 0;
  bool grads_static_ = false;  // a graph owns the .grad tensors: zero them, never drop them
  std::unique_ptr<StepGraph> graph_;
  std::shared_ptr<Fsdp> fsdp_;
  std::unique_ptr<Fsdp::FullParams> full_params_;
  std::unique_ptr<DdpReducer> ddp_;
  int rank_ = 0;
};

// Seeds torch's CPU (and CUDA) generators, as transformers.set_seed does for torch.
void engine_set_seed(uint64_t seed);

}  // namespace sky::train
