// pybind11 bindings of the streaming decoder ops (registered into uniaudio_rt._C by bindings.cpp).
// Inputs are validated here; the kernels take raw pointers (decoder_ops.h / decoder_ops_cuda.h).
// CPU tensors run the OpenMP kernels, CUDA tensors the CUDA kernels (extension built with CUDA).
#include <torch/extension.h>

#include "decoder_ops.h"
#ifdef UNIAUDIO_RT_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "decoder_ops_cuda.h"
#endif

namespace {

void check(const torch::Tensor& t, const char* name, torch::ScalarType dtype, int64_t dim,
           const torch::Device& device) {
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dim, name, " must be ", dim, "-D, got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.device() == device, name, " is on ", t.device(), ", expected ", device);
#ifndef UNIAUDIO_RT_WITH_CUDA
  TORCH_CHECK(t.device().is_cpu(), name, " is a ", t.device(), " tensor; the extension was built without CUDA");
#endif
}

#ifdef UNIAUDIO_RT_WITH_CUDA
void check_cuda(cudaError_t err, const char* op) { TORCH_CHECK(err == cudaSuccess, op, ": ", cudaGetErrorString(err)); }
#endif

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> nsf_sine_source(const torch::Tensor& f0,
                                                                        const torch::Tensor& phase,
                                                                        const torch::Tensor& phase_offset,
                                                                        double sampling_rate, int64_t upsample,
                                                                        double sine_amp, double voiced_threshold) {
  const auto dev = f0.device();
  check(f0, "f0", torch::kFloat32, 2, dev);
  check(phase, "phase", torch::kFloat64, 2, dev);
  check(phase_offset, "phase_offset", torch::kFloat64, 2, dev);
  TORCH_CHECK(phase.size(0) == f0.size(0), "phase has batch ", phase.size(0), ", f0 has ", f0.size(0));
  TORCH_CHECK(phase_offset.sizes() == phase.sizes(), "phase_offset shape ", phase_offset.sizes(), " != phase shape ",
              phase.sizes());
  TORCH_CHECK(upsample >= 1, "upsample must be >= 1, got ", upsample);
  TORCH_CHECK(sampling_rate > 0, "sampling_rate must be > 0, got ", sampling_rate);
  const int64_t B = f0.size(0), F = f0.size(1), H = phase.size(1);
  uniaudio::NsfParams p{f0.data_ptr<float>(), phase.data_ptr<double>(), phase_offset.data_ptr<double>(),
                        B, F, H, upsample, sampling_rate, static_cast<float>(sine_amp),
                        static_cast<float>(voiced_threshold)};
  auto sine = torch::empty({B, H, F * upsample}, f0.options());
  auto uv = torch::empty({B, 1, F * upsample}, f0.options());
  auto new_phase = torch::empty({B, H}, phase.options());
#ifdef UNIAUDIO_RT_WITH_CUDA
  if (f0.is_cuda()) {
    auto scratch = torch::empty({B, H, F}, phase.options());
    check_cuda(uniaudio::nsf_sine_source_cuda(p, scratch.data_ptr<double>(), sine.data_ptr<float>(),
                                              uv.data_ptr<float>(), new_phase.data_ptr<double>(),
                                              c10::cuda::getCurrentCUDAStream()),
               "nsf_sine_source_cuda");
    return {sine, uv, new_phase};
  }
#endif
  uniaudio::nsf_sine_source_cpu(p, sine.data_ptr<float>(), uv.data_ptr<float>(), new_phase.data_ptr<double>());
  return {sine, uv, new_phase};
}

std::tuple<torch::Tensor, torch::Tensor> istft_ola(const torch::Tensor& x, const torch::Tensor& window, int64_t hop,
                                                   const torch::Tensor& tail, int64_t frames_before, bool is_last) {
  const auto dev = x.device();
  check(x, "x", torch::kFloat32, 3, dev);
  check(window, "window", torch::kFloat32, 1, dev);
  check(tail, "tail", torch::kFloat32, 2, dev);
  const int64_t n_fft = window.size(0), B = x.size(0), F = x.size(2);
  TORCH_CHECK(n_fft >= 2 && n_fft % 2 == 0 && n_fft <= 128, "n_fft (window length) must be even and in [2, 128], got ",
              n_fft);
  TORCH_CHECK(hop > 0 && hop <= n_fft, "hop must be in [1, n_fft=", n_fft, "], got ", hop);
  TORCH_CHECK(x.size(1) == n_fft + 2, "x must have n_fft + 2 = ", n_fft + 2, " rows, got ", x.size(1));
  TORCH_CHECK(tail.size(0) == B && tail.size(1) == n_fft - hop, "tail must be (", B, ", ", n_fft - hop, "), got ",
              tail.sizes());
  TORCH_CHECK(frames_before >= 0, "frames_before must be >= 0, got ", frames_before);
  int64_t start, end;
  uniaudio::istft_emit_range(frames_before, F, n_fft, hop, is_last, &start, &end);
  uniaudio::IstftParams p{x.data_ptr<float>(), window.data_ptr<float>(), tail.data_ptr<float>(), B, F, n_fft, hop,
                          frames_before, is_last};
  auto out = torch::empty({B, end - start}, x.options());
  auto new_tail = torch::empty({B, n_fft - hop}, x.options());
#ifdef UNIAUDIO_RT_WITH_CUDA
  if (x.is_cuda()) {
    auto frames = torch::empty({B, F, n_fft}, x.options());
    check_cuda(uniaudio::istft_ola_cuda(p, frames.data_ptr<float>(), out.data_ptr<float>(),
                                        new_tail.data_ptr<float>(), c10::cuda::getCurrentCUDAStream()),
               "istft_ola_cuda");
    return {out, new_tail};
  }
#endif
  uniaudio::istft_ola_cpu(p, out.data_ptr<float>(), new_tail.data_ptr<float>());
  return {out, new_tail};
}

torch::Tensor cfg_euler_step(const torch::Tensor& x, const torch::Tensor& v_cond, const torch::Tensor& v_uncond,
                             double dt, double cfg_rate) {
  const auto dev = x.device();
  for (const auto& [t, name] : {std::pair{&x, "x"}, std::pair{&v_cond, "v_cond"}, std::pair{&v_uncond, "v_uncond"}}) {
    check(*t, name, torch::kFloat32, x.dim(), dev);
    TORCH_CHECK(t->sizes() == x.sizes(), name, " has shape ", t->sizes(), ", x has ", x.sizes());
  }
  auto y = torch::empty_like(x);
#ifdef UNIAUDIO_RT_WITH_CUDA
  if (x.is_cuda()) {
    check_cuda(uniaudio::cfg_euler_step_cuda(x.data_ptr<float>(), v_cond.data_ptr<float>(), v_uncond.data_ptr<float>(),
                                             x.numel(), static_cast<float>(dt), static_cast<float>(cfg_rate),
                                             y.data_ptr<float>(), c10::cuda::getCurrentCUDAStream()),
               "cfg_euler_step_cuda");
    return y;
  }
#endif
  uniaudio::cfg_euler_step_cpu(x.data_ptr<float>(), v_cond.data_ptr<float>(), v_uncond.data_ptr<float>(), x.numel(),
                               static_cast<float>(dt), static_cast<float>(cfg_rate), y.data_ptr<float>());
  return y;
}

std::tuple<torch::Tensor, torch::Tensor> causal_conv1d_update(const torch::Tensor& x, const torch::Tensor& state,
                                                              const torch::Tensor& weight, const torch::Tensor& bias,
                                                              int64_t dilation, int64_t groups, bool silu) {
  const auto dev = x.device();
  check(x, "x", torch::kFloat32, 3, dev);
  check(state, "conv_state", torch::kFloat32, 3, dev);
  check(weight, "weight", torch::kFloat32, 3, dev);
  const int64_t B = x.size(0), c_in = x.size(1), L = x.size(2), c_out = weight.size(0), K = weight.size(2);
  TORCH_CHECK(groups >= 1 && c_in % groups == 0 && c_out % groups == 0 && weight.size(1) * groups == c_in,
              "groups=", groups, " does not fit C_in=", c_in, ", C_out=", c_out, ", weight ", weight.sizes());
  TORCH_CHECK(dilation >= 1, "dilation must be >= 1, got ", dilation);
  TORCH_CHECK(state.size(0) == B && state.size(1) == c_in && state.size(2) == (K - 1) * dilation,
              "conv_state must be (", B, ", ", c_in, ", ", (K - 1) * dilation, "), got ", state.sizes());
  if (bias.numel()) {
    check(bias, "bias", torch::kFloat32, 1, dev);
    TORCH_CHECK(bias.size(0) == c_out, "bias has ", bias.size(0), " entries, expected ", c_out);
  }
  uniaudio::CausalConvParams p{x.data_ptr<float>(), state.data_ptr<float>(), weight.data_ptr<float>(),
                               bias.numel() ? bias.data_ptr<float>() : nullptr, B, c_in, c_out, L, K, dilation,
                               groups, silu};
  auto y = torch::empty({B, c_out, L}, x.options());
  auto new_state = torch::empty_like(state);
#ifdef UNIAUDIO_RT_WITH_CUDA
  if (x.is_cuda()) {
    check_cuda(uniaudio::causal_conv1d_update_cuda(p, y.data_ptr<float>(), new_state.data_ptr<float>(),
                                                   c10::cuda::getCurrentCUDAStream()),
               "causal_conv1d_update_cuda");
    return {y, new_state};
  }
#endif
  uniaudio::causal_conv1d_update_cpu(p, y.data_ptr<float>(), new_state.data_ptr<float>());
  return {y, new_state};
}

}  // namespace

void register_decoder_ops(pybind11::module& m) {
  m.def("nsf_sine_source", &nsf_sine_source, "NSF harmonic sine source with carried phase");
  m.def("istft_ola", &istft_ola, "HiFT iSTFT head + overlap-add with carried tail");
  m.def("cfg_euler_step", &cfg_euler_step, "classifier-free guidance combine + Euler step");
  m.def("causal_conv1d_update", &causal_conv1d_update, "causal Conv1d streaming step with explicit state");
}
