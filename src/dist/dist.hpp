// Distributed process groups over LibTorch's c10d: a TCPStore rendezvous (rank 0 hosts it) and a
// Gloo (CPU) or NCCL (CUDA) backend, one default group per process. C++ users (the Trainer's
// gradient sync) reach the group through default_group(); Lua reaches it through skyrun.dist.
// LibTorch headers only: include this from torch_sources files.
#pragma once

#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sky_config.h"
#include "torch/compat.hpp"

#if SKY_TORCH_AT_LEAST(2, 0)
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif

namespace sky::dist {

// The c10d class that Gloo and NCCL groups derive from: ProcessGroup in 1.13, Backend in 2.x.
#if SKY_TORCH_AT_LEAST(2, 0)
using Backend = c10d::Backend;
#else
using Backend = c10d::ProcessGroup;
#endif

// Where a group comes from. Unset fields (-1, "") are read from the environment as torchrun
// sets it: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.
struct InitOptions {
  std::string backend;      // "gloo" | "nccl"; "" = "nccl" when CUDA is usable, else "gloo"
  int rank = -1;
  int world_size = -1;
  int local_rank = -1;      // picks the CUDA device for NCCL; defaults to LOCAL_RANK, else 0
  std::string master_addr;  // the host of rank 0's store
  int master_port = -1;
  std::chrono::milliseconds timeout{300000};  // rendezvous and each collective
  // Polled while waiting for other ranks; true stops the wait with an "interrupted" error
  // (the Lua binding passes Ctrl-C through it).
  std::function<bool()> cancelled;
};

enum class ReduceOp { Sum, Max, Min, Avg, Product };

// "sum" | "max" | "min" | "avg" | "product"; throws sky-style errors naming the bad value.
ReduceOp reduce_op_from_name(const std::string& name);

class Group {
 public:
  Group(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<Backend> backend, std::string backend_name,
        int rank, int world_size, at::Device device, std::string master, std::chrono::milliseconds timeout);
  ~Group();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  const std::string& backend_name() const { return backend_name_; }
  // Where tensors must live for collectives: CPU for Gloo, cuda:<local_rank> for NCCL.
  at::Device device() const { return device_; }
  // "host:port" of the rendezvous store (for messages).
  const std::string& master() const { return master_; }
  const c10::intrusive_ptr<Backend>& backend() const { return backend_; }

  // In place on `t` (any device: copied to device() and back when needed). Avg divides the sum
  // by world_size (Gloo has no native average).
  void all_reduce(at::Tensor& t, ReduceOp op);
  void broadcast(at::Tensor& t, int src);
  void barrier();

  // DDP-style gradient sync: every tensor becomes the mean over ranks of its value. Tensors are
  // flattened into buckets of at most bucket_bytes per dtype and device, one all_reduce per
  // bucket, then copied back. Undefined tensors are skipped (a parameter without a gradient
  // must be undefined on every rank alike).
  void all_reduce_mean(std::vector<at::Tensor>& tensors, size_t bucket_bytes = 25u << 20);

  // DDP-style start: every tensor (parameters, buffers) takes rank src's value, bucketed alike.
  // Writes under NoGradGuard, so leaf parameters that require grad can be passed.
  void broadcast_tensors(std::vector<at::Tensor>& tensors, int src = 0, size_t bucket_bytes = 25u << 20);

 private:
  void run(const char* what, const std::function<void()>& fn);

  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<Backend> backend_;
  std::string backend_name_;
  int rank_;
  int world_size_;
  at::Device device_;
  std::string master_;
  std::chrono::milliseconds timeout_;
};

// The Trainer's DDP hooks. Both are no-ops without a default group of more than one rank.
// sync_parameters: at wrap time, every parameter (and buffer) takes rank src's value.
void sync_parameters(const std::vector<at::Tensor>& parameters, int src = 0);
// sync_gradients: after backward (and gradient accumulation), before clipping and the optimizer
// step: every parameter's gradient becomes the mean over ranks. A parameter that requires grad
// but got none this step counts as zeros (as DDP's find_unused_parameters does), so ranks agree
// on the bucket layout.
void sync_gradients(const std::vector<at::Tensor>& parameters);

// Fills the unset fields of `opts` from the environment; throws naming the missing variable.
InitOptions init_options_resolve(InitOptions opts);

// Rendezvous and group creation; the result becomes the process's default group. Throws a
// sky::Error-style std::runtime_error naming the store address and the ranks that did not join.
// Throws if a default group exists already.
std::shared_ptr<Group> init_process_group(const InitOptions& opts);

// The default group, or nullptr when none was created (or it was destroyed).
std::shared_ptr<Group> default_group();

// Drops the default group (no-op when none). Holders of the shared_ptr keep theirs alive.
void destroy_process_group();

}  // namespace sky::dist
