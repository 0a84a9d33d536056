// DDP's gradient reducer (ddp.hpp).
#include "train/ddp.hpp"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include "train/grad_ready.hpp"

namespace sky::train {

namespace {

size_t bytes_of(const at::Tensor& t) { return static_cast<size_t>(t.numel()) * t.element_size(); }

}  // namespace

DdpReducer::DdpReducer(std::vector<NamedParam> params, std::shared_ptr<dist::Group> group, size_t bucket_bytes,
                       size_t first_bucket_bytes)
    : params_(std::move(params)), ops_(std::move(group)), alive_(std::make_shared<bool>(true)) {
  bucket_of_.resize(params_.size());
  size_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {  // backward makes the last parameters' gradients first
    const at::Tensor& p = params_[k].param;
    const size_t cap = buckets_.size() <= 1 ? first_bucket_bytes : bucket_bytes;
    bool fresh = buckets_.empty() || bytes + bytes_of(p) > cap;
    if (!fresh) {
      const at::Tensor& first = params_[buckets_.back().params.front()].param;
      fresh = first.scalar_type() != p.scalar_type() || first.device() != p.device();
    }
    if (fresh) {
      buckets_.push_back(Bucket{});
      bytes = 0;
    }
    buckets_.back().params.push_back(k);
    bucket_of_[k] = buckets_.size() - 1;
    bytes += bytes_of(p);
  }
  for (size_t k = 0; k < params_.size(); ++k) {
    accs_.push_back(torch::autograd::impl::grad_accumulator(params_[k].param));
    hook_keys_.push_back(accs_.back()->add_post_hook(std::make_unique<GradReady>(alive_, [this, k] { on_ready(k); })));
  }
}

DdpReducer::~DdpReducer() {
  *alive_ = false;
  for (size_t k = 0; k < accs_.size(); ++k) accs_[k]->del_post_hook(hook_keys_[k]);
}

void DdpReducer::prepare(bool sync) {
  sync_ = sync;
  next_ = 0;
  launched_in_backward_ = 0;
  for (Bucket& b : buckets_) b.left = b.params.size();
}

void DdpReducer::on_ready(size_t k) {
  if (!sync_) return;
  Bucket& b = buckets_[bucket_of_[k]];
  if (b.left > 0) --b.left;
  while (next_ < buckets_.size() && buckets_[next_].left == 0) {
    launch(next_++);
    if (!in_finish_) ++launched_in_backward_;
  }
}

void DdpReducer::launch(size_t bi) {
  at::NoGradGuard no_grad;
  Bucket& b = buckets_[bi];
  std::vector<at::Tensor> parts;
  for (size_t k : b.params) {
    const at::Tensor& p = params_[k].param;
    at::Tensor g = p.grad();
    parts.push_back(g.defined() ? g.reshape({-1}) : at::zeros({p.numel()}, p.options()));
  }
  b.flat = at::cat(parts).to(ops_.group().device());  // [sum of numel]
  b.work = ops_.all_reduce_sum(b.flat, "DDP gradient all-reduce");
}

void DdpReducer::finish() {
  in_finish_ = true;
  while (next_ < buckets_.size()) launch(next_++);
  in_finish_ = false;
  sync_ = false;
  at::NoGradGuard no_grad;
  const double inv_w = 1.0 / static_cast<double>(ops_.world_size());
  for (Bucket& b : buckets_) {
    b.work.wait();
    int64_t off = 0;
    for (size_t k : b.params) {
      at::Tensor& p = params_[k].param;
      const int64_t n = p.numel();
      at::Tensor mean = b.flat.narrow(0, off, n).view(p.sizes()).mul_(inv_w);
      if (p.grad().defined()) p.mutable_grad().copy_(mean);
      else p.mutable_grad() = mean.to(p.device()).clone();
      off += n;
    }
    b.flat = at::Tensor();
  }
}

}  // namespace sky::train
