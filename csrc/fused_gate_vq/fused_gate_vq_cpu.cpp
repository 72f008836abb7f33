// CPU kernels: fused SAE gate epilogue + LayerNorm + nearest-code search.
//
// Nearest-code search, four paths chosen at run time (the fastest the CPU supports):
//  * amx-bf16-screen (AMX-BF16 tiles, Sapphire Rapids and later): the same bf16 screen and bound as
//    below, but the dot products run as 16 x 16 x 32 tile multiply-adds (tdpbf16ps) on blocks of
//    32 codes x 32 rows; rows are packed into the tile layout once per chunk and the codebook's bf16
//    copy is read as it is. The bound arithmetic runs 16 rows at a time in AVX-512.
//  * avx512bf16-screen (AVX-512 BF16): distances are first screened with bf16 dot products
//    (vdpbf16ps, twice the fp32 FMA rate). For row x and code c the screened distance
//    d~ = ||c||^2 - 2 x~.c~ is within m = 2 (||x - x~|| ||c|| + ||x~|| ||c - c~||) of the exact one
//    (the measured bf16 rounding errors of both operands), plus (d + 8) 2^-24 (||c~||^2 + 2 ||x~||
//    ||c~||) for the fp32 accumulation and the rounding of ||c||^2 and of the subtraction (Bf16Bound).
//  * avx2-int16-screen (AVX2): rows and codes are quantized per vector to 12-bit integers
//    (x ~ s q, |q| <= 2047) and screened with exact integer dot products (vpmaddwd, twice the fp32
//    FMA rate; the int32 sums cannot overflow for d <= 4096). With x^ = s_x q_x, c^ = s_c q_c:
//    |x.c - x^.c^| <= ||x^|| ||c - c^|| + ||x - x^|| ||c|| (Cauchy-Schwarz), plus float rounding of
//    the integer sum, the scale product, ||c||^2 and the subtraction (a few 2^-24 relative).
//  In every screen each code whose lower bound d~ - m is not above the smallest upper bound d~ + m
//  is re-scored exactly (double), so the result is the exact nearest code; usually one or two codes
//  per row are re-scored. Rows with more than kMaxCandidates candidates fall back to an exact scan.
//  * portable: one fp32 pass, d = ||c||^2 - 2 x.c, running minimum.
// Rows are split over OpenMP threads in chunks (one per thread for AMX); codes are visited in tiles
// that stay in L2.
#include "fused_gate_vq.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <immintrin.h>
#define UNIAUDIO_X86 1
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace uniaudio {
namespace {

constexpr int64_t kChunkRows = 64;   // rows per OpenMP work item (bf16 rows stay in L2)
constexpr int64_t kTileCodes = 64;   // codes per tile
constexpr size_t kMaxCandidates = 128;
constexpr int64_t kAmxMinRows = 8;  // smaller automatic calls take the int16 screen

enum class Path : int { kAuto = 0, kBf16 = 1, kI16 = 2, kPortable = 3, kAmx = 4 };
std::atomic<int> g_forced_path{static_cast<int>(Path::kAuto)};
std::atomic<int64_t> g_fallback_rows{0};

bool cpu_has_avx512bf16() {
#ifdef UNIAUDIO_X86
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512bf16");
  return ok;
#else
  return false;
#endif
}

bool cpu_has_avx2() {
#ifdef UNIAUDIO_X86
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

bool cpu_has_avx512f() {
#ifdef UNIAUDIO_X86
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
#else
  return false;
#endif
}

// AMX-BF16 needs the CPU feature bits, the OS enabling tile state in XCR0, and (Linux) the process's
// permission to use tile data, requested once.
bool cpu_has_amx_bf16() {
#if defined(UNIAUDIO_X86) && defined(__linux__)
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool amx_bf16 = (d >> 22) & 1u, amx_tile = (d >> 24) & 1u;
    if (!amx_bf16 || !amx_tile || !cpu_has_avx512bf16()) return false;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1u)) return false;  // OSXSAVE
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if (((lo >> 17) & 3u) != 3u) return false;  // XTILECFG and XTILEDATA enabled by the OS
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

bool path_supported(Path p) {
  switch (p) {
    case Path::kAmx: return cpu_has_amx_bf16();
    case Path::kBf16: return cpu_has_avx512bf16();
    case Path::kI16: return cpu_has_avx2();
    default: return true;
  }
}

Path active_path() {
  const Path forced = static_cast<Path>(g_forced_path.load());
  if (forced != Path::kAuto) return forced;
  if (cpu_has_amx_bf16()) return Path::kAmx;
  if (cpu_has_avx512bf16()) return Path::kBf16;
  if (cpu_has_avx2()) return Path::kI16;
  return Path::kPortable;
}

const char* path_name(Path p) {
  switch (p) {
    case Path::kAmx: return "amx-bf16-screen";
    case Path::kBf16: return "avx512bf16-screen";
    case Path::kI16: return "avx2-int16-screen";
    case Path::kPortable: return "portable";
    default: return "auto";
  }
}

bool simd_epilogue() { return static_cast<Path>(g_forced_path.load()) != Path::kPortable; }

// ---------------------------------------------------------------- gate epilogue + LayerNorm
// v = deep + sigmoid(gate_logits) * adapter, written to out (the scalar path; see the AVX-512 one).
void gate_combine_scalar(const float* deep, const float* gl, const float* a, int64_t d, float* out) {
  for (int64_t i = 0; i < d; ++i) {
    const float g = gl ? 1.0f / (1.0f + std::exp(-gl[i])) : 1.0f;
    out[i] = deep[i] + g * a[i];
  }
}

#ifdef UNIAUDIO_X86
// exp(x) for |x| < 88: 2^n * p(r), x = n ln2 + r, |r| <= ln2 / 2, degree-6 Taylor polynomial
// (relative error < 2e-7), so sigmoid matches 1 / (1 + expf(-x)) to a few float ulps.
__attribute__((target("avx512f"))) inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);   // ln2 split in two parts
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx512f")))
void gate_combine_avx512(const float* deep, const float* gl, const float* a, int64_t d, float* out) {
  int64_t i = 0;
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= d; i += 16) {
    __m512 av = _mm512_loadu_ps(a + i);
    if (gl) {
      const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_loadu_ps(gl + i)));
      av = _mm512_div_ps(av, _mm512_add_ps(one, e));
    }
    _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(deep + i), av));
  }
  gate_combine_scalar(deep + i, gl ? gl + i : nullptr, a + i, d - i, out + i);
}

// The same for AVX2 + FMA (2^n built from the exponent bits; n in [-127, 127] after the clamp).
__attribute__((target("avx2,fma"))) inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma")))
void gate_combine_avx2(const float* deep, const float* gl, const float* a, int64_t d, float* out) {
  int64_t i = 0;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= d; i += 8) {
    __m256 av = _mm256_loadu_ps(a + i);
    if (gl) {
      const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(gl + i)));
      av = _mm256_div_ps(av, _mm256_add_ps(one, e));
    }
    _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(deep + i), av));
  }
  gate_combine_scalar(deep + i, gl ? gl + i : nullptr, a + i, d - i, out + i);
}
#endif

void gate_ln_row(const GateLNParams& p, int64_t r, float* out) {
  const int64_t d = p.d;
  const float* gl = p.gate_logits ? p.gate_logits + r * d : nullptr;
#ifdef UNIAUDIO_X86
  if (cpu_has_avx512f() && simd_epilogue())
    gate_combine_avx512(p.deep + r * d, gl, p.adapter + r * d, d, out);
  else if (cpu_has_avx2() && simd_epilogue())
    gate_combine_avx2(p.deep + r * d, gl, p.adapter + r * d, d, out);
  else
#endif
    gate_combine_scalar(p.deep + r * d, gl, p.adapter + r * d, d, out);
  // mean and variance with 16 float partial sums (vectorisable), finished in double
  float s[16] = {0}, q[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= d; i += 16)
    for (int j = 0; j < 16; ++j) s[j] += out[i + j];
  double sum = 0.0;
  for (int j = 0; j < 16; ++j) sum += s[j];
  for (; i < d; ++i) sum += out[i];
  const float mean = static_cast<float>(sum / d);
  for (i = 0; i + 16 <= d; i += 16)
    for (int j = 0; j < 16; ++j) {
      const float t = out[i + j] - mean;
      q[j] += t * t;
    }
  double var = 0.0;
  for (int j = 0; j < 16; ++j) var += q[j];
  for (; i < d; ++i) var += static_cast<double>(out[i] - mean) * (out[i] - mean);
  const float inv = static_cast<float>(1.0 / std::sqrt(var / d + p.eps));
  for (i = 0; i < d; ++i) out[i] = (out[i] - mean) * inv * p.ln_w[i] + p.ln_b[i];
}

// ---------------------------------------------------------------- exact helpers
float bf16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// sum_i (x_i - y_i)^2 in float64 (exact products of floats, double accumulation). y is read through
// a small view: another float row (distances), bf16 bits (rounding errors) or nothing (norms).
struct FloatRow {
  const float* p;
  float at(int64_t i) const { return p[i]; }
#ifdef UNIAUDIO_X86
  __attribute__((target("avx512f"))) __m512 at16(int64_t i) const { return _mm512_loadu_ps(p + i); }
#endif
};
struct Bf16Row {
  const uint16_t* p;
  float at(int64_t i) const { return bf16_to_float(p[i]); }
#ifdef UNIAUDIO_X86
  __attribute__((target("avx512f"))) __m512 at16(int64_t i) const {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
  }
#endif
};
struct ZeroRow {
  float at(int64_t) const { return 0.0f; }
#ifdef UNIAUDIO_X86
  __attribute__((target("avx512f"))) __m512 at16(int64_t) const { return _mm512_setzero_ps(); }
#endif
};

template <class Row>
double sq_diff_scalar(const float* x, Row y, int64_t d) {
  double s = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    const double t = static_cast<double>(x[i]) - y.at(i);
    s += t * t;
  }
  return s;
}

#ifdef UNIAUDIO_X86
template <class Row>
__attribute__((target("avx512f"))) double sq_diff_avx512(const float* x, Row y, int64_t d) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i), yv = y.at16(i);
    const __m512d t0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(xv)),
                                     _mm512_cvtps_pd(_mm512_castps512_ps256(yv)));
    const __m512d t1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xv), 1))),
                                     _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(yv), 1))));
    s0 = _mm512_fmadd_pd(t0, t0, s0);
    s1 = _mm512_fmadd_pd(t1, t1, s1);
  }
  double tail = 0.0;
  for (; i < d; ++i) {
    const double t = static_cast<double>(x[i]) - y.at(i);
    tail += t * t;
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1)) + tail;
}
#endif

template <class Row>
double sq_diff(const float* x, Row y, int64_t d) {
#ifdef UNIAUDIO_X86
  if (cpu_has_avx512f()) return sq_diff_avx512(x, y, d);
#endif
  return sq_diff_scalar(x, y, d);
}

double exact_distance(const float* x, const float* c, int64_t d) { return sq_diff(x, FloatRow{c}, d); }
double exact_sq_norm(const float* x, int64_t d) { return sq_diff(x, ZeroRow{}, d); }
// ||x - x~||^2 for x~ given as bf16 bits.
double bf16_sq_error(const float* x, const uint16_t* xb, int64_t d) { return sq_diff(x, Bf16Row{xb}, d); }

// Portable fp32 scan of `rows` rows (lowest index wins ties).
void argmin_portable(const float* x, int64_t rows, const CodebookView& cb, int64_t* out) {
  const int64_t d = cb.d;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float best = std::numeric_limits<float>::infinity();
    int64_t best_k = 0;
    for (int64_t k = 0; k < cb.k; ++k) {
      const float* c = cb.codes + k * d;
      float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t i = 0;
      for (; i + 8 <= d; i += 8)
        for (int j = 0; j < 8; ++j) s[j] += xr[i + j] * c[i + j];
      float dot = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
      for (; i < d; ++i) dot += xr[i] * c[i];
      const float dist = cb.sq_norms[k] - 2.0f * dot;
      if (dist < best) {
        best = dist;
        best_k = k;
      }
    }
    out[r] = best_k;
  }
}

// ---------------------------------------------------------------- screen bookkeeping
// Per row: the smallest upper bound seen and the codes whose lower bound is not above it.
struct RowState {
  float upper = std::numeric_limits<float>::infinity();
  std::vector<std::pair<float, int64_t>> cand;  // (lower bound, code), in increasing code order
  bool overflow = false;

  inline void consider(float approx, float m, int64_t code) {
    const float lower = approx - m, up = approx + m;
    if (up < upper) upper = up;
    if (lower <= upper) add(lower, code);
  }

  // A code whose lower bound is not above the current upper bound.
  inline void add(float lower, int64_t code) {
    if (overflow) return;
    if (cand.size() == kMaxCandidates) {  // prune by the current upper bound
      const float u = upper;
      cand.erase(std::remove_if(cand.begin(), cand.end(),
                                [u](const std::pair<float, int64_t>& c) { return c.first > u; }),
                 cand.end());
      if (cand.size() == kMaxCandidates) {
        overflow = true;
        return;
      }
    }
    cand.emplace_back(lower, code);
  }
};

// Exact re-scoring of the surviving candidates (or an exact scan after an overflow).
void finish_rows(const float* x, int64_t rows, const CodebookView& cb, std::vector<RowState>& st, int64_t* out) {
  const int64_t d = cb.d;
  for (int64_t r = 0; r < rows; ++r) {
    RowState& s = st[r];
    if (s.overflow) {
      g_fallback_rows.fetch_add(1);
      argmin_portable(x + r * d, 1, cb, out + r);
      continue;
    }
    double best = std::numeric_limits<double>::infinity();
    int64_t best_k = 0;
    for (const auto& c : s.cand) {
      if (c.first > s.upper) continue;
      const double dist = exact_distance(x + r * d, cb.codes + c.second * d, d);
      if (dist < best || (dist == best && c.second < best_k)) {
        best = dist;
        best_k = c.second;
      }
    }
    out[r] = best_k;
  }
}

#ifdef UNIAUDIO_X86
// ---------------------------------------------------------------- AVX-512 BF16 screen

__attribute__((target("avx512f,avx512bw,avx512bf16")))
void to_bf16_rows(const float* x, int64_t rows, int64_t d, int64_t d_pad, uint16_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = x + r * d;
    uint16_t* dst = out + r * d_pad;
    for (int64_t i = 0; i < d_pad; i += 32) {
      const int64_t left = d - i;
      const __mmask16 lo_m = left >= 16 ? 0xFFFF : (left > 0 ? static_cast<__mmask16>((1u << left) - 1) : 0);
      const __mmask16 hi_m = left >= 32 ? 0xFFFF : (left > 16 ? static_cast<__mmask16>((1u << (left - 16)) - 1) : 0);
      const __m512 lo = _mm512_maskz_loadu_ps(lo_m, src + i);
      const __m512 hi = _mm512_maskz_loadu_ps(hi_m, src + i + 16);
      const __m512bh v = _mm512_cvtne2ps_pbh(hi, lo);
      _mm512_storeu_si512(reinterpret_cast<void*>(dst + i), reinterpret_cast<__m512i>(v));
    }
  }
}

// 4 rows x 4 codes of bf16 dot products (rows/codes given by pointers, d_pad elements each).
__attribute__((target("avx512f,avx512bw,avx512bf16")))
inline void dot4x4(const uint16_t* const* xr, const uint16_t* const* cr, int64_t d_pad, float out[4][4]) {
  __m512 acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t t = 0; t < d_pad; t += 32) {
    __m512bh a[4], b[4];
    for (int i = 0; i < 4; ++i) a[i] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(xr[i] + t));
    for (int j = 0; j < 4; ++j) b[j] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(cr[j] + t));
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], a[i], b[j]);
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) out[i][j] = _mm512_reduce_add_ps(acc[i][j]);
}

// Error bound of a bf16-screened distance d~ = ||c||^2 - 2 x~.c~ (x~, c~ the bf16 roundings, the
// products accumulated in fp32). With e_x = x - x~ and e_c = c - c~, x.c - x~.c~ = e_x.c + x~.e_c, so
//   |d~ - d| <= m = 2 (||e_x|| ||c|| + ||x~|| ||e_c||) + beta (||c~||^2 + 2 ||x~|| ||c~||)
// where beta = (d + 8) 2^-24 covers the fp32 accumulation of d products, the rounding of ||c||^2 and
// of the subtraction; plus tiny terms for bf16/fp32 values flushed to zero (denormals). The norms
// enter as upper bounds: ||x~|| <= xt = ||x|| + ||e_x||, ||c~|| <= ct = ||c|| + ||e_c||. ||e_c|| is
// measured when the codebook is packed (or bounded by 2^-8 ||c||), ||e_x|| per row, so the bound
// follows the actual rounding (about half the worst case), and m = ex p1_c + xt p2_c + p3_c.
struct Bf16Bound {
  static constexpr float slack = 1.0f + 1e-5f;  // the fp32 arithmetic of the bound itself
  std::vector<float> p1, p2, p3;
  explicit Bf16Bound(const CodebookView& cb) : p1(cb.k), p2(cb.k), p3(cb.k) {
    const float beta = static_cast<float>(cb.d + 8) * std::ldexp(1.0f, -24);
    const float tiny_lin = std::ldexp(2.0f, -125) * std::sqrt(static_cast<float>(cb.d));
    const float tiny_abs = std::ldexp(2.0f, -125) * static_cast<float>(cb.d);
    for (int64_t c = 0; c < cb.k; ++c) {
      const float cn = cb.norms[c];
      const float ec = cb.bf16_err ? cb.bf16_err[c] : std::ldexp(cn, -8) * slack;
      const float ct = cn + ec;
      p1[c] = 2.0f * cn * slack;
      p2[c] = (2.0f * ec + 2.0f * beta * ct) * slack + tiny_lin;
      p3[c] = beta * ct * ct * slack + tiny_lin * ct + tiny_abs;
    }
  }
  // Per row: ex = ||x - x~|| and xt = ||x|| + ex, both rounded up (x~: bf16 bits, d_pad per row).
  static void rows(const float* x, const uint16_t* xb, int64_t rows, int64_t d, int64_t dp, float* ex, float* xt) {
    for (int64_t r = 0; r < rows; ++r) {
      const double n2 = exact_sq_norm(x + r * d, d);
      const double e2 = bf16_sq_error(x + r * d, xb + r * dp, d);
      ex[r] = static_cast<float>(std::sqrt(e2)) * slack;
      xt[r] = (static_cast<float>(std::sqrt(n2)) + ex[r]) * slack;
    }
  }
  float margin(float ex, float xt, int64_t c) const { return ex * p1[c] + xt * p2[c] + p3[c]; }
};

__attribute__((target("avx512f,avx512bw,avx512bf16")))
void argmin_bf16_screen(const float* x, int64_t rows, const CodebookView& cb, int64_t* out) {
  const int64_t d = cb.d, dp = cb.d_pad, K = cb.k;
  std::vector<uint16_t> xb(static_cast<size_t>(rows * dp));
  to_bf16_rows(x, rows, d, dp, xb.data());
  const Bf16Bound bound(cb);
  std::vector<float> ex(rows), xt(rows);
  Bf16Bound::rows(x, xb.data(), rows, d, dp, ex.data(), xt.data());
  std::vector<RowState> st(rows);
  for (auto& s : st) s.cand.reserve(kMaxCandidates);
  float dots[4][4];
  for (int64_t k0 = 0; k0 < K; k0 += kTileCodes) {
    const int64_t k1 = std::min(K, k0 + kTileCodes);
    for (int64_t r0 = 0; r0 < rows; r0 += 4) {
      const uint16_t* xr[4];
      for (int i = 0; i < 4; ++i) xr[i] = xb.data() + std::min(r0 + i, rows - 1) * dp;
      for (int64_t k = k0; k < k1; k += 4) {
        const uint16_t* cr[4];
        for (int j = 0; j < 4; ++j) cr[j] = cb.codes_bf16 + std::min(k + j, K - 1) * dp;
        dot4x4(xr, cr, dp, dots);
        for (int i = 0; i < 4 && r0 + i < rows; ++i) {
          RowState& s = st[r0 + i];
          for (int j = 0; j < 4 && k + j < k1; ++j) {
            const int64_t code = k + j;
            s.consider(cb.sq_norms[code] - 2.0f * dots[i][j], bound.margin(ex[r0 + i], xt[r0 + i], code), code);
          }
        }
      }
    }
  }
  finish_rows(x, rows, cb, st, out);
}

// ---------------------------------------------------------------- AMX-BF16 screen
// Tile registers: tmm0-3 accumulate a 32-code x 32-row block (fp32, [code][row]), tmm4/5 hold 16
// codes x 32 dimensions each (A: the codebook's row-major bf16 copy), tmm6/7 hold 32 dimensions of
// 16 rows each in the pair-interleaved layout tdpbf16ps expects for its second operand (B).
struct alignas(64) AmxTileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Screen one 16-code x 16-row tile of dot products (c[m][n] = code c0 + m . row r0 + n): update the
// rows' upper bounds and keep the codes whose lower bound is not above them.
__attribute__((target("avx512f,avx512bw,avx512bf16")))
void amx_screen_tile(const float (*c)[16], int64_t c0, int64_t r0, int64_t rows, const CodebookView& cb,
                     const Bf16Bound& bound, const float* ex, const float* xt, float* upper, std::vector<RowState>& st) {
  const int ncodes = static_cast<int>(std::min<int64_t>(16, cb.k - c0));
  if (ncodes <= 0 || r0 >= rows) return;
  const __mmask16 valid = rows - r0 >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (rows - r0)) - 1);
  const __m512 exv = _mm512_loadu_ps(ex + r0), xtv = _mm512_loadu_ps(xt + r0), two = _mm512_set1_ps(2.0f);
  __m512 up = _mm512_loadu_ps(upper + r0);
  __m512 low[16];
  for (int m = 0; m < ncodes; ++m) {
    const int64_t code = c0 + m;
    const __m512 approx = _mm512_fnmadd_ps(two, _mm512_loadu_ps(c[m]), _mm512_set1_ps(cb.sq_norms[code]));
    const __m512 mrg = _mm512_fmadd_ps(exv, _mm512_set1_ps(bound.p1[code]),
                                       _mm512_fmadd_ps(xtv, _mm512_set1_ps(bound.p2[code]), _mm512_set1_ps(bound.p3[code])));
    low[m] = _mm512_sub_ps(approx, mrg);
    up = _mm512_min_ps(up, _mm512_add_ps(approx, mrg));
  }
  _mm512_storeu_ps(upper + r0, up);
  alignas(64) float lows[16];
  for (int m = 0; m < ncodes; ++m) {
    unsigned mask = _mm512_mask_cmp_ps_mask(valid, low[m], up, _CMP_LE_OQ);
    if (!mask) continue;
    _mm512_store_ps(lows, low[m]);
    while (mask) {
      const int n = __builtin_ctz(mask);
      mask &= mask - 1;
      RowState& s = st[r0 + n];
      s.upper = upper[r0 + n];
      s.add(lows[n], c0 + m);
    }
  }
}

__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")))
void argmin_amx_screen(const float* x, int64_t rows, const CodebookView& cb, int64_t* out) {
  const int64_t d = cb.d, dp = cb.d_pad, K = cb.k, pairs = dp / 2, steps = dp / 32;
  const int64_t rp = (rows + 31) / 32 * 32;
  // rows -> bf16, then per group of 16 rows [pair][row][2] (one 32-bit pair per row and pair index)
  std::vector<uint16_t> xb(static_cast<size_t>(rows * dp));
  to_bf16_rows(x, rows, d, dp, xb.data());
  std::vector<uint32_t> xv(static_cast<size_t>(rp * pairs), 0u);
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* src = xb.data() + r * dp;
    uint32_t* dst = xv.data() + (r / 16) * pairs * 16 + (r % 16);
    for (int64_t p = 0; p < pairs; ++p) {
      uint32_t v;
      std::memcpy(&v, src + 2 * p, 4);
      dst[p * 16] = v;
    }
  }
  const Bf16Bound bound(cb);
  std::vector<float> ex(static_cast<size_t>(rp), 0.0f), xt(static_cast<size_t>(rp), 0.0f);
  std::vector<float> upper(static_cast<size_t>(rp), std::numeric_limits<float>::infinity());
  Bf16Bound::rows(x, xb.data(), rows, d, dp, ex.data(), xt.data());
  std::vector<RowState> st(rows);
  for (auto& s : st) s.cand.reserve(kMaxCandidates);
  std::vector<uint16_t> tail;  // the last block of codes, zero-padded to 32
  AmxTileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  alignas(64) float acc[4][16][16];
  const int64_t a_stride = dp * 2;
  for (int64_t c0 = 0; c0 < K; c0 += 32) {
    const uint16_t* a = cb.codes_bf16 + c0 * dp;
    if (c0 + 32 > K) {
      tail.assign(static_cast<size_t>(32 * dp), 0);
      std::memcpy(tail.data(), a, static_cast<size_t>((K - c0) * dp) * sizeof(uint16_t));
      a = tail.data();
    }
    for (int64_t r0 = 0; r0 < rp; r0 += 32) {
      const uint32_t* b0 = xv.data() + (r0 / 16) * pairs * 16;
      const uint32_t* b1 = b0 + pairs * 16;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t t = 0; t < steps; ++t) {
        _tile_loadd(4, a + t * 32, a_stride);
        _tile_loadd(5, a + 16 * dp + t * 32, a_stride);
        _tile_loadd(6, b0 + t * 256, 64);
        _tile_loadd(7, b1 + t * 256, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 5, 6);
        _tile_dpbf16ps(2, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, acc[0], 64);
      _tile_stored(1, acc[1], 64);
      _tile_stored(2, acc[2], 64);
      _tile_stored(3, acc[3], 64);
      amx_screen_tile(acc[0], c0, r0, rows, cb, bound, ex.data(), xt.data(), upper.data(), st);
      amx_screen_tile(acc[1], c0 + 16, r0, rows, cb, bound, ex.data(), xt.data(), upper.data(), st);
      amx_screen_tile(acc[2], c0, r0 + 16, rows, cb, bound, ex.data(), xt.data(), upper.data(), st);
      amx_screen_tile(acc[3], c0 + 16, r0 + 16, rows, cb, bound, ex.data(), xt.data(), upper.data(), st);
    }
  }
  _tile_release();
  for (int64_t r = 0; r < rows; ++r) st[r].upper = upper[r];
  finish_rows(x, rows, cb, st, out);
}

// ---------------------------------------------------------------- AVX2 int16 screen
// 4 rows x 24 codes (3 packed groups of 8). Each step broadcasts one pair of a row's dimensions and
// multiplies it with the same pair of 8 codes (vpmaddwd): the accumulators hold 8 codes' dot
// products each, so no horizontal sums are needed.
__attribute__((target("avx2,fma")))
inline void idot4x24(const int16_t* const* xr, const int16_t* g0, int64_t group_stride, int64_t pairs,
                     __m256i acc[4][3]) {
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) acc[i][j] = _mm256_setzero_si256();
  const int16_t* g1 = g0 + group_stride;
  const int16_t* g2 = g1 + group_stride;
  for (int64_t p = 0; p < pairs; ++p) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g0 + p * 16));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g1 + p * 16));
    const __m256i b2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g2 + p * 16));
    for (int i = 0; i < 4; ++i) {
      int32_t pair;
      std::memcpy(&pair, xr[i] + 2 * p, 4);
      const __m256i a = _mm256_set1_epi32(pair);
      acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(a, b0));
      acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(a, b1));
      acc[i][2] = _mm256_add_epi32(acc[i][2], _mm256_madd_epi16(a, b2));
    }
  }
}

__attribute__((target("avx2,fma"))) inline float hmin256(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,fma")))
void argmin_i16_screen(const float* x, int64_t rows, const CodebookView& cb, int64_t* out) {
  constexpr int64_t kTile = 72;  // codes per tile (multiple of 24)
  const int64_t d = cb.d, dp = cb.d_pad, K = cb.k, Kp = i16_padded_codes(cb.k), pairs = dp / 2;
  const int64_t group_stride = dp * 8;
  std::vector<int16_t> xq(static_cast<size_t>(rows * dp));
  std::vector<float> xm(static_cast<size_t>(rows * 3));
  quantize_i16_rows(x, rows, d, dp, xq.data(), xm.data());
  const float* sc = cb.i16_meta;           // code scale
  const float* ec = cb.i16_meta + Kp;      // ||c - c^||
  const float* qc = cb.i16_meta + 2 * Kp;  // ||c^||
  const float* sq = cb.i16_meta + 3 * Kp;  // ||c||^2 (inf for padding codes)
  const float* nc = cb.i16_meta + 4 * Kp;  // ||c||
  // float rounding of the int32 -> float conversion, the scale product and the distance arithmetic
  const __m256 eps = _mm256_set1_ps(16.0f * std::ldexp(1.0f, -24));
  const __m256 slack = _mm256_set1_ps(1.0f + 1e-5f), two = _mm256_set1_ps(2.0f);
  std::vector<RowState> st(rows);
  for (auto& s : st) s.cand.reserve(kMaxCandidates);
  __m256i acc[4][3];
  alignas(32) float low[8];
  for (int64_t k0 = 0; k0 < Kp; k0 += kTile) {
    const int64_t k1 = std::min(Kp, k0 + kTile);
    for (int64_t r0 = 0; r0 < rows; r0 += 4) {
      const int16_t* xr[4];
      for (int i = 0; i < 4; ++i) xr[i] = xq.data() + std::min(r0 + i, rows - 1) * dp;
      for (int64_t k = k0; k < k1; k += 24) {
        idot4x24(xr, cb.codes_i16 + (k / 8) * group_stride, group_stride, pairs, acc);
        __m256 vsc[3], vec[3], vqc[3], vsq[3], vnc[3];
        for (int j = 0; j < 3; ++j) {
          vsc[j] = _mm256_loadu_ps(sc + k + 8 * j);
          vec[j] = _mm256_loadu_ps(ec + k + 8 * j);
          vqc[j] = _mm256_loadu_ps(qc + k + 8 * j);
          vsq[j] = _mm256_loadu_ps(sq + k + 8 * j);
          vnc[j] = _mm256_loadu_ps(nc + k + 8 * j);
        }
        for (int i = 0; i < 4 && r0 + i < rows; ++i) {
          const float* mx = xm.data() + (r0 + i) * 3;  // scale, ||x - x^||, ||x^||
          const __m256 sx = _mm256_set1_ps(mx[0]), ex = _mm256_set1_ps(mx[1]), qx = _mm256_set1_ps(mx[2]);
          __m256 lower[3], upper_min = _mm256_set1_ps(std::numeric_limits<float>::infinity());
          for (int j = 0; j < 3; ++j) {
            const __m256 dot = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][j]), _mm256_mul_ps(sx, vsc[j]));
            const __m256 approx = _mm256_fnmadd_ps(two, dot, vsq[j]);
            // 2 (||x^|| ||c - c^|| + ||x - x^|| ||c||) + eps (||c||^2 + 2 ||x^|| ||c^||)
            __m256 m = _mm256_mul_ps(two, _mm256_fmadd_ps(qx, vec[j], _mm256_mul_ps(ex, vnc[j])));
            m = _mm256_fmadd_ps(eps, _mm256_fmadd_ps(vnc[j], vnc[j], _mm256_mul_ps(two, _mm256_mul_ps(qx, vqc[j]))), m);
            m = _mm256_mul_ps(m, slack);
            lower[j] = _mm256_sub_ps(approx, m);
            upper_min = _mm256_min_ps(upper_min, _mm256_add_ps(approx, m));
          }
          RowState& s = st[r0 + i];
          s.upper = std::min(s.upper, hmin256(upper_min));
          const __m256 u = _mm256_set1_ps(s.upper);
          for (int j = 0; j < 3; ++j) {
            int mask = _mm256_movemask_ps(_mm256_cmp_ps(lower[j], u, _CMP_LE_OQ));
            if (!mask) continue;
            _mm256_store_ps(low, lower[j]);
            while (mask) {
              const int lane = __builtin_ctz(mask);
              mask &= mask - 1;
              const int64_t code = k + 8 * j + lane;
              if (code < K) s.add(low[lane], code);
            }
          }
        }
      }
    }
  }
  finish_rows(x, rows, cb, st, out);
}
#endif

void argmin_rows(const float* x, int64_t rows, const CodebookView& cb, int64_t* out) {
#ifdef UNIAUDIO_X86
  Path p = active_path();
  // Chosen automatically, the AMX screen hands calls of a few rows (its blocks are 32 rows, and the
  // tile unit's start-up shows on a 0.1 ms call) to the int16 screen; forced, it runs for any size.
  if (p == Path::kAmx && rows < kAmxMinRows && static_cast<Path>(g_forced_path.load()) == Path::kAuto &&
      cb.codes_i16 != nullptr && cb.d <= kI16MaxDim)
    p = Path::kI16;
  if (p == Path::kAmx && cb.codes_bf16 != nullptr && cpu_has_amx_bf16()) {
    argmin_amx_screen(x, rows, cb, out);
    return;
  }
  if (p == Path::kBf16 && cb.codes_bf16 != nullptr && cpu_has_avx512bf16()) {
    argmin_bf16_screen(x, rows, cb, out);
    return;
  }
  if (p == Path::kI16 && cb.codes_i16 != nullptr && cb.d <= kI16MaxDim && cpu_has_avx2()) {
    argmin_i16_screen(x, rows, cb, out);
    return;
  }
#endif
  argmin_portable(x, rows, cb, out);
}

}  // namespace

void quantize_i16_rows(const float* x, int64_t n, int64_t d, int64_t d_pad, int16_t* q, float* meta) {
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * d;
    int16_t* qr = q + r * d_pad;
    float amax = 0.0f;
    for (int64_t i = 0; i < d; ++i) amax = std::max(amax, std::fabs(xr[i]));
    const float qmax = static_cast<float>(i16_qmax(d_pad));
    const float scale = (amax > 0.0f && std::isfinite(amax)) ? amax / qmax : 1.0f;
    double err = 0.0, qn = 0.0;
    for (int64_t i = 0; i < d; ++i) {
      float v = std::nearbyint(xr[i] / scale);
      v = std::isfinite(v) ? std::min(std::max(v, -qmax), qmax) : 0.0f;
      qr[i] = static_cast<int16_t>(v);
      const double back = static_cast<double>(scale) * v;
      err += (xr[i] - back) * (xr[i] - back);
      qn += back * back;
    }
    for (int64_t i = d; i < d_pad; ++i) qr[i] = 0;
    meta[r * 3 + 0] = scale;  // the norms are bounds: rounded up a little
    meta[r * 3 + 1] = static_cast<float>(std::sqrt(err) * (1.0 + 1e-6));
    meta[r * 3 + 2] = static_cast<float>(std::sqrt(qn) * (1.0 + 1e-6));
  }
}

void pack_codebook_bf16(const float* codes, int64_t k, int64_t d, int64_t d_pad, uint16_t* out, float* err) {
  for (int64_t r = 0; r < k; ++r) {
    for (int64_t i = 0; i < d; ++i) {
      uint32_t bits;
      std::memcpy(&bits, codes + r * d + i, 4);
      if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu)) {
        out[r * d_pad + i] = static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
      } else {
        out[r * d_pad + i] = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
      }
    }
    for (int64_t i = d; i < d_pad; ++i) out[r * d_pad + i] = 0;
    if (err) err[r] = static_cast<float>(std::sqrt(bf16_sq_error(codes + r * d, out + r * d_pad, d)) * (1.0 + 1e-6));
  }
}

int32_t i16_qmax(int64_t d_pad) {
  const double q = std::floor(std::sqrt(2147483647.0 / static_cast<double>(std::max<int64_t>(d_pad, 1))));
  return static_cast<int32_t>(std::min(2047.0, q));
}

int64_t i16_padded_codes(int64_t k) { return (k + 23) / 24 * 24; }

void pack_codebook_i16(const float* codes, int64_t k, int64_t d, int64_t d_pad, int16_t* packed, float* meta) {
  const int64_t kp = i16_padded_codes(k);
  std::vector<int16_t> q(static_cast<size_t>(d_pad));
  float m[3];
  for (int64_t c = 0; c < kp; ++c) {
    if (c < k) {
      quantize_i16_rows(codes + c * d, 1, d, d_pad, q.data(), m);
    } else {
      std::fill(q.begin(), q.end(), 0);
      m[0] = m[1] = m[2] = 0.0f;
    }
    int16_t* g = packed + (c / 8) * d_pad * 8;
    const int64_t lane = c % 8;
    for (int64_t p = 0; p < d_pad / 2; ++p) {
      g[p * 16 + lane * 2] = q[2 * p];
      g[p * 16 + lane * 2 + 1] = q[2 * p + 1];
    }
    double sq = 0.0;
    for (int64_t i = 0; c < k && i < d; ++i) sq += static_cast<double>(codes[c * d + i]) * codes[c * d + i];
    meta[c] = m[0];
    meta[kp + c] = m[1];
    meta[2 * kp + c] = m[2];
    meta[3 * kp + c] = c < k ? static_cast<float>(sq) : std::numeric_limits<float>::infinity();
    meta[4 * kp + c] = c < k ? static_cast<float>(std::sqrt(sq)) : 0.0f;
  }
}

const char* vq_cpu_path() { return path_name(active_path()); }

bool vq_cpu_path_supported(const char* name) {
  for (Path p : {Path::kAmx, Path::kBf16, Path::kI16, Path::kPortable})
    if (std::strcmp(name, path_name(p)) == 0) return path_supported(p);
  return std::strcmp(name, "auto") == 0;
}

void set_vq_cpu_path(const char* name) {
  for (Path p : {Path::kAuto, Path::kAmx, Path::kBf16, Path::kI16, Path::kPortable})
    if (std::strcmp(name, path_name(p)) == 0) {
      g_forced_path.store(static_cast<int>(p));
      return;
    }
}
int64_t vq_cpu_fallback_rows() { return g_fallback_rows.load(); }

namespace {
// Rows per OpenMP work item. The AMX screen reads the whole codebook once per chunk, so it takes one
// chunk per thread (rows a multiple of 32, at most ~1 MiB of bf16 rows so they stay in L2); the
// other paths use small chunks.
int64_t chunk_rows(int64_t n, const CodebookView& cb) {
  if (active_path() != Path::kAmx) return kChunkRows;
#ifdef _OPENMP
  const int64_t threads = std::max(1, omp_get_max_threads());
#else
  const int64_t threads = 1;
#endif
  const int64_t cap = std::max<int64_t>(32, ((int64_t{1} << 20) / (2 * cb.d_pad)) / 32 * 32);
  const int64_t even = ((n + threads - 1) / threads + 31) / 32 * 32;
  return std::max<int64_t>(32, std::min(cap, even));
}
}  // namespace

void vq_argmin_cpu(const float* x, int64_t n, const CodebookView& cb, int64_t* tokens) {
  const int64_t step = chunk_rows(n, cb), chunks = (n + step - 1) / step;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * step, rows = std::min(step, n - r0);
    argmin_rows(x + r0 * cb.d, rows, cb, tokens + r0);
  }
}

void gate_ln_vq_cpu(const GateLNParams& p, const CodebookView& cb, int64_t* tokens, float* y) {
  const int64_t step = chunk_rows(p.n, cb), chunks = (p.n + step - 1) / step;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * step, rows = std::min(step, p.n - r0);
    std::vector<float> buf;
    float* yc = y ? y + r0 * p.d : nullptr;
    if (!yc) {
      buf.resize(static_cast<size_t>(rows * p.d));
      yc = buf.data();
    }
    for (int64_t r = 0; r < rows; ++r) gate_ln_row(p, r0 + r, yc + r * p.d);
    argmin_rows(yc, rows, cb, tokens + r0);
  }
}

}  // namespace uniaudio
