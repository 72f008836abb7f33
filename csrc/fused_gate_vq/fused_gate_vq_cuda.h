// Launchers of fused_gate_vq_cuda.cu (device pointers; include only where CUDA is available).
#pragma once

#include <cuda_runtime.h>

#include "fused_gate_vq.h"

namespace uniaudio {

// Fused gate epilogue + LayerNorm + nearest code. y: (n, d) output or null; scratch: (n, d), needed
// only for d > 1536 (rows too wide to stage in shared memory: two-kernel fallback), else may be null.
cudaError_t gate_ln_vq_cuda(const GateLNParams& p, const CodebookView& cb, int64_t* tokens, float* y,
                            float* scratch, cudaStream_t stream);
cudaError_t vq_argmin_cuda(const float* x, int64_t n, const CodebookView& cb, int64_t* tokens, cudaStream_t stream);

}  // namespace uniaudio
