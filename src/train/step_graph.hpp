// CUDA graphs of the whole training step (TrainingArguments{torch_compile = true}): forward,
// backward, clipping and fused AdamW of one optimizer step captured once for a batch shape and
// replayed while the shapes stay. Static inputs are refilled from the host batches before each
// replay (non-blocking from pinned memory); num_items_in_batch and the lr live in device tensors.
// A step of another shape runs eager on the same stream (one notice); the graph stays for the
// shape it was made for. Only the engine uses this (engine.cpp).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "train/engine.hpp"

namespace sky::train {

class StepGraph {
 public:
  // nullptr, after a one-line notice, where graphs cannot run: no CUDA, fp16's loss scaler (its
  // skip decision is a host read), DDP (collectives stay eager), an optimizer other than fused AdamW.
  static std::unique_ptr<StepGraph> make(Engine& engine);
  virtual ~StepGraph() = default;
  // true when the step ran as a replay (captured first if its shape was seen just before);
  // false: the caller runs it eager. Sets r.graphed.
  virtual bool run(const std::vector<Batch>& micro, std::optional<double> num_items, int64_t accumulation_steps,
                   int64_t steps_since_log, StepResult& r) = 0;
  // While held, the engine's eager work runs on the graph's stream (ordered after, and before,
  // the work of the current stream).
  virtual std::shared_ptr<void> eager_scope() = 0;
};

}  // namespace sky::train
