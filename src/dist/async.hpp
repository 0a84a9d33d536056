// Asynchronous collectives for the Trainer's DDP and FSDP: launched on the default group's
// backend and waited later, so communication overlaps the backward pass (Gloo runs them on its
// own threads; NCCL on its stream, and waiting only makes the current stream wait). The engine
// issues the same sequence on every rank by construction, so these skip the agreement step of
// the user-facing collectives. LibTorch 1.13's Gloo lacks reduce-scatter and all-gather into one
// tensor: they are built here from all-reduce and list all-gather.
// LibTorch headers only: include this from torch_sources files.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "dist/dist.hpp"

namespace sky::dist {

// One launched collective. wait() blocks until it is done (Gloo) or orders the current CUDA stream
// after it (NCCL), then runs what completes it (a copy out of a staging buffer). Waiting twice is
// a no-op; dropping an unwaited one waits for it.
class Pending {
 public:
  Pending() = default;
  Pending(Pending&&) = default;
  Pending& operator=(Pending&&) = default;
  ~Pending();
  bool active() const { return static_cast<bool>(work_) || static_cast<bool>(finish_); }
  void wait();

 private:
  friend class AsyncOps;
  c10::intrusive_ptr<c10d::Work> work_;
  std::function<void()> finish_;
  std::string what_;
  const Group* group_ = nullptr;
};

// The collectives the engine needs, on one group. Tensors must be contiguous and on group.device().
class AsyncOps {
 public:
  explicit AsyncOps(std::shared_ptr<Group> group);
  const Group& group() const { return *group_; }
  int rank() const { return group_->rank(); }
  int world_size() const { return group_->world_size(); }

  // flat [n] becomes the sum over ranks, in place.
  Pending all_reduce_sum(at::Tensor flat, const char* what);
  // in [n] from every rank into out [W * n] (rank r's at r * n).
  Pending all_gather(const at::Tensor& in, at::Tensor out, const char* what);
  // in [W * n]: out [n] becomes the sum over ranks of in's rank-th slice. Gloo: an all-reduce of
  // in (clobbered), then the slice is copied out at wait.
  Pending reduce_scatter_sum(at::Tensor in, at::Tensor out, const char* what);
  // flat [n] takes rank src's value, in place.
  Pending broadcast(at::Tensor flat, int src, const char* what);

 private:
  Pending launch(const char* what, const std::function<c10::intrusive_ptr<c10d::Work>()>& fn);
  std::shared_ptr<Group> group_;
  bool nccl_;
};

}  // namespace sky::dist
