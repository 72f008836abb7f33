// CUDA kernels for the fused SAE gate epilogue + LayerNorm + nearest-code search.
// Plain CUDA C++ on raw device pointers (no ATen / c10 includes), so this file compiles with nvcc
// alone; the torch binding calls the launchers below when the extension is built with CUDA.
//
//   gate_ln_vq_kernel : the fused path, one warp per row: the row's epilogue + LayerNorm is staged in
//                       shared memory (never in global memory unless y is asked for), then the same
//                       warp scans the codebook against it
//   gate_ln_kernel : one block per row; y = LayerNorm(deep + sigmoid(gate_logits) * adapter)
//                    (with vq_argmin_kernel after it: the fallback when rows do not fit in shared memory)
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
constexpr size_t kMaxStagedBytes = 48 * 1024;  // default dynamic shared memory per block

// Shared memory gate_ln_vq_kernel stages: kRowsPerBlock rows of d floats.
size_t staged_bytes(int64_t d) { return static_cast<size_t>(kRowsPerBlock) * static_cast<size_t>(d) * sizeof(float); }

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

// Running nearest code of one row (read by the calling warp; every lane gets the result).
__device__ int64_t warp_argmin(const float* xr, const CodebookView& cb) {
  const int lane = threadIdx.x % kWarp;
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
  return best_k;
}

__global__ void gate_ln_vq_kernel(GateLNParams p, CodebookView cb, int64_t* __restrict__ tokens, float* __restrict__ y) {
  extern __shared__ float staged[];  // kRowsPerBlock rows of d floats
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp;
  if (r >= p.n) return;  // whole warps only; no block-wide barrier follows
  const int64_t d = p.d;
  float* row = staged + static_cast<int64_t>(warp) * d;
  const float* deep = p.deep + r * d;
  const float* a = p.adapter + r * d;
  const float* gl = p.gate_logits ? p.gate_logits + r * d : nullptr;
  float sum = 0.0f;
  for (int64_t i = lane; i < d; i += kWarp) {
    const float g = gl ? 1.0f / (1.0f + __expf(-gl[i])) : 1.0f;
    const float v = deep[i] + g * a[i];
    row[i] = v;
    sum += v;
  }
  const float mean = warp_sum(sum) / d;
  float var = 0.0f;
  for (int64_t i = lane; i < d; i += kWarp) {
    const float t = row[i] - mean;
    var += t * t;
  }
  const float inv = rsqrtf(warp_sum(var) / d + p.eps);
  for (int64_t i = lane; i < d; i += kWarp) {
    const float v = (row[i] - mean) * inv * p.ln_w[i] + p.ln_b[i];
    row[i] = v;
    if (y) y[r * d + i] = v;
  }
  __syncwarp();
  const int64_t best_k = warp_argmin(row, cb);
  if (lane == 0) tokens[r] = best_k;
}

__global__ void vq_argmin_kernel(const float* __restrict__ x, int64_t n, CodebookView cb, int64_t* __restrict__ tokens) {
  const int lane = threadIdx.x % kWarp;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (r >= n) return;
  const int64_t best_k = warp_argmin(x + r * cb.d, cb);
  if (lane == 0) tokens[r] = best_k;
}

}  // namespace

// All pointers are device pointers. `y` is the (n, d) output, or null when only tokens are wanted;
// `scratch` is an (n, d) buffer used only when kRowsPerBlock rows of d floats exceed the default 48 KiB
// of shared memory per block (d > 1536): then the two-kernel fallback runs. Returns the launch status.
bool gate_ln_vq_cuda_needs_scratch(int64_t d) { return staged_bytes(d) > kMaxStagedBytes; }

cudaError_t gate_ln_vq_cuda(const GateLNParams& p, const CodebookView& cb, int64_t* tokens, float* y,
                            float* scratch, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((p.n + kRowsPerBlock - 1) / kRowsPerBlock);
  if (!gate_ln_vq_cuda_needs_scratch(p.d)) {
    gate_ln_vq_kernel<<<blocks, kRowsPerBlock * kWarp, staged_bytes(p.d), stream>>>(p, cb, tokens, y);
    return cudaGetLastError();
  }
  float* rows = y ? y : scratch;
  if (!rows) return cudaErrorInvalidValue;
  gate_ln_kernel<<<static_cast<unsigned>(p.n), kLNThreads, 0, stream>>>(p, rows);
  vq_argmin_kernel<<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(rows, p.n, cb, tokens);
  return cudaGetLastError();
}

cudaError_t vq_argmin_cuda(const float* x, int64_t n, const CodebookView& cb, int64_t* tokens, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((n + kRowsPerBlock - 1) / kRowsPerBlock);
  vq_argmin_kernel<<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(x, n, cb, tokens);
  return cudaGetLastError();
}

}  // namespace uniaudio
