// DDP's gradient reducer, as torch.nn.parallel.DistributedDataParallel's: trainable parameters in
// buckets of about bucket_bytes (reverse registration order, the order backward produces them; a
// small first bucket), and each bucket's all-reduce launched as soon as backward has accumulated
// every gradient in it (a post hook on the parameters' AccumulateGrad nodes), in bucket order so
// every rank issues the same sequence; it overlaps the rest of backward. Gradient accumulation:
// only the last micro-batch's backward reduces (no_sync before it). A parameter that got no
// gradient counts as zeros (find_unused_parameters' effect), its bucket launched after backward.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "dist/async.hpp"
#include "train/optim.hpp"

namespace torch::autograd {
struct Node;
}

namespace sky::train {

class DdpReducer {
 public:
  DdpReducer(std::vector<NamedParam> params, std::shared_ptr<dist::Group> group, size_t bucket_bytes,
             size_t first_bucket_bytes = 1u << 20);
  ~DdpReducer();

  // Before a micro-batch's backward: sync = it is the last of the step (its hooks reduce).
  void prepare(bool sync);
  // After the last micro-batch's backward: the buckets not launched yet go, all are waited, and
  // every gradient becomes the mean over ranks.
  void finish();
  size_t bucket_count() const { return buckets_.size(); }
  // Buckets launched from inside backward in the last step (the overlap actually achieved).
  size_t launched_in_backward() const { return launched_in_backward_; }

 private:
  struct Bucket {
    std::vector<size_t> params;
    size_t left = 0;  // gradients not ready yet in this backward
    at::Tensor flat;  // [sum of numel]
    dist::Pending work;
  };
  void on_ready(size_t param);
  void launch(size_t b);
  std::vector<NamedParam> params_;
  std::vector<size_t> bucket_of_;
  std::vector<Bucket> buckets_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accs_;
  std::vector<uintptr_t> hook_keys_;
  dist::AsyncOps ops_;
  size_t next_ = 0;  // the next bucket to launch
  bool sync_ = false;
  bool in_finish_ = false;
  size_t launched_in_backward_ = 0;
  std::shared_ptr<bool> alive_;
};

}  // namespace sky::train
