// Self-test of the torch-free kernel library: every CPU search path this machine supports must give
// the exact nearest code (float64 brute force) on random rows, including codes that differ only
// slightly. Exit status 0 on success. Built by the top-level CMakeLists.txt.
#include <cmath>
#include <cstdio>
#include <random>
#include <string_view>
#include <vector>

#include "fused_gate_vq/fused_gate_vq.h"

namespace {

int check(int64_t n, int64_t k, int64_t d, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> codes(k * d), x(n * d);
  for (auto& v : codes) v = normal(rng);
  for (int64_t c = k / 2; c < k; ++c)  // second half: near-copies of the first half
    for (int64_t i = 0; i < d; ++i) codes[c * d + i] = codes[(c - k / 2) * d + i] + 1e-3f * normal(rng);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < d; ++i) x[r * d + i] = codes[(r % k) * d + i] + 0.05f * normal(rng);
  const int64_t dp = (d + 31) / 32 * 32, kp = uniaudio::i16_padded_codes(k);
  std::vector<float> sq(k), norms(k), meta(5 * kp);
  std::vector<int16_t> packed(kp * dp);
  std::vector<uint16_t> bf16(k * dp);
  std::vector<float> bf16_err(k);
  uniaudio::pack_codebook_bf16(codes.data(), k, d, dp, bf16.data(), bf16_err.data());
  for (int64_t c = 0; c < k; ++c) {
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += double(codes[c * d + i]) * codes[c * d + i];
    sq[c] = float(s);
    norms[c] = float(std::sqrt(s));
  }
  uniaudio::pack_codebook_i16(codes.data(), k, d, dp, packed.data(), meta.data());
  uniaudio::CodebookView cb{codes.data(), sq.data(), norms.data(), bf16.data(), packed.data(), meta.data(), k, d, dp, bf16_err.data()};
  int failures = 0;
  for (const char* path : {"amx-bf16-screen", "avx512bf16-screen", "avx2-int16-screen", "portable"}) {
    if (!uniaudio::vq_cpu_path_supported(path)) continue;
    uniaudio::set_vq_cpu_path(path);
    std::vector<int64_t> tokens(n);
    uniaudio::vq_argmin_cpu(x.data(), n, cb, tokens.data());
    int wrong = 0;
    for (int64_t r = 0; r < n; ++r) {
      int64_t best = 0;
      double best_d = INFINITY;
      for (int64_t c = 0; c < k; ++c) {
        double s = 0;
        for (int64_t i = 0; i < d; ++i) {
          const double t = double(x[r * d + i]) - codes[c * d + i];
          s += t * t;
        }
        if (s < best_d) best_d = s, best = c;
      }
      wrong += tokens[r] != best;
    }
    std::printf("n=%lld k=%lld d=%lld path=%s: %d/%lld rows differ from the float64 brute force\n",
                (long long)n, (long long)k, (long long)d, path, wrong, (long long)n);
    if (std::string_view(path) != "portable") failures += wrong;  // the screens are exact
  }
  uniaudio::set_vq_cpu_path("auto");
  return failures;
}

}  // namespace

int main() {
  int failures = check(100, 256, 384, 1) + check(37, 1000, 1280, 2) + check(5, 7, 20, 3);
  std::printf("%s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
