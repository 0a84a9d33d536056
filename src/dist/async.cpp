// Asynchronous collectives for DDP and FSDP (async.hpp): launch, remember how to finish, wait later.
#include "dist/async.hpp"

#include <stdexcept>

namespace sky::dist {

namespace {

std::string message_of(const std::exception& e) {
  if (auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

[[noreturn]] void fail(const Group& g, const std::string& what, const std::exception& e) {
  throw std::runtime_error("dist: " + what + " failed on rank " + std::to_string(g.rank()) + " of " +
                           std::to_string(g.world_size()) + " (" + g.backend_name() + ", store " + g.master() +
                           "): " + message_of(e));
}

}  // namespace

Pending::~Pending() {
  if (!active()) return;
  try {
    wait();
  } catch (const std::exception&) {
    // the error was the caller's to see through wait(); a destructor cannot raise it
  }
}

void Pending::wait() {
  if (work_) {
    auto work = std::move(work_);
    try {
      work->wait();
    } catch (const std::exception& e) {
      finish_ = nullptr;
      fail(*group_, what_, e);
    }
  }
  if (finish_) {
    auto finish = std::move(finish_);
    finish_ = nullptr;
    finish();
  }
}

AsyncOps::AsyncOps(std::shared_ptr<Group> group) : group_(std::move(group)), nccl_(group_->backend_name() == "nccl") {}

Pending AsyncOps::launch(const char* what, const std::function<c10::intrusive_ptr<c10d::Work>()>& fn) {
  Pending p;
  p.what_ = what;
  p.group_ = group_.get();
  try {
    p.work_ = fn();
  } catch (const std::exception& e) {
    fail(*group_, what, e);
  }
  return p;
}

Pending AsyncOps::all_reduce_sum(at::Tensor flat, const char* what) {
  return launch(what, [&] {
    std::vector<at::Tensor> ts{flat};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    return group_->backend()->allreduce(ts, o);
  });
}

Pending AsyncOps::all_gather(const at::Tensor& in, at::Tensor out, const char* what) {
  const int W = world_size();
  const int64_t n = in.numel();  // out [W * n]
  if (out.numel() != n * W) throw std::logic_error("all_gather: output is not world_size x input");
  if (nccl_) {
    return launch(what, [&] { return group_->backend()->_allgather_base(out, const_cast<at::Tensor&>(in)); });
  }
  // Gloo: a list all-gather into views of out (it copies each rank's part into its view)
  return launch(what, [&] {
    std::vector<std::vector<at::Tensor>> outs(1);
    for (int r = 0; r < W; ++r) outs[0].push_back(out.narrow(0, r * n, n));
    std::vector<at::Tensor> ins{in};
    return group_->backend()->allgather(outs, ins);
  });
}

Pending AsyncOps::reduce_scatter_sum(at::Tensor in, at::Tensor out, const char* what) {
  const int W = world_size();
  const int64_t n = out.numel();  // in [W * n]
  if (in.numel() != n * W) throw std::logic_error("reduce_scatter: input is not world_size x output");
  if (nccl_) {
    return launch(what, [&] {
      c10d::ReduceScatterOptions o;
      o.reduceOp = c10d::ReduceOp::SUM;
      return group_->backend()->_reduce_scatter_base(out, in, o);
    });
  }
  Pending p = all_reduce_sum(in, what);
  const int64_t off = static_cast<int64_t>(rank()) * n;
  p.finish_ = [in, out, off, n]() mutable {
    at::NoGradGuard no_grad;
    out.copy_(in.narrow(0, off, n));
  };
  return p;
}

Pending AsyncOps::broadcast(at::Tensor flat, int src, const char* what) {
  return launch(what, [&] {
    std::vector<at::Tensor> ts{flat};
    c10d::BroadcastOptions o;
    o.rootRank = src;
    return group_->backend()->broadcast(ts, o);
  });
}

}  // namespace sky::dist
