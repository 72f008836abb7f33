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
  const int16_t* codes_i16;    // int16 screen copy (pack_codebook_i16), or null
  const float* i16_meta;       // (5, i16_padded_codes(k)) planar: scale, ||c - c^||, ||c^||, ||c||^2, ||c||
  int64_t k;
  int64_t d;
  int64_t d_pad;             // multiple of 32
  const float* bf16_err = nullptr;  // (k,) ||c_k - bf16(c_k)|| rounded up (pack_codebook_bf16), or null
};

// bf16 screen copy of the codebook: round-to-nearest-even bf16 bits, rows zero-padded to d_pad, and
// (if err is not null) each code's rounding error norm ||c - bf16(c)||, rounded up.
void pack_codebook_bf16(const float* codes, int64_t k, int64_t d, int64_t d_pad, uint16_t* out, float* err);

// int16 screen: vectors are quantized per vector to integers |q| <= i16_qmax(d_pad) (at most 2047,
// fewer bits for wide vectors) so that a whole d_pad-long integer dot product fits in int32.
constexpr int64_t kI16MaxDim = 16384;
int32_t i16_qmax(int64_t d_pad);
// Codes are packed in groups of 8, interleaved by pairs of dimensions ([pair][code][2] within a
// group) so that one vpmaddwd yields 8 codes' partial sums; K is padded to a multiple of 24 with
// codes that can never win (||c||^2 = inf).
int64_t i16_padded_codes(int64_t k);
void pack_codebook_i16(const float* codes, int64_t k, int64_t d, int64_t d_pad, int16_t* packed, float* meta);

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
// Quantize rows of `x` (n, d) for the int16 screen: q (n, d_pad) zero-padded; meta (n, 3): scale s
// (x ~ s q), ||x - s q||, ||s q||.
void quantize_i16_rows(const float* x, int64_t n, int64_t d, int64_t d_pad, int16_t* q, float* meta);
// CPU search paths: "amx-bf16-screen", "avx512bf16-screen", "avx2-int16-screen", "portable". vq_cpu_path() names the
// one that runs (the fastest this CPU supports unless forced); set_vq_cpu_path("auto") resets.
const char* vq_cpu_path();
bool vq_cpu_path_supported(const char* name);
void set_vq_cpu_path(const char* name);
// Rows whose bf16 screen left more candidates than the kernel keeps, and fell back to an exact scan.
int64_t vq_cpu_fallback_rows();

}  // namespace uniaudio
