// Launchers of fused_gate_vq_cuda.cu (device pointers; include only where CUDA is available).
#pragma once

#include <cuda_runtime.h>

#include "fused_gate_vq.h"

namespace uniaudio {

// Fused gate epilogue + LayerNorm + nearest code. y: (n, d) output or null; scratch: (n, d), needed
// only when gate_ln_vq_cuda_needs_scratch(d) (rows too wide to stage in shared memory, d > 1536: the
// two-kernel fallback), else may be null.
bool gate_ln_vq_cuda_needs_scratch(int64_t d);
cudaError_t gate_ln_vq_cuda(const GateLNParams& p, const CodebookView& cb, int64_t* tokens, float* y,
                            float* scratch, cudaStream_t stream);
cudaError_t vq_argmin_cuda(const float* x, int64_t n, const CodebookView& cb, int64_t* tokens, cudaStream_t stream);

}  // namespace uniaudio
