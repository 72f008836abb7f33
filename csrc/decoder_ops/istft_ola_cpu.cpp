// HiFT iSTFT head + overlap-add, CPU. Frames are synthesised in parallel (inverse real DFT of the
// n_fft/2 + 1 bins, times the window); every output position then gathers the frames that cover it
// (in frame order, after the carried tail) and divides by the window-square envelope.
#include <cmath>
#include <vector>

#include "decoder_ops.h"

namespace uniaudio {

void istft_ola_cpu(const IstftParams& p, float* out, float* new_tail) {
  const int64_t nf = p.n_fft, nb = nf / 2 + 1, F = p.frames, hop = p.hop, tail_len = nf - hop;
  const double two_pi = 6.283185307179586476925286766559;
  std::vector<float> cos_t(nf), sin_t(nf);
  for (int64_t i = 0; i < nf; ++i) {
    cos_t[i] = static_cast<float>(std::cos(two_pi * i / nf));
    sin_t[i] = static_cast<float>(std::sin(two_pi * i / nf));
  }
  std::vector<float> frames(static_cast<size_t>(p.batch * F * nf));
#pragma omp parallel for schedule(static)
  for (int64_t bf = 0; bf < p.batch * F; ++bf) {
    const int64_t b = bf / F, f = bf % F;
    const float* xb = p.x + b * (nf + 2) * F;
    float re[64 + 1], im[64 + 1];  // n_fft <= 128 checked by the binding
    for (int64_t k = 0; k < nb; ++k) {
      const float mag = std::fmin(std::exp(xb[k * F + f]), 100.0f);
      const float ph = std::sin(xb[(nb + k) * F + f]);
      re[k] = mag * std::cos(ph);
      im[k] = mag * std::sin(ph);
    }
    float* fr = frames.data() + bf * nf;
    for (int64_t n = 0; n < nf; ++n) {
      float acc = re[0] + ((n & 1) ? -re[nb - 1] : re[nb - 1]);
      for (int64_t k = 1; k < nb - 1; ++k) {
        const int64_t t = (k * n) % nf;
        acc += 2.0f * (re[k] * cos_t[t] - im[k] * sin_t[t]);
      }
      fr[n] = acc / static_cast<float>(nf) * p.window[n];
    }
  }
  int64_t start, end;
  istft_emit_range(p.frames_before, F, nf, hop, p.is_last, &start, &end);
  const int64_t p0 = p.frames_before * hop, total = p.frames_before + F, n_out = end - start;
  // numerator at local position q (absolute p0 + q): tail, then the frames of this call in order
  auto numerator = [&](int64_t b, int64_t q) {
    float acc = q < tail_len ? p.tail[b * tail_len + q] : 0.0f;
    const int64_t f_hi = std::min(q / hop, F - 1);
    int64_t f_lo = q - nf + 1 <= 0 ? 0 : (q - nf + hop) / hop;
    for (int64_t f = f_lo; f <= f_hi; ++f) acc += frames[(b * F + f) * nf + (q - f * hop)];
    return acc;
  };
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < p.batch * (n_out + tail_len); ++i) {
    const int64_t b = i / (n_out + tail_len), j = i % (n_out + tail_len);
    if (j < n_out) {
      const int64_t pos = start + j;
      float env = 0.0f;
      for (int64_t f = pos / hop; f >= 0 && pos - f * hop < nf; --f)
        if (f < total) env += p.window[pos - f * hop] * p.window[pos - f * hop];
      const float num = numerator(b, pos - p0);
      out[b * n_out + j] = env > 1e-11f ? num / env : 0.0f;
    } else {
      new_tail[b * tail_len + (j - n_out)] = numerator(b, F * hop + (j - n_out));
    }
  }
}

}  // namespace uniaudio
