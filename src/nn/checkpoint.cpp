// Gradient checkpointing (torch.utils.checkpoint, which LibTorch's C++ API lacks): a block runs
// forward without keeping its activations; backward runs it again from its saved input, with the
// random generators set back to where they were (dropout draws the same masks) and autocast as it
// was, then differentiates that. The block's trainable parameters are inputs of the autograd node,
// so a block whose input needs no gradient (embeddings frozen under LoRA) still trains its
// adapters, without HF's enable_input_require_grads.
#include <ATen/autocast_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "nn/model.hpp"
#include "sky_config.h"
#include "torch/compat.hpp"

#if SKY_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

namespace sky::nn {

namespace {

struct BlockHolder : torch::CustomClassHolder {
  std::function<at::Tensor(const at::Tensor&)> block;
  at::Tensor cpu_rng, cuda_rng;  // generator states before the forward run
  int cuda_device = -1;
  bool autocast = false;
  at::ScalarType autocast_dtype = at::kBFloat16;
};

bool autocast_on() {
#if SKY_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}

at::ScalarType autocast_dtype() {
#if SKY_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(at::kCUDA);
#else
  return at::autocast::get_autocast_gpu_dtype();
#endif
}

// Autocast on CUDA set to (on, dtype) for the scope, then back to what it was.
class AutocastAs {
 public:
  AutocastAs(bool on, at::ScalarType dtype) : was_on_(autocast_on()), was_dtype_(autocast_dtype()) { set(on, dtype); }
  ~AutocastAs() { set(was_on_, was_dtype_); }

 private:
  static void set(bool on, at::ScalarType dtype) {
#if SKY_TORCH_AT_LEAST(2, 4)
    at::autocast::set_autocast_enabled(at::kCUDA, on);
    at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
    at::autocast::set_enabled(on);
    at::autocast::set_autocast_gpu_dtype(dtype);
#endif
  }
  bool was_on_;
  at::ScalarType was_dtype_;
};

// The default generators set to the states saved with the block, then back to where they are now.
class RngAs {
 public:
  explicit RngAs(const BlockHolder& b) {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    cpu_now_ = cpu.get_state();
    cpu.set_state(b.cpu_rng);
#if SKY_HAVE_CUDA
    if (b.cuda_rng.defined()) {
      cuda_device_ = b.cuda_device;
      at::Generator g = at::cuda::detail::getDefaultCUDAGenerator(cuda_device_);
      cuda_now_ = g.get_state();
      g.set_state(b.cuda_rng);
    }
#endif
  }
  ~RngAs() {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();  // a handle sharing the default generator
    cpu.set_state(cpu_now_);
#if SKY_HAVE_CUDA
    if (cuda_now_.defined()) {
      at::Generator g = at::cuda::detail::getDefaultCUDAGenerator(cuda_device_);
      g.set_state(cuda_now_);
    }
#endif
  }

 private:
  at::Tensor cpu_now_, cuda_now_;
  int cuda_device_ = -1;
};

class Checkpoint : public torch::autograd::Function<Checkpoint> {
 public:
  // h: the block's input [B, T, C]; params: its parameters that require grad (kept as saved
  // leaves: nothing is copied).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, c10::intrusive_ptr<BlockHolder> holder,
                            const at::Tensor& h, at::TensorList params) {
    holder->cpu_rng = at::detail::getDefaultCPUGenerator().get_state();
#if SKY_HAVE_CUDA
    if (h.is_cuda()) {
      holder->cuda_device = h.get_device();
      holder->cuda_rng = at::cuda::detail::getDefaultCUDAGenerator(holder->cuda_device).get_state();
    }
#endif
    holder->autocast = autocast_on();
    holder->autocast_dtype = autocast_dtype();
    ctx->saved_data["block"] = c10::IValue::make_capsule(holder);
    std::vector<at::Tensor> keep{h};
    keep.insert(keep.end(), params.begin(), params.end());
    ctx->save_for_backward(keep);
    at::NoGradGuard no_grad;
    return holder->block(h);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto holder = c10::static_intrusive_pointer_cast<BlockHolder>(ctx->saved_data["block"].toCapsule());
    torch::autograd::variable_list saved = ctx->get_saved_variables();  // [h, params...]
    const size_t n_params = saved.size() - 1;
    torch::autograd::variable_list result(2 + n_params);  // one slot per forward argument (holder first)
    const bool h_grad = ctx->needs_input_grad(0);
    at::Tensor h = saved[0].detach();
    h.set_requires_grad(h_grad);
    at::Tensor out;
    {
      RngAs rng(*holder);
      AutocastAs autocast(holder->autocast, holder->autocast_dtype);
      at::AutoGradMode grad_on(true);
      out = holder->block(h);
    }
    std::vector<at::Tensor> inputs;
    if (h_grad) inputs.push_back(h);
    for (size_t i = 0; i < n_params; ++i) inputs.push_back(saved[1 + i]);
    if (inputs.empty() || !out.requires_grad()) return result;
    torch::autograd::variable_list g = torch::autograd::grad({out}, inputs, {grads[0]}, /*retain_graph=*/false,
                                                             /*create_graph=*/false, /*allow_unused=*/true);
    size_t k = 0;
    if (h_grad) result[1] = g[k++];
    for (size_t i = 0; i < n_params; ++i) result[2 + i] = g[k++];
    return result;
  }
};

}  // namespace

std::vector<std::string> Model::block_prefixes() const {
  std::vector<std::string> out;
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i)
    out.push_back(full_name(blocks_prefix() + std::to_string(i) + ".", false));
  return out;
}

at::Tensor Model::run_block(const std::string& prefix, const at::Tensor& h,
                            const std::function<at::Tensor(const at::Tensor&)>& block) {
  if (block_hook_) {
    BlockHook hook = block_hook_;  // the hook runs the block below without itself
    block_hook_ = nullptr;
    struct Restore {
      Model* m;
      BlockHook hook;
      ~Restore() { m->block_hook_ = std::move(hook); }
    } restore{this, std::move(hook)};
    return restore.hook(full_name(prefix, false), h, [&](const at::Tensor& x) { return run_block(prefix, x, block); });
  }
  if (!gradient_checkpointing_ || !training_ || !at::GradMode::is_enabled()) return block(h);
  // the block's trainable tensors: its parameters and adapters (all listed under "<prefix>" HF names)
  std::vector<at::Tensor> params;
  const std::string hf_prefix = full_name(prefix, false);
  for (const auto& [name, t] : params_)
    if (t.requires_grad() && name.compare(0, hf_prefix.size(), hf_prefix) == 0) params.push_back(t);
  auto holder = c10::make_intrusive<BlockHolder>();
  holder->block = block;
  return Checkpoint::apply(holder, h, at::TensorList(params));
}

}  // namespace sky::nn
