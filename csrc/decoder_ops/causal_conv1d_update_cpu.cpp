// Causal Conv1d streaming step, CPU: y[t] uses input samples t - (K-1)*dilation .. t, the ones before
// this call coming from `state`. OpenMP over (batch, output channel).
#include <cmath>

#include "decoder_ops.h"

namespace uniaudio {

void causal_conv1d_update_cpu(const CausalConvParams& p, float* y, float* new_state) {
  const int64_t S = (p.kernel - 1) * p.dilation, L = p.length;
  const int64_t cin_g = p.c_in / p.groups, cout_g = p.c_out / p.groups;
  auto input = [&](int64_t b, int64_t c, int64_t t) {  // t indexes [state | x]
    return t < S ? p.state[(b * p.c_in + c) * S + t] : p.x[(b * p.c_in + c) * L + (t - S)];
  };
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t o = 0; o < p.c_out; ++o) {
      const int64_t g = o / cout_g;
      const float* w = p.weight + o * cin_g * p.kernel;
      float* yo = y + (b * p.c_out + o) * L;
      for (int64_t t = 0; t < L; ++t) {
        float acc = p.bias ? p.bias[o] : 0.0f;
        for (int64_t i = 0; i < cin_g; ++i) {
          const int64_t c = g * cin_g + i;
          for (int64_t k = 0; k < p.kernel; ++k) acc += w[i * p.kernel + k] * input(b, c, t + k * p.dilation);
        }
        yo[t] = p.silu ? acc / (1.0f + std::exp(-acc)) : acc;
      }
    }
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t c = 0; c < p.c_in; ++c)
      for (int64_t j = 0; j < S; ++j) new_state[(b * p.c_in + c) * S + j] = input(b, c, L + j);
}

}  // namespace uniaudio
