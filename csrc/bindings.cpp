// pybind11 bindings of the native ops (torch extension uniaudio_rt._C). Inputs are validated
// here; the kernels take raw pointers (fused_gate_vq/fused_gate_vq.h).
#include <torch/extension.h>

#include <string>

#include "fused_gate_vq/fused_gate_vq.h"
#ifdef UNIAUDIO_RT_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "fused_gate_vq/fused_gate_vq_cuda.h"
#endif

namespace {

void check_matrix(const torch::Tensor& t, const char* name, int64_t cols = -1, bool cuda = false) {
  TORCH_CHECK(cuda ? t.is_cuda() : t.device().is_cpu(), name, " must be a ", cuda ? "CUDA" : "CPU",
              " tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == torch::kFloat32, name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 2, name, " must be 2-D (rows, dim), got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  if (cols >= 0) TORCH_CHECK(t.size(1) == cols, name, " has ", t.size(1), " columns, expected ", cols);
}

uniaudio::CodebookView view(const torch::Tensor& codes, const torch::Tensor& sq, const torch::Tensor& norms,
                            const torch::Tensor& bf16, const torch::Tensor& bf16_err, const torch::Tensor& i16,
                            const torch::Tensor& i16_meta) {
  check_matrix(codes, "codebook");
  const int64_t k = codes.size(0), d = codes.size(1);
  TORCH_CHECK(k > 0, "codebook is empty");
  TORCH_CHECK(sq.numel() == k && norms.numel() == k && sq.is_contiguous() && norms.is_contiguous() &&
                  sq.scalar_type() == torch::kFloat32 && norms.scalar_type() == torch::kFloat32,
              "sq_norms and norms must be contiguous float32 of size ", k);
  uniaudio::CodebookView v{codes.data_ptr<float>(), sq.data_ptr<float>(), norms.data_ptr<float>(), nullptr, nullptr,
                           nullptr, k, d, (d + 31) / 32 * 32};
  if (bf16.numel()) {
    TORCH_CHECK(bf16.scalar_type() == torch::kInt16 && bf16.dim() == 2 && bf16.size(0) == k &&
                    bf16.size(1) == v.d_pad && bf16.is_contiguous(),
                "codes_bf16 must be int16 (", k, ", ", v.d_pad, "), got ", bf16.sizes());
    v.codes_bf16 = reinterpret_cast<const uint16_t*>(bf16.data_ptr<int16_t>());
    if (bf16_err.numel()) {
      TORCH_CHECK(bf16_err.scalar_type() == torch::kFloat32 && bf16_err.numel() == k && bf16_err.is_contiguous(),
                  "bf16_err must be contiguous float32 of size ", k, " (from pack_bf16)");
      v.bf16_err = bf16_err.data_ptr<float>();
    }
  }
  if (i16.numel()) {
    const int64_t kp = uniaudio::i16_padded_codes(k);
    TORCH_CHECK(i16.scalar_type() == torch::kInt16 && i16.dim() == 2 && i16.size(0) == kp &&
                    i16.size(1) == v.d_pad && i16.is_contiguous(),
                "codes_i16 must be int16 (", kp, ", ", v.d_pad, ") from pack_i16, got ", i16.sizes());
    TORCH_CHECK(i16_meta.scalar_type() == torch::kFloat32 && i16_meta.dim() == 2 && i16_meta.size(0) == 5 &&
                    i16_meta.size(1) == kp && i16_meta.is_contiguous(),
                "i16_meta must be float32 (5, ", kp, ") from pack_i16, got ", i16_meta.sizes());
    v.codes_i16 = i16.data_ptr<int16_t>();
    v.i16_meta = i16_meta.data_ptr<float>();
  }
  return v;
}

// Round-to-nearest-even float32 -> bfloat16 bits, rows zero-padded to a multiple of 32, and each
// code's rounding error norm (the bf16 screens' bound uses it).
std::tuple<torch::Tensor, torch::Tensor> pack_bf16(const torch::Tensor& codes) {
  check_matrix(codes, "codebook");
  const int64_t k = codes.size(0), d = codes.size(1), dp = (d + 31) / 32 * 32;
  auto out = torch::zeros({k, dp}, torch::kInt16);
  auto err = torch::empty({k}, torch::kFloat32);
  uniaudio::pack_codebook_bf16(codes.data_ptr<float>(), k, d, dp, reinterpret_cast<uint16_t*>(out.data_ptr<int16_t>()),
                               err.data_ptr<float>());
  return {out, err};
}

// Codes quantized for the int16 screen: (q int16 (K, D padded to 32), meta float32 (K, 3)).
std::tuple<torch::Tensor, torch::Tensor> pack_i16(const torch::Tensor& codes) {
  check_matrix(codes, "codebook");
  const int64_t k = codes.size(0), d = codes.size(1), dp = (d + 31) / 32 * 32;
  if (d > uniaudio::kI16MaxDim) return {torch::empty({0}, torch::kInt16), torch::empty({0})};
  const int64_t kp = uniaudio::i16_padded_codes(k);
  auto q = torch::zeros({kp, dp}, torch::kInt16);
  auto meta = torch::empty({5, kp}, torch::kFloat32);
  uniaudio::pack_codebook_i16(codes.data_ptr<float>(), k, d, dp, q.data_ptr<int16_t>(), meta.data_ptr<float>());
  return {q, meta};
}

torch::Tensor vq_argmin(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& sq,
                        const torch::Tensor& norms, const torch::Tensor& bf16, const torch::Tensor& bf16_err,
                        const torch::Tensor& i16, const torch::Tensor& i16_meta) {
  auto cb = view(codes, sq, norms, bf16, bf16_err, i16, i16_meta);
  check_matrix(x, "x", cb.d);
  auto tokens = torch::empty({x.size(0)}, torch::kInt64);
  uniaudio::vq_argmin_cpu(x.data_ptr<float>(), x.size(0), cb, tokens.data_ptr<int64_t>());
  return tokens;
}

std::tuple<torch::Tensor, torch::Tensor> gate_ln_vq(const torch::Tensor& deep, const torch::Tensor& gate_logits,
                                                    const torch::Tensor& adapter, const torch::Tensor& ln_w,
                                                    const torch::Tensor& ln_b, double eps, const torch::Tensor& codes,
                                                    const torch::Tensor& sq, const torch::Tensor& norms,
                                                    const torch::Tensor& bf16, const torch::Tensor& bf16_err,
                                                    const torch::Tensor& i16, const torch::Tensor& i16_meta,
                                                    bool return_y) {
  auto cb = view(codes, sq, norms, bf16, bf16_err, i16, i16_meta);
  check_matrix(deep, "x_deep", cb.d);
  check_matrix(adapter, "adapter_out", cb.d);
  TORCH_CHECK(adapter.size(0) == deep.size(0), "adapter_out has ", adapter.size(0), " rows, x_deep ", deep.size(0));
  if (gate_logits.numel()) {
    check_matrix(gate_logits, "gate_logits", cb.d);
    TORCH_CHECK(gate_logits.size(0) == deep.size(0), "gate_logits rows ", gate_logits.size(0), " != ", deep.size(0));
  }
  for (const auto* t : {&ln_w, &ln_b})
    TORCH_CHECK(t->numel() == cb.d && t->scalar_type() == torch::kFloat32 && t->is_contiguous(),
                "LayerNorm weight/bias must be contiguous float32 of size ", cb.d);
  uniaudio::GateLNParams p{deep.data_ptr<float>(), gate_logits.numel() ? gate_logits.data_ptr<float>() : nullptr,
                           adapter.data_ptr<float>(), ln_w.data_ptr<float>(), ln_b.data_ptr<float>(),
                           static_cast<float>(eps), deep.size(0), cb.d};
  auto tokens = torch::empty({deep.size(0)}, torch::kInt64);
  auto y = return_y ? torch::empty_like(deep) : torch::Tensor();
  uniaudio::gate_ln_vq_cpu(p, cb, tokens.data_ptr<int64_t>(), return_y ? y.data_ptr<float>() : nullptr);
  return {tokens, return_y ? y : torch::empty({0})};
}

#ifdef UNIAUDIO_RT_WITH_CUDA
// CUDA: same contract as vq_argmin / gate_ln_vq, on CUDA tensors (no bf16 screen).
torch::Tensor vq_argmin_gpu(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& sq) {
  check_matrix(codes, "codebook", -1, true);
  check_matrix(x, "x", codes.size(1), true);
  TORCH_CHECK(sq.is_cuda() && sq.numel() == codes.size(0), "sq_norms must be a CUDA tensor of size K");
  uniaudio::CodebookView cb{codes.data_ptr<float>(), sq.data_ptr<float>(), nullptr, nullptr, nullptr, nullptr,
                            codes.size(0), codes.size(1), 0};
  auto tokens = torch::empty({x.size(0)}, x.options().dtype(torch::kInt64));
  auto err = uniaudio::vq_argmin_cuda(x.data_ptr<float>(), x.size(0), cb, tokens.data_ptr<int64_t>(),
                                      c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "vq_argmin_cuda: ", cudaGetErrorString(err));
  return tokens;
}

std::tuple<torch::Tensor, torch::Tensor> gate_ln_vq_gpu(const torch::Tensor& deep, const torch::Tensor& gate_logits,
                                                        const torch::Tensor& adapter, const torch::Tensor& ln_w,
                                                        const torch::Tensor& ln_b, double eps,
                                                        const torch::Tensor& codes, const torch::Tensor& sq,
                                                        bool return_y) {
  check_matrix(codes, "codebook", -1, true);
  const int64_t d = codes.size(1);
  check_matrix(deep, "x_deep", d, true);
  check_matrix(adapter, "adapter_out", d, true);
  TORCH_CHECK(adapter.size(0) == deep.size(0), "adapter_out has ", adapter.size(0), " rows, x_deep ", deep.size(0));
  if (gate_logits.numel()) {
    check_matrix(gate_logits, "gate_logits", d, true);
    TORCH_CHECK(gate_logits.size(0) == deep.size(0), "gate_logits rows ", gate_logits.size(0), " != ", deep.size(0));
  }
  for (const auto* t : {&ln_w, &ln_b})
    TORCH_CHECK(t->is_cuda() && t->numel() == d && t->scalar_type() == torch::kFloat32 && t->is_contiguous(),
                "LayerNorm weight/bias must be contiguous float32 CUDA tensors of size ", d);
  TORCH_CHECK(sq.is_cuda() && sq.numel() == codes.size(0), "sq_norms must be a CUDA tensor of size K");
  uniaudio::CodebookView cb{codes.data_ptr<float>(), sq.data_ptr<float>(), nullptr, nullptr, nullptr, nullptr,
                            codes.size(0), d, 0};
  uniaudio::GateLNParams p{deep.data_ptr<float>(), gate_logits.numel() ? gate_logits.data_ptr<float>() : nullptr,
                           adapter.data_ptr<float>(), ln_w.data_ptr<float>(), ln_b.data_ptr<float>(),
                           static_cast<float>(eps), deep.size(0), d};
  auto tokens = torch::empty({deep.size(0)}, deep.options().dtype(torch::kInt64));
  const bool scratch = uniaudio::gate_ln_vq_cuda_needs_scratch(d);
  auto y = (return_y || scratch) ? torch::empty_like(deep) : torch::Tensor();
  auto err = uniaudio::gate_ln_vq_cuda(p, cb, tokens.data_ptr<int64_t>(), return_y ? y.data_ptr<float>() : nullptr,
                                       scratch ? y.data_ptr<float>() : nullptr, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "gate_ln_vq_cuda: ", cudaGetErrorString(err));
  return {tokens, return_y ? y : torch::empty({0}, deep.options())};
}
#endif

}  // namespace

void register_decoder_ops(pybind11::module& m);  // decoder_ops/decoder_ops_bindings.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "uniaudio-rt native ops";
  m.def("pack_bf16", &pack_bf16, "codebook float32 (K, D) -> (bf16 bits int16 (K, D padded to 32), rounding error norms float32 (K,))");
  m.def("vq_argmin", &vq_argmin, "nearest code per row (CPU)");
  m.def("gate_ln_vq", &gate_ln_vq, "fused SAE gate epilogue + LayerNorm + nearest code (CPU)");
  m.def("pack_i16", &pack_i16, "codebook float32 (K, D) -> (int16 screen codes (K padded to 24, D padded to 32), meta (5, K padded))");
  m.def("vq_cpu_path", &uniaudio::vq_cpu_path, "the CPU search path that runs now");
  m.def("vq_cpu_path_supported", [](const std::string& name) { return uniaudio::vq_cpu_path_supported(name.c_str()); });
  m.def("set_vq_cpu_path", [](const std::string& name) {
    TORCH_CHECK(uniaudio::vq_cpu_path_supported(name.c_str()), "CPU path ", name,
                " is unknown or not supported by this CPU (auto, avx512bf16-screen, avx2-int16-screen, portable)");
    uniaudio::set_vq_cpu_path(name.c_str());
  }, "force a CPU search path ('auto' resets)");
  m.def("vq_cpu_fallback_rows", &uniaudio::vq_cpu_fallback_rows);
  register_decoder_ops(m);
#ifdef UNIAUDIO_RT_WITH_CUDA
  m.def("vq_argmin_gpu", &vq_argmin_gpu, "nearest code per row (CUDA)");
  m.def("gate_ln_vq_gpu", &gate_ln_vq_gpu, "fused SAE gate epilogue + LayerNorm + nearest code (CUDA)");
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
