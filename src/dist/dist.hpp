// Distributed process groups over LibTorch's c10d: an authenticated rendezvous store (rank 0
// hosts it, store.hpp) and a Gloo (CPU) or NCCL (CUDA) backend, one default group per process. C++ users (the Trainer's
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
  // The pool's secret: every rank proves it to rank 0's rendezvous store (store.hpp), which
  // listens on MASTER_ADDR only. "" = SKYRUN_DIST_SECRET (the torch plugin sets it per pool).
  std::string secret;
  // Polled while waiting for other ranks; true stops the wait with an "interrupted" error
  // (the Lua binding passes Ctrl-C through it).
  std::function<bool()> cancelled;
};

enum class ReduceOp { Sum, Max, Min, Avg, Product };

// "sum" | "max" | "min" | "avg" | "product"; throws sky-style errors naming the bad value.
ReduceOp reduce_op_from_name(const std::string& name);
const char* reduce_op_name(ReduceOp op);

// What one rank is about to do in a collective. Every collective starts with the ranks
// exchanging these (one small all-gather of the same size on every rank), so ranks in different
// collectives, with different ops or shapes, all get the same clear error instead of a crash in
// the backend, a hang or a silently wrong answer.
struct CollectiveCall {
  enum Kind : int64_t { kBarrier = 1, kAllReduce, kBroadcast, kAllReduceMean, kBroadcastTensors };
  // How the data looks to the caller: a tensor, a Lua number, an array of numbers, a Lua value of
  // any kind (broadcast: only the source has it), a list of arrays, a list of tensors.
  enum Form : int64_t { kNone = 0, kTensor, kNumber, kArray, kValue, kArrays, kTensors };
  int64_t kind = kBarrier;
  int64_t op = -1;     // ReduceOp, all_reduce only
  int64_t src = -1;    // broadcasts only
  int64_t form = kNone;
  int64_t dtype = -1;  // c10::ScalarType
  int64_t numel = -1;  // elements (all of a list)
  int64_t count = -1;  // tensors or arrays in a list
  std::vector<int64_t> shape;  // a tensor's sizes
};

// One line naming a call: "all_reduce(sum) of a Float tensor [3, 4]".
std::string collective_describe(const CollectiveCall& c);

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
  // by world_size (Gloo has no native average). form says what the caller passed (Lua numbers
  // travel as a Double tensor) for the agreement and its messages.
  void all_reduce(at::Tensor& t, ReduceOp op, CollectiveCall::Form form = CollectiveCall::kTensor);
  void broadcast(at::Tensor& t, int src);
  void barrier();

  // The agreement every collective above starts with (a no-op for one rank). Throws, on every
  // rank alike, "dist.<fname>: the ranks are not in the same collective: rank 0: ...; rank 1: ...".
  // Callers that move one value in several steps (a Lua value: its kind, then its bytes) agree
  // once and then use the unchecked call.
  void agree(const CollectiveCall& call, const char* fname);
  void broadcast_unchecked(at::Tensor& t, int src);

  // DDP-style gradient sync: every tensor becomes the mean over ranks of its value. Tensors are
  // flattened into buckets of at most bucket_bytes per dtype and device, one all_reduce per
  // bucket, then copied back. Undefined tensors are skipped (a parameter without a gradient
  // must be undefined on every rank alike).
  void all_reduce_mean(std::vector<at::Tensor>& tensors, size_t bucket_bytes = 25u << 20,
                       CollectiveCall::Form form = CollectiveCall::kTensors);

  // DDP-style start: every tensor (parameters, buffers) takes rank src's value, bucketed alike.
  // Writes under NoGradGuard, so leaf parameters that require grad can be passed.
  void broadcast_tensors(std::vector<at::Tensor>& tensors, int src = 0, size_t bucket_bytes = 25u << 20);

 private:
  void run(const char* what, const std::function<void()>& fn);
  void all_reduce_unchecked(at::Tensor& t, ReduceOp op);
  int64_t calls_ = 0;  // collectives agreed so far (each rank counts its own)

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
