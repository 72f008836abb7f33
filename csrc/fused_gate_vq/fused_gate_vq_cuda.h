// Launchers of fused_gate_vq_cuda.cu (device pointers; include only where CUDA is available).
#pragma once

#include <cuda_runtime.h>

#include "fused_gate_vq.h"

namespace uniaudio {

cudaError_t gate_ln_vq_cuda(const GateLNParams& p, const CodebookView& cb, int64_t* tokens, float* y,
                            cudaStream_t stream);
cudaError_t vq_argmin_cuda(const float* x, int64_t n, const CodebookView& cb, int64_t* tokens, cudaStream_t stream);

}  // namespace uniaudio
