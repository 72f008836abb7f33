// CUDA kernels of the streaming decoder ops (same contracts as the CPU kernels in this folder).
// Plain CUDA C++ on raw device pointers (no ATen / c10 includes): compiled by nvcc alone, called by
// decoder_ops_bindings.cpp when the extension is built with CUDA.
//
//   nsf_frame_phase_kernel / nsf_sine_kernel : per (batch, harmonic) frame-start phases (double,
//       sequential over frames), then one thread per output sample
//   istft_frames_kernel / istft_gather_kernel : one thread per frame sample (inverse real DFT x window),
//       then one thread per output / tail position gathering the frames that cover it
//   cfg_euler_kernel : elementwise
//   causal_conv_kernel / causal_conv_state_kernel : one thread per output sample / state sample
#include <cuda_runtime.h>

#include <cstdint>

#include "decoder_ops_cuda.h"

namespace uniaudio {
namespace {

constexpr int kThreads = 256;
constexpr double kTwoPi = 6.283185307179586476925286766559;

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

__global__ void nsf_frame_phase_kernel(NsfParams p, double* frame_phase, double* new_phase) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (row >= p.batch * p.harmonics) return;
  const int64_t b = row / p.harmonics, h = row % p.harmonics;
  double running = p.phase[row];
  for (int64_t f = 0; f < p.frames; ++f) {
    frame_phase[row * p.frames + f] = running;
    const double inc = static_cast<double>(p.f0[b * p.frames + f]) * static_cast<double>(h + 1) / p.sampling_rate;
    running += static_cast<double>(p.upsample) * inc;
  }
  new_phase[row] = running - floor(running);
}

__global__ void nsf_sine_kernel(NsfParams p, const double* frame_phase, float* sine, float* uv) {
  const int64_t n = p.frames * p.upsample;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= p.batch * p.harmonics * n) return;
  const int64_t row = i / n, s = i % n, b = row / p.harmonics, h = row % p.harmonics;
  const int64_t f = s / p.upsample, k = s % p.upsample;
  const float f0 = p.f0[b * p.frames + f];
  const bool voiced = f0 > p.voiced_threshold;
  float v = 0.0f;
  if (voiced) {
    const double inc = static_cast<double>(f0) * static_cast<double>(h + 1) / p.sampling_rate;
    double c = frame_phase[row * p.frames + f] + inc * static_cast<double>(k + 1);
    c -= floor(c);
    v = static_cast<float>(p.sine_amp * sin(kTwoPi * c + p.phase_offset[row]));
  }
  sine[i] = v;
  if (h == 0) uv[b * n + s] = voiced ? 1.0f : 0.0f;
}

__global__ void istft_frames_kernel(IstftParams p, float* frames) {
  const int64_t nf = p.n_fft, nb = nf / 2 + 1, F = p.frames;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= p.batch * F * nf) return;
  const int64_t b = i / (F * nf), f = (i / nf) % F, n = i % nf;
  const float* xb = p.x + b * (nf + 2) * F;
  float acc = 0.0f;
  for (int64_t k = 0; k < nb; ++k) {
    const float mag = fminf(expf(xb[k * F + f]), 100.0f);
    const float ph = sinf(xb[(nb + k) * F + f]);
    const float re = mag * cosf(ph), im = mag * sinf(ph);
    if (k == 0) {
      acc += re;
    } else if (k == nb - 1) {
      acc += (n & 1) ? -re : re;
    } else {
      const int64_t t = (k * n) % nf;
      float s, c;
      sincospif(2.0f * static_cast<float>(t) / static_cast<float>(nf), &s, &c);
      acc += 2.0f * (re * c - im * s);
    }
  }
  frames[i] = acc / static_cast<float>(nf) * p.window[n];
}

__global__ void istft_gather_kernel(IstftParams p, const float* frames, int64_t start, int64_t n_out, float* out,
                                    float* new_tail) {
  const int64_t nf = p.n_fft, hop = p.hop, F = p.frames, tail_len = nf - hop, width = n_out + tail_len;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= p.batch * width) return;
  const int64_t b = i / width, j = i % width, p0 = p.frames_before * hop;
  const int64_t q = j < n_out ? start + j - p0 : F * hop + (j - n_out);
  float acc = q < tail_len ? p.tail[b * tail_len + q] : 0.0f;
  const int64_t f_hi = min(q / hop, F - 1);
  const int64_t f_lo = q - nf + 1 <= 0 ? 0 : (q - nf + hop) / hop;
  for (int64_t f = f_lo; f <= f_hi; ++f) acc += frames[(b * F + f) * nf + (q - f * hop)];
  if (j < n_out) {
    const int64_t pos = start + j, total = p.frames_before + F;
    float env = 0.0f;
    for (int64_t f = pos / hop; f >= 0 && pos - f * hop < nf; --f)
      if (f < total) env += p.window[pos - f * hop] * p.window[pos - f * hop];
    out[b * n_out + j] = env > 1e-11f ? acc / env : 0.0f;
  } else {
    new_tail[b * tail_len + (j - n_out)] = acc;
  }
}

__global__ void cfg_euler_kernel(const float* x, const float* vc, const float* vu, int64_t n, float a, float c,
                                 float* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = x[i] + (a * vc[i] - c * vu[i]);
}

__device__ __forceinline__ float conv_input(const CausalConvParams& p, int64_t S, int64_t b, int64_t c, int64_t t) {
  return t < S ? p.state[(b * p.c_in + c) * S + t] : p.x[(b * p.c_in + c) * p.length + (t - S)];
}

__global__ void causal_conv_kernel(CausalConvParams p, float* y) {
  const int64_t L = p.length, S = (p.kernel - 1) * p.dilation;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= p.batch * p.c_out * L) return;
  const int64_t b = i / (p.c_out * L), o = (i / L) % p.c_out, t = i % L;
  const int64_t cin_g = p.c_in / p.groups, g = o / (p.c_out / p.groups);
  const float* w = p.weight + o * cin_g * p.kernel;
  float acc = p.bias ? p.bias[o] : 0.0f;
  for (int64_t ci = 0; ci < cin_g; ++ci)
    for (int64_t k = 0; k < p.kernel; ++k) acc += w[ci * p.kernel + k] * conv_input(p, S, b, g * cin_g + ci, t + k * p.dilation);
  y[i] = p.silu ? acc / (1.0f + expf(-acc)) : acc;
}

__global__ void causal_conv_state_kernel(CausalConvParams p, float* new_state) {
  const int64_t S = (p.kernel - 1) * p.dilation;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (S == 0 || i >= p.batch * p.c_in * S) return;
  const int64_t bc = i / S, j = i % S;
  new_state[i] = conv_input(p, S, bc / p.c_in, bc % p.c_in, p.length + j);
}

}  // namespace

cudaError_t nsf_sine_source_cuda(const NsfParams& p, double* frame_phase, float* sine, float* uv, double* new_phase,
                                 cudaStream_t stream) {
  const int64_t rows = p.batch * p.harmonics, total = rows * p.frames * p.upsample;
  if (rows == 0) return cudaSuccess;
  nsf_frame_phase_kernel<<<blocks_for(rows), kThreads, 0, stream>>>(p, frame_phase, new_phase);
  if (total > 0) nsf_sine_kernel<<<blocks_for(total), kThreads, 0, stream>>>(p, frame_phase, sine, uv);
  return cudaGetLastError();
}

cudaError_t istft_ola_cuda(const IstftParams& p, float* frames, float* out, float* new_tail, cudaStream_t stream) {
  int64_t start, end;
  istft_emit_range(p.frames_before, p.frames, p.n_fft, p.hop, p.is_last, &start, &end);
  const int64_t n_frames = p.batch * p.frames * p.n_fft, width = (end - start) + (p.n_fft - p.hop);
  if (n_frames > 0) istft_frames_kernel<<<blocks_for(n_frames), kThreads, 0, stream>>>(p, frames);
  if (p.batch * width > 0)
    istft_gather_kernel<<<blocks_for(p.batch * width), kThreads, 0, stream>>>(p, frames, start, end - start, out,
                                                                              new_tail);
  return cudaGetLastError();
}

cudaError_t cfg_euler_step_cuda(const float* x, const float* v_cond, const float* v_uncond, int64_t n, float dt,
                                float r, float* y, cudaStream_t stream) {
  if (n > 0) cfg_euler_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, v_cond, v_uncond, n, dt * (1.0f + r), dt * r, y);
  return cudaGetLastError();
}

cudaError_t causal_conv1d_update_cuda(const CausalConvParams& p, float* y, float* new_state, cudaStream_t stream) {
  const int64_t n_y = p.batch * p.c_out * p.length, n_s = p.batch * p.c_in * (p.kernel - 1) * p.dilation;
  if (n_y > 0) causal_conv_kernel<<<blocks_for(n_y), kThreads, 0, stream>>>(p, y);
  if (n_s > 0) causal_conv_state_kernel<<<blocks_for(n_s), kThreads, 0, stream>>>(p, new_state);
  return cudaGetLastError();
}

}  // namespace uniaudio
