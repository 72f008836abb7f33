// CUDA kernels for the fused SAE gate epilogue + LayerNorm + nearest-code search.
// Plain CUDA C++ on raw device pointers (no ATen / c10 includes), so this file compiles with nvcc
// alone; the torch binding calls the launchers below when the extension is built with CUDA.
//
//   gate_ln_kernel : one block per row; y = LayerNorm(deep + sigmoid(gate_logits) * adapter)
//   vq_argmin_kernel : one warp per row; codes visited in order, running (distance, index) minimum,
//                      distance = ||c||^2 - 2 x.c in fp32 (the public formula minus the row constant)
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "fused_gate_vq_cuda.h"

namespace uniaudio {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // warps per block in vq_argmin_kernel
constexpr int kLNThreads = 256;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
  return __shfl_sync(0xffffffffu, v, 0);
}

__device__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int n_warps = (blockDim.x + kWarp - 1) / kWarp;
  float total = threadIdx.x < n_warps ? scratch[threadIdx.x] : 0.0f;
  if (warp == 0) total = warp_sum(total);
  if (threadIdx.x == 0) scratch[0] = total;
  __syncthreads();
  total = scratch[0];
  __syncthreads();
  return total;
}

__global__ void gate_ln_kernel(GateLNParams p, float* __restrict__ y) {
  __shared__ float scratch[kWarp];
  const int64_t r = blockIdx.x;
  const float* deep = p.deep + r * p.d;
  const float* a = p.adapter + r * p.d;
  const float* gl = p.gate_logits ? p.gate_logits + r * p.d : nullptr;
  float* out = y + r * p.d;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < p.d; i += blockDim.x) {
    const float g = gl ? 1.0f / (1.0f + __expf(-gl[i])) : 1.0f;
    const float v = deep[i] + g * a[i];
    out[i] = v;
    sum += v;
  }
  const float mean = block_sum(sum, scratch) / p.d;
  float var = 0.0f;
  for (int64_t i = threadIdx.x; i < p.d; i += blockDim.x) {
    const float t = out[i] - mean;
    var += t * t;
  }
  const float inv = rsqrtf(block_sum(var, scratch) / p.d + p.eps);
  for (int64_t i = threadIdx.x; i < p.d; i += blockDim.x) out[i] = (out[i] - mean) * inv * p.ln_w[i] + p.ln_b[i];
}

__global__ void vq_argmin_kernel(const float* __restrict__ x, int64_t n, CodebookView cb, int64_t* __restrict__ tokens) {
  const int lane = threadIdx.x % kWarp;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (r >= n) return;
  const float* xr = x + r * cb.d;
  float best = FLT_MAX;
  int64_t best_k = 0;
  for (int64_t k = 0; k < cb.k; ++k) {
    const float* c = cb.codes + k * cb.d;
    float dot = 0.0f;
    for (int64_t i = lane; i < cb.d; i += kWarp) dot += xr[i] * c[i];
    dot = warp_sum(dot);
    const float dist = cb.sq_norms[k] - 2.0f * dot;
    if (dist < best) {  // strict: the lowest index wins ties
      best = dist;
      best_k = k;
    }
  }
  if (lane == 0) tokens[r] = best_k;
}

}  // namespace

// All pointers are device pointers; `y` is (n, d) scratch/output. Returns the launch status.
cudaError_t gate_ln_vq_cuda(const GateLNParams& p, const CodebookView& cb, int64_t* tokens, float* y,
                            cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  gate_ln_kernel<<<static_cast<unsigned>(p.n), kLNThreads, 0, stream>>>(p, y);
  const unsigned blocks = static_cast<unsigned>((p.n + kRowsPerBlock - 1) / kRowsPerBlock);
  vq_argmin_kernel<<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(y, p.n, cb, tokens);
  return cudaGetLastError();
}

cudaError_t vq_argmin_cuda(const float* x, int64_t n, const CodebookView& cb, int64_t* tokens, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((n + kRowsPerBlock - 1) / kRowsPerBlock);
  vq_argmin_kernel<<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(x, n, cb, tokens);
  return cudaGetLastError();
}

}  // namespace uniaudio
