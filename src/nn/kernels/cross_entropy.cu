// sky_cross_entropy_rows (kernels.h): loss and gradient of the cross entropy, row by row, in place
// over the logits. Shapes: R rows, V vocabulary. One block of 1024 threads per row: pass 1 an online
// max / sum of exponentials (float32), a block reduction, pass 2 writes softmax - one_hot.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

#include "kernels.h"

namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half(x); }

// (m, s): the running max and the sum of exp(x - m); combining two keeps both exact
__device__ __forceinline__ void combine(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) { m = m2; s = s2; return; }
  if (m2 > m) { s = s * __expf(m - m2) + s2; m = m2; }
  else s += s2 * __expf(m2 - m);
}

template <class T>
__global__ void __launch_bounds__(kThreads) cross_entropy_rows(T* logits, int64_t V, const int64_t* target,
                                                               int64_t ignore_index, float* loss) {
  __shared__ float sm[32], ss[32];
  const int64_t row = blockIdx.x;
  T* x = logits + row * V;  // [V]
  const int64_t t = target[row];
  const bool valid = t != ignore_index && t >= 0 && t < V;
  float m = -INFINITY, s = 0.f;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) {
    const float v = to_float(x[i]);
    if (v > m) { s = s * __expf(m - v) + 1.f; m = v; }
    else s += __expf(v - m);
  }
  for (int off = 16; off > 0; off >>= 1) {
    float m2 = __shfl_xor_sync(0xffffffffu, m, off), s2 = __shfl_xor_sync(0xffffffffu, s, off);
    combine(m, s, m2, s2);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) { sm[warp] = m; ss[warp] = s; }
  __syncthreads();
  if (warp == 0) {
    m = lane < kThreads / 32 ? sm[lane] : -INFINITY;
    s = lane < kThreads / 32 ? ss[lane] : 0.f;
    for (int off = 16; off > 0; off >>= 1) {
      float m2 = __shfl_xor_sync(0xffffffffu, m, off), s2 = __shfl_xor_sync(0xffffffffu, s, off);
      combine(m, s, m2, s2);
    }
    if (lane == 0) { sm[0] = m; ss[0] = s; }
  }
  __syncthreads();
  const float M = sm[0], S = ss[0];
  const float xt = valid ? to_float(x[t]) : 0.f;  // read before pass 2 overwrites it
  __syncthreads();
  if (threadIdx.x == 0) loss[row] = valid ? (M + logf(S)) - xt : 0.f;
  const float inv = 1.f / S;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) {
    float p = valid ? __expf(to_float(x[i]) - M) * inv : 0.f;
    if (valid && i == t) p -= 1.f;
    x[i] = from_float<T>(p);
  }
}

template <class T>
int launch(void* logits, int64_t rows, int64_t V, const int64_t* target, int64_t ignore_index, float* loss,
           cudaStream_t stream) {
  if (rows <= 0) return 0;
  cross_entropy_rows<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(static_cast<T*>(logits), V, target,
                                                                              ignore_index, loss);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

extern "C" int sky_cross_entropy_rows(void* logits, int dtype, int64_t rows, int64_t V, const int64_t* target,
                                      int64_t ignore_index, float* loss, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case SKY_KDTYPE_F32: return launch<float>(logits, rows, V, target, ignore_index, loss, s);
    case SKY_KDTYPE_BF16: return launch<__nv_bfloat16>(logits, rows, V, target, ignore_index, loss, s);
    case SKY_KDTYPE_F16: return launch<__half>(logits, rows, V, target, ignore_index, loss, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}
