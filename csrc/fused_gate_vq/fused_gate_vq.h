// Fused SAE gate epilogue + LayerNorm + nearest-code search over one codebook.
//
//   y[r]     = LayerNorm(deep[r] + sigmoid(gate_logits[r]) * adapter[r]) * ln_w + ln_b
//   token[r] = argmin_k ||y[r] - c_k||^2            (lowest index wins ties)
//
// The gate's and the adapter's GEMMs run before (BLAS); these kernels fuse everything after them
// and never materialise the rows x codes distance matrix. Plain C++ declarations: the same
// parameter struct serves the CPU kernels and the CUDA kernels.
#pragma once

#include <cstdint>

namespace uniaudio {

struct CodebookView {
  const float* codes;        // (k, d) row-major
  const float* sq_norms;     // (k,)  ||c_k||^2
  const float* norms;        // (k,)  ||c_k||
  const uint16_t* codes_bf16;  // (k, d_pad) bf16 bits, rows zero-padded to d_pad (may be null)
  int64_t k;
  int64_t d;
  int64_t d_pad;             // multiple of 32
};

struct GateLNParams {
  const float* deep;         // (n, d)
  const float* gate_logits;  // (n, d) pre-sigmoid output of the gate's last Linear, or null (g = 1)
  const float* adapter;      // (n, d) adapter output (or the shallow stream itself)
  const float* ln_w;         // (d,)
  const float* ln_b;         // (d,)
  float eps;
  int64_t n;
  int64_t d;
};

// CPU (OpenMP over rows). `y` may be null when only tokens are wanted.
void gate_ln_vq_cpu(const GateLNParams& p, const CodebookView& cb, int64_t* tokens, float* y);
void vq_argmin_cpu(const float* x, int64_t n, const CodebookView& cb, int64_t* tokens);
// Which CPU path runs: "avx512bf16-screen" or "portable".
const char* vq_cpu_path();
void set_vq_cpu_force_portable(bool force);
// Rows whose bf16 screen left more candidates than the kernel keeps, and fell back to an exact scan.
int64_t vq_cpu_fallback_rows();

}  // namespace uniaudio
