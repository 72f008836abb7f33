// NSF harmonic sine source, CPU. One (batch, harmonic) row per OpenMP task; the phase is accumulated
// in double per frame (f0 is constant within a frame), so sample k of frame f has phase
// start_f + (k + 1) * inc_f cycles, as the inclusive cumulative sum of the training code.
#include <cmath>

#include "decoder_ops.h"

namespace uniaudio {

void nsf_sine_source_cpu(const NsfParams& p, float* sine, float* uv, double* new_phase) {
  const int64_t n = p.frames * p.upsample;
  const double two_pi = 6.283185307179586476925286766559;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < p.batch * p.harmonics; ++row) {
    const int64_t b = row / p.harmonics, h = row % p.harmonics;
    const float* f0 = p.f0 + b * p.frames;
    float* out = sine + row * n;
    const double offset = p.phase_offset[row];
    double running = p.phase[row];
    for (int64_t f = 0; f < p.frames; ++f) {
      const double inc = static_cast<double>(f0[f]) * static_cast<double>(h + 1) / p.sampling_rate;
      const bool voiced = f0[f] > p.voiced_threshold;
      float* o = out + f * p.upsample;
      if (voiced) {
        for (int64_t k = 0; k < p.upsample; ++k) {
          double c = running + inc * static_cast<double>(k + 1);
          c -= std::floor(c);
          o[k] = static_cast<float>(p.sine_amp * std::sin(two_pi * c + offset));
        }
      } else {
        std::fill(o, o + p.upsample, 0.0f);
      }
      if (h == 0) std::fill(uv + b * n + f * p.upsample, uv + b * n + (f + 1) * p.upsample, voiced ? 1.0f : 0.0f);
      running += static_cast<double>(p.upsample) * inc;
    }
    new_phase[row] = running - std::floor(running);
  }
}

}  // namespace uniaudio
