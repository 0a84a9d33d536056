// StepGraph on CUDA: at::cuda::CUDAGraph around one optimizer step, as torch's whole-network
// capture does it (warm-up on a side stream, grads allocated inside the capture from the graph's
// private pool and kept across replays, autocast's weight cache off while capturing, optimizer
// state made before the capture so that no zeros are re-captured).
#include "train/step_graph.hpp"

#include <ATen/autocast_mode.h>

#include <cstdio>
#include <string>

#include "sky_config.h"
#include "torch/compat.hpp"

#if SKY_HAVE_CUDA && SKY_TORCH_AT_LEAST(2, 2)
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#define SKY_STEP_GRAPHS 1
#else
#define SKY_STEP_GRAPHS 0
#endif

namespace sky::train {

namespace {
void notice(const std::string& msg) {
  std::fprintf(stderr, "torch_compile: %s\n", msg.c_str());
  std::fflush(stderr);
}
}  // namespace

#if SKY_STEP_GRAPHS

class CudaStepGraph : public StepGraph {
 public:
  explicit CudaStepGraph(Engine& e) : e_(e), stream_(c10::cuda::getStreamFromPool(false, e.cfg_.device.index() < 0 ? 0 : e.cfg_.device.index())) {}

  std::shared_ptr<void> eager_scope() override { return std::make_shared<Scope>(stream_); }

  bool run(const std::vector<Batch>& micro, std::optional<double> num_items, int64_t accumulation_steps,
           int64_t steps_since_log, StepResult& r) override {
    if (failed_) return false;
    std::vector<Batch> host;
    host.reserve(micro.size());
    for (const Batch& b : micro) host.push_back(e_.host_prepare(b));
    const std::string key = key_of(host, num_items.has_value(), accumulation_steps);
    if (captured_) {
      if (key != key_) {
        if (!told_shapes_) notice("batch shapes changed (" + key + " after " + key_ + "); such steps run eager");
        told_shapes_ = true;
        return false;
      }
      Scope scope(stream_);
      fill_inputs(host, num_items);
      graph_.replay();
      after_replay(micro.size(), steps_since_log);
      r.graphed = true;
      return true;
    }
    if (key != last_key_) {  // first sight of this shape: eager (lazy inits, cuBLAS handles, optimizer state)
      last_key_ = key;
      return false;
    }
    Scope scope(stream_);
    try {
      capture(host, num_items, accumulation_steps);
    } catch (const std::exception& ex) {
      abandon(ex.what());
      return false;
    }
    fill_inputs(host, num_items);
    graph_.replay();
    after_replay(micro.size(), steps_since_log);
    r.graphed = true;
    return true;
  }

 private:
  // Work on the graph's stream, ordered after what the current stream holds and before what it
  // gets next.
  struct Scope {
    explicit Scope(c10::cuda::CUDAStream s) : prev(c10::cuda::getCurrentCUDAStream(s.device_index())), guard(s) {
      at::cuda::CUDAEvent ev;
      ev.record(prev);
      ev.block(s);
      side = s;
    }
    ~Scope() {
      at::cuda::CUDAEvent ev;
      ev.record(side);
      ev.block(prev);
    }
    c10::cuda::CUDAStream prev;
    c10::cuda::CUDAStreamGuard guard;
    c10::cuda::CUDAStream side = prev;
  };

  static std::string key_of(const std::vector<Batch>& host, bool items, int64_t accum) {
    std::string k = "accum " + std::to_string(accum) + (items ? " items" : "");
    for (const Batch& b : host) {
      k += " |";
      for (const auto& [name, t] : b.tensors) k += " " + name + c10::str(t.sizes()) + c10::toString(t.scalar_type());
    }
    return k;
  }

  void fill_inputs(const std::vector<Batch>& host, std::optional<double> num_items) {
    for (size_t i = 0; i < host.size(); ++i)
      for (const auto& [name, t] : host[i].tensors) inputs_[i].tensors[name].copy_(t, /*non_blocking=*/true);
    items_.fill_(num_items.value_or(1.0));
  }

  void after_replay(size_t count, int64_t steps_since_log) {
    e_.grad_norm_ = e_.cfg_.max_grad_norm > 0 ? norm_out_ : at::Tensor();  // an eager step may have replaced it
    for (size_t i = 0; i < count; ++i) e_.add_to_tr_loss(losses_[static_cast<int64_t>(i)], steps_since_log);
  }

  void capture(const std::vector<Batch>& host, std::optional<double> num_items, int64_t accumulation_steps) {
    const auto dev = e_.cfg_.device;
    inputs_.clear();
    for (const Batch& b : host) {
      inputs_.push_back(e_.to_device(b));
      inputs_.back().want_logits = false;
    }
    items_ = at::ones({}, at::TensorOptions().dtype(at::kFloat).device(dev));
    losses_ = at::zeros({static_cast<int64_t>(host.size())}, at::TensorOptions().dtype(at::kFloat).device(dev));
    norm_out_ = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(dev));
    e_.grad_norm_ = norm_out_;  // apply_update copies the norm into it
    e_.optim_->zero_grad();  // backward inside the capture allocates them from the graph's pool
    c10::cuda::device_synchronize();
    const bool cache = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);  // a cached cast made in the capture is freed after it
    try {
      graph_.capture_begin();
      capturing_ = true;
      for (size_t i = 0; i < inputs_.size(); ++i) {
        at::Tensor l = e_.micro_forward_backward(inputs_[i], num_items, accumulation_steps, items_);
        losses_[static_cast<int64_t>(i)].copy_(l);
      }
      e_.apply_update(/*graph_mode=*/true);
      graph_.capture_end();
      capturing_ = false;
    } catch (...) {
      at::autocast::set_autocast_cache_enabled(cache);
      throw;
    }
    at::autocast::set_autocast_cache_enabled(cache);
    captured_ = true;
    key_ = last_key_;
    e_.grads_static_ = true;
    notice("captured the training step in a CUDA graph (" + key_ + ")");
  }

  void abandon(const std::string& why) {
    if (capturing_) {  // end the stream's capture so that the stream and the allocator work again
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(stream_.stream(), &g);
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      capturing_ = false;
    }
    failed_ = true;
    e_.grad_norm_ = at::Tensor();
    e_.optim_->zero_grad();
    notice("capturing the step failed, training continues eager: " + why);
  }

  Engine& e_;
  c10::cuda::CUDAStream stream_;
  at::cuda::CUDAGraph graph_;
  std::vector<Batch> inputs_;
  at::Tensor items_, losses_, norm_out_;
  std::string key_, last_key_;
  bool captured_ = false, capturing_ = false, failed_ = false, told_shapes_ = false;
};

std::unique_ptr<StepGraph> StepGraph::make(Engine& e) {
  const EngineConfig& c = e.config();
  if (!c.device.is_cuda()) {
    notice("CUDA graphs need a CUDA device; training runs eager on " + c.device.str());
    return nullptr;
  }
  if (c.fp16 || c.loss_scaling) {
    notice("not supported yet: CUDA graphs with fp16's loss scaler; training runs eager (bf16 is graphed)");
    return nullptr;
  }
  if (c.world_size > 1) {
    notice("not supported yet: CUDA graphs with DDP; training runs eager");
    return nullptr;
  }
  if (!e.optimizer().fused()) {
    notice("CUDA graphs need optim='adamw_torch_fused' (the capturable fused AdamW); training runs eager");
    return nullptr;
  }
  return std::make_unique<CudaStepGraph>(e);
}

#else

std::unique_ptr<StepGraph> StepGraph::make(Engine& e) {
  notice(e.config().device.is_cuda() ? "not supported yet: CUDA graphs with LibTorch " TORCH_VERSION "; training runs eager"
                                     : "CUDA graphs need a CUDA device; training runs eager on " + e.config().device.str());
  return nullptr;
}

#endif

}  // namespace sky::train
