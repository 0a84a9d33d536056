// A post hook for a parameter's AccumulateGrad node: runs fn once backward has accumulated the
// parameter's gradient (DDP's bucket readiness, FSDP's unit readiness). alive guards against a
// hook that outlives its owner inside autograd's graph.
#pragma once

#include <torch/csrc/autograd/function_hook.h>

#include <functional>
#include <memory>

namespace sky::train {

struct GradReady : torch::autograd::FunctionPostHook {
  GradReady(std::shared_ptr<bool> alive, std::function<void()> fn) : alive_(std::move(alive)), fn_(std::move(fn)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    if (*alive_) fn_();
    return outputs;
  }
  std::shared_ptr<bool> alive_;
  std::function<void()> fn_;
};

}  // namespace sky::train
