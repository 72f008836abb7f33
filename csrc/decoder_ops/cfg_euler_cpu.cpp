// Classifier-free guidance combine fused with the Euler update of the flow-matching ODE, CPU.
#include "decoder_ops.h"

namespace uniaudio {

void cfg_euler_step_cpu(const float* x, const float* v_cond, const float* v_uncond, int64_t n, float dt, float r,
                        float* y) {
  const float a = dt * (1.0f + r), c = dt * r;
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] + (a * v_cond[i] - c * v_uncond[i]);
}

}  // namespace uniaudio
