// `skyrun --version`'s LibTorch lines: the version, and whether CUDA and NCCL actually work
// (a one-rank NCCL all_reduce is run rather than trusting build flags).
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdio>
#include <string>

#include "sky_config.h"
#include "torch/compat.hpp"

#if SKY_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

std::string nccl_check() {
#if SKY_HAVE_CUDA
  try {
    auto store = c10::make_intrusive<c10d::HashStore>();
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, 0, 1);
    std::vector<at::Tensor> t{torch::full({4}, 3.0f, torch::kCUDA)};
    pg->allreduce(t)->wait();
    float v = t[0].sum().item<float>();
#if SKY_TORCH_AT_LEAST(2, 3)
    pg->shutdown();
#endif
    if (v != 12.0f) return "NCCL: not usable (all_reduce gave " + std::to_string(v) + ")";
    return "NCCL: usable (one-rank ProcessGroupNCCL all_reduce ok)";
  } catch (const std::exception& e) {
    return std::string("NCCL: not usable (") + e.what() + ")";
  }
#else
  return "NCCL: not usable (LibTorch built without CUDA)";
#endif
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int skyrun_torch_describe(char* buf, size_t n) {
  std::string out = std::string("LibTorch ") + TORCH_VERSION + "\n";
  try {
    if (torch::cuda::is_available()) {
      int count = static_cast<int>(torch::cuda::device_count());
      out += "CUDA: usable, " + std::to_string(count) + " device(s)";
#if SKY_HAVE_CUDA
      for (int i = 0; i < count; ++i) out += std::string(i ? ", " : ": ") + at::cuda::getDeviceProperties(i)->name;
#endif
      out += "\n" + nccl_check() + "\n";
    } else {
#if SKY_HAVE_CUDA
      out += "CUDA: not usable (no CUDA device visible)\nNCCL: not usable (no CUDA device)\n";
#else
      out += "CUDA: not usable (LibTorch built without CUDA)\nNCCL: not usable (LibTorch built without CUDA)\n";
#endif
    }
  } catch (const std::exception& e) {
    out += std::string("CUDA: error while probing: ") + e.what() + "\n";
  }
  int len = snprintf(buf, n, "%s", out.c_str());
  return len < 0 ? 0 : (static_cast<size_t>(len) >= n ? static_cast<int>(n - 1) : len);
}
