// Launchers of decoder_ops_cuda.cu (device pointers; include only where CUDA is available).
#pragma once

#include <cuda_runtime.h>

#include "decoder_ops.h"

namespace uniaudio {

// frame_phase: device scratch of batch * harmonics * frames doubles
cudaError_t nsf_sine_source_cuda(const NsfParams& p, double* frame_phase, float* sine, float* uv, double* new_phase,
                                 cudaStream_t stream);
// frames: device scratch of batch * frames * n_fft floats
cudaError_t istft_ola_cuda(const IstftParams& p, float* frames, float* out, float* new_tail, cudaStream_t stream);
cudaError_t cfg_euler_step_cuda(const float* x, const float* v_cond, const float* v_uncond, int64_t n, float dt,
                                float r, float* y, cudaStream_t stream);
cudaError_t causal_conv1d_update_cuda(const CausalConvParams& p, float* y, float* new_state, cudaStream_t stream);

}  // namespace uniaudio
