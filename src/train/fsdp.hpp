// FSDP for the Trainer's engine, as PyTorch's fully_shard (FSDP2) lays it out: every parameter is
// split along dim 0 over the ranks (rank r keeps rows [r*C, (r+1)*C), C = ceil(rows / W), the last
// ranks' parts shorter or empty), and the optimizer steps on those shards. Each wrapped block (a
// "unit": GPT2Block, LlamaDecoderLayer, ...) is all-gathered before its forward and again before
// its backward (the next unit's gather prefetched), its gradients are reduce-scattered as soon as
// they are complete, and its gathered parameters are freed after use. Parameters outside the
// blocks (embeddings, final norm, head) form the root unit, gathered between steps.
//
// The model keeps its own parameter tensors: while a unit is sharded they have shape [0] and no
// memory, while gathered their full shape (in param_dtype under mixed precision); the shards are
// separate leaves. Writes into a gathered tensor go through an alias, so autograd's version
// checks see no change. Nothing here knows Lua.
#pragma once

#include <torch/torch.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/async.hpp"
#include "train/optim.hpp"

namespace torch::autograd {
struct Node;
}

namespace sky::train {

enum class BackwardPrefetch { BACKWARD_PREFETCH_NONE, BACKWARD_PREFETCH_PRE, BACKWARD_PREFETCH_POST };

struct FsdpConfig {
  // FULL_SHARD: blocks freed after forward and gathered again for backward; SHARD_GRAD_OP: kept
  // from forward to the end of their backward.
  bool reshard_after_forward = true;
  BackwardPrefetch backward_prefetch = BackwardPrefetch::BACKWARD_PREFETCH_PRE;
  bool forward_prefetch = true;  // the next block's gather starts before this block's forward
  // Gathered parameters' dtype (MixedPrecisionPolicy.param_dtype); nullopt: the shards' own.
  std::optional<at::ScalarType> param_dtype;
  at::ScalarType reduce_dtype = at::kFloat;  // gradients are reduce-scattered in this dtype
  // Parameters start from rank 0's values (broadcast before sharding); needed when the other
  // ranks did not read the weights (cpu_ram_efficient_loading).
  bool sync_module_states = true;
  // HF prefixes of the wrapped blocks ("transformer.h.3."), in forward order.
  std::vector<std::string> blocks;
};

using BlockRun = std::function<at::Tensor(const at::Tensor&)>;

// What owns a model's block hook (FSDP's sharding state): kept alive by the model, so a second
// engine on the same model finds it instead of sharding an already sharded model.
struct BlockHookOwner {
  virtual ~BlockHookOwner() = default;
};

class Fsdp : public BlockHookOwner {
 public:
  // params: every floating parameter of the model (trainable or frozen), its own tensors, on
  // `device`. They are sharded in place here.
  Fsdp(std::vector<NamedParam> params, FsdpConfig cfg, std::shared_ptr<dist::Group> group, at::Device device);
  ~Fsdp() override;

  // The trainable shards, named as the parameters, for the optimizer.
  std::vector<NamedParam> trainable_shards() const;
  // The model's parameters with their full shapes (counts, info).
  struct ParamInfo {
    std::string name;
    std::vector<int64_t> shape;
    bool trainable;
  };
  std::vector<ParamInfo> params_info() const;
  int rank() const { return ops_.rank(); }
  int world_size() const { return ops_.world_size(); }
  const FsdpConfig& config() const { return cfg_; }

  // The model's block hook: gathers the block's unit around `run`, hooks its backward.
  at::Tensor run_block(const std::string& prefix, const at::Tensor& h, const BlockRun& run);

  // After each micro-batch's backward: the reduce-scatters of every unit done (gradients of
  // units that got none count as zeros), blocks sharded again; shard grads hold the mean over
  // ranks, accumulated over micro-batches.
  void finish_backward();
  // torch.nn.utils.clip_grad_norm_ over the whole model: the norm of every rank's shard grads.
  at::Tensor clip_grad_norm(double max_norm);
  // Whether any rank's shard grads hold inf/NaN (the fp16 scaler's check; one all-reduce).
  bool any_rank(bool mine);
  // After the optimizer stepped on the shards: the root unit gathered again.
  void after_step();

  // Every unit gathered (full shapes, in the shards' dtype) for the scope: saving FULL state
  // dicts, adapters; every rank must enter it. trainable_only: just the trainable parameters'
  // units (a LoRA adapter's save).
  class FullParams {
   public:
    FullParams(Fsdp& f, bool trainable_only);
    ~FullParams();

   private:
    Fsdp& f_;
  };

  // Checkpoints. The shard of parameter name i (for the optimizer's state: same layout).
  // full_of: the full tensor of a shard-shaped tensor of parameter `name` (every rank calls it;
  // collective); shard_of: this rank's rows of a full tensor.
  at::Tensor full_of(const std::string& name, const at::Tensor& shard);
  at::Tensor shard_of(const std::string& name, const at::Tensor& full) const;
  // The shard tensors by parameter name (this rank's, for a SHARDED checkpoint), and loading them
  // back (shapes checked against this world size's layout).
  std::vector<std::pair<std::string, at::Tensor>> shard_tensors() const;
  void load_shards(const std::map<std::string, at::Tensor>& shards, const std::string& source);
  // The rows of dim 0 each rank holds of each parameter (the index of a SHARDED checkpoint).
  int64_t chunk_rows(const std::string& name) const;

 private:
  struct Param;
  struct Unit;
  struct Impl;
  void shard_all();
  void unshard(Unit& u);           // gathered when it returns
  void start_gather(Unit& u);      // launches the all-gather (prefetch)
  void finish_gather(Unit& u);     // waits, copies out into the full tensors
  void reshard(Unit& u);
  void pre_backward(size_t unit);
  void on_grad_ready(size_t unit);
  void start_reduce(Unit& u);
  void drain_reduces(size_t keep);
  Param& param(const std::string& name);
  const Param& param(const std::string& name) const;
  FsdpConfig cfg_;
  dist::AsyncOps ops_;
  at::Device device_;
  std::vector<Param> params_;
  std::vector<Unit> units_;  // blocks in forward order, then the root
  std::map<std::string, size_t> unit_by_prefix_;
  std::map<std::string, size_t> param_by_name_;
  std::deque<size_t> reducing_;  // units whose reduce-scatter is in flight, oldest first
  std::shared_ptr<bool> alive_;  // hooks outlive us in autograd's nodes; they check this
  int summoned_ = 0;
};

// SHARDED_STATE_DICT files: dir/pytorch_model_fsdp_0/rank-<r>-of-<W>.safetensors holds rank r's
// rows of every parameter (its shard, under the parameter's name); rank 0 also writes
// dir/pytorch_model_fsdp_0/index.json ({"world_size", "parameters": {name: {"shape", "dtype",
// "rows_per_rank", "trainable"}}}). Loading checks the world size and every shard's shape.
void fsdp_save_shards(const Fsdp& f, const std::string& dir);
void fsdp_load_shards(Fsdp& f, const std::string& dir);

}  // namespace sky::train
