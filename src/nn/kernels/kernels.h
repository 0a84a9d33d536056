/* Our own CUDA kernels (src/nn/kernels/*.cu, built by nvcc when meson finds it with CUDA LibTorch;
 * SKY_HAVE_KERNELS in sky_config.h says so). Plain C entry points over raw device pointers and a
 * stream, no LibTorch in the .cu files: the callers (src/nn) check shapes and dtypes. Each returns
 * a cudaError_t value (0: launched). */
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dtype codes of the kernels' element types */
enum { SKY_KDTYPE_F32 = 0, SKY_KDTYPE_BF16 = 1, SKY_KDTYPE_F16 = 2 };

/* Cross entropy of each row of logits [rows, V] (row-major, contiguous, dtype) against target[r]
 * (int64; ignore_index rows give loss 0 and gradient 0), in float32 as HF computes it (log-sum-exp
 * minus the target's logit). The logits are overwritten in place with d loss_r / d logits_r,
 * softmax - one_hot(target) (0 for ignored rows), in their own dtype; loss[r] gets the row's loss.
 * One block per row, two reads and one write of the row. */
int sky_cross_entropy_rows(void* logits, int dtype, int64_t rows, int64_t V, const int64_t* target,
                           int64_t ignore_index, float* loss, void* stream);

#ifdef __cplusplus
}
#endif
