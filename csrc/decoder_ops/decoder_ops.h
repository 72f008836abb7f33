// Streaming ops of the token-to-audio decoder (CPU kernels on raw pointers; the CUDA launchers in
// decoder_ops_cuda.h take the same parameter structs). Python twins: uniaudio_rt/decoder/ops.py.
//
//   nsf_sine_source      : harmonic sines of the NSF source with the running phase carried across chunks
//   istft_ola            : HiFT head (exp magnitude, sin phase) + inverse real DFT + window + overlap-add
//   cfg_euler_step       : x + dt * ((1 + r) * v_cond - r * v_uncond)
//   causal_conv1d_update : causal Conv1d over new samples given the previous input samples
#pragma once

#include <algorithm>
#include <cstdint>

namespace uniaudio {

struct NsfParams {
  const float* f0;             // (batch, frames) Hz, held for `upsample` samples
  const double* phase;         // (batch, harmonics) running phase in cycles
  const double* phase_offset;  // (batch, harmonics) fixed start phase in radians
  int64_t batch, frames, harmonics, upsample;
  double sampling_rate;
  float sine_amp, voiced_threshold;
};
// sine (batch, harmonics, frames*upsample), uv (batch, 1, frames*upsample), new_phase (batch, harmonics)
void nsf_sine_source_cpu(const NsfParams& p, float* sine, float* uv, double* new_phase);

struct IstftParams {
  const float* x;       // (batch, n_fft + 2, frames): log-magnitudes (n_fft/2 + 1 rows), phase pre-activations
  const float* window;  // (n_fft,)
  const float* tail;    // (batch, n_fft - hop) overlap-add numerator carried from the previous call
  int64_t batch, frames, n_fft, hop, frames_before;
  bool is_last;
};
// Positions [start, end) of the padded overlap-add signal emitted by one call (center=True trimming).
inline void istft_emit_range(int64_t frames_before, int64_t frames, int64_t n_fft, int64_t hop, bool is_last,
                             int64_t* start, int64_t* end) {
  const int64_t total = frames_before + frames;
  *start = std::max(frames_before * hop, n_fft / 2);
  const int64_t e = is_last ? (total - 1) * hop + n_fft / 2 : total * hop;
  *end = std::max(*start, e);
}
// out (batch, end - start) for istft_emit_range, new_tail (batch, n_fft - hop)
void istft_ola_cpu(const IstftParams& p, float* out, float* new_tail);

// y = x + dt * ((1 + r) * v_cond - r * v_uncond), n elements
void cfg_euler_step_cpu(const float* x, const float* v_cond, const float* v_uncond, int64_t n, float dt, float r,
                        float* y);

struct CausalConvParams {
  const float* x;       // (batch, c_in, length) new samples
  const float* state;   // (batch, c_in, (kernel - 1) * dilation) previous input samples
  const float* weight;  // (c_out, c_in / groups, kernel)
  const float* bias;    // (c_out,) or null
  int64_t batch, c_in, c_out, length, kernel, dilation, groups;
  bool silu;
};
// y (batch, c_out, length), new_state (batch, c_in, (kernel - 1) * dilation)
void causal_conv1d_update_cpu(const CausalConvParams& p, float* y, float* new_state);

}  // namespace uniaudio
