// Causal Conv1d streaming step, CPU: y[t] uses input samples t - (K-1)*dilation .. t, the ones before
// this call coming from `state`. The input rows [state | x] are joined once; then OpenMP over
// (batch, output channel) with a vectorisable loop over time per (input channel, tap).
#include <algorithm>
#include <cmath>
#include <vector>

#include "decoder_ops.h"

namespace uniaudio {

void causal_conv1d_update_cpu(const CausalConvParams& p, float* y, float* new_state) {
  const int64_t S = (p.kernel - 1) * p.dilation, L = p.length, W = S + L;
  const int64_t cin_g = p.c_in / p.groups, cout_g = p.c_out / p.groups;
  std::vector<float> full(static_cast<size_t>(p.batch * p.c_in * W));
#pragma omp parallel for schedule(static)
  for (int64_t bc = 0; bc < p.batch * p.c_in; ++bc) {
    std::copy(p.state + bc * S, p.state + (bc + 1) * S, full.data() + bc * W);
    std::copy(p.x + bc * L, p.x + (bc + 1) * L, full.data() + bc * W + S);
    std::copy(full.data() + bc * W + L, full.data() + bc * W + L + S, new_state + bc * S);
  }
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t o = 0; o < p.c_out; ++o) {
      const int64_t g = o / cout_g;
      const float* w = p.weight + o * cin_g * p.kernel;
      float* yo = y + (b * p.c_out + o) * L;
      const float b0 = p.bias ? p.bias[o] : 0.0f;
      const float* rows = full.data() + (b * p.c_in + g * cin_g) * W;
      if (L < 16) {  // streaming step: few outputs, accumulate each in a register
        for (int64_t t = 0; t < L; ++t) {
          float acc = b0;
          if (W == p.kernel) {  // dilation 1 and one output: window = whole row, a flat dot product
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < cin_g * p.kernel; ++j) acc += w[j] * rows[j];
          } else {
            for (int64_t i = 0; i < cin_g; ++i)
              for (int64_t k = 0; k < p.kernel; ++k) acc += w[i * p.kernel + k] * rows[i * W + t + k * p.dilation];
          }
          yo[t] = p.silu ? acc / (1.0f + std::exp(-acc)) : acc;
        }
        continue;
      }
      for (int64_t t = 0; t < L; ++t) yo[t] = b0;
      for (int64_t i = 0; i < cin_g; ++i) {
        const float* row = full.data() + (b * p.c_in + g * cin_g + i) * W;
        for (int64_t k = 0; k < p.kernel; ++k) {
          const float wk = w[i * p.kernel + k];
          const float* src = row + k * p.dilation;
#pragma omp simd
          for (int64_t t = 0; t < L; ++t) yo[t] += wk * src[t];
        }
      }
      if (p.silu)
        for (int64_t t = 0; t < L; ++t) yo[t] = yo[t] / (1.0f + std::exp(-yo[t]));
    }
}

}  // namespace uniaudio
