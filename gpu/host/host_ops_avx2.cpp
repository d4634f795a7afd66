// AVX2 + FMA + F16C bodies of host_ops; compiled with those flags and called only when the CPU has
// them (host_ops.cpp checks at run time).
#include "gpu/host/host_ops.hpp"

#include <immintrin.h>

namespace thaw::host::detail {

namespace {

inline __m256 load8(const void* w, dtype t, std::int64_t i) noexcept {
  switch (t) {
  case dtype::f32:
    return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  case dtype::bf16: {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const std::uint16_t*>(w) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  case dtype::f16: {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const std::uint16_t*>(w) + i));
    return _mm256_cvtph_ps(h);
  }
  }
  return _mm256_setzero_ps();
}

inline float load1(const void* w, dtype t, std::int64_t i) noexcept {
  switch (t) {
  case dtype::f32:
    return static_cast<const float*>(w)[i];
  case dtype::bf16:
    return bf16_to_f32(static_cast<const std::uint16_t*>(w)[i]);
  case dtype::f16:
    return f16_to_f32(static_cast<const std::uint16_t*>(w)[i]);
  }
  return 0.0f;
}

inline float hsum(__m256 v) noexcept {
  const __m128 lo = _mm256_castps256_ps128(v);
  const __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// One row against tokens [t0, t0 + N): each token has its own accumulator and the same order of
// operations, so a token's result does not depend on N or on which tile it falls in.
template <int N>
inline void row_tile(const void* wr, dtype t, std::int64_t in, const float* x, std::int64_t t0,
                     float* out) noexcept {
  __m256 acc[N];
  for (int k = 0; k < N; ++k)
    acc[k] = _mm256_setzero_ps();
  std::int64_t i = 0;
  for (; i + 8 <= in; i += 8) {
    const __m256 wv = load8(wr, t, i);
    for (int k = 0; k < N; ++k)
      acc[k] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + (t0 + k) * in + i), acc[k]);
  }
  for (int k = 0; k < N; ++k) {
    float s = hsum(acc[k]);
    for (std::int64_t j = i; j < in; ++j)
      s += load1(wr, t, j) * x[(t0 + k) * in + j];
    out[k] = s;
  }
}

} // namespace

void matmul_rows_avx2(const void* w, dtype wtype, std::int64_t rows, std::int64_t in,
                      const float* x, std::int64_t tokens, float* y, const float* bias,
                      std::int64_t r0, std::int64_t r1) noexcept {
  const std::size_t es = dtype_size(wtype);
  for (std::int64_t r = r0; r < r1; ++r) {
    const auto* wr = static_cast<const std::byte*>(w) + static_cast<std::size_t>(r * in) * es;
    const float b = bias != nullptr ? bias[r] : 0.0f;
    float out[4];
    std::int64_t t = 0;
    for (; t + 4 <= tokens; t += 4) {
      row_tile<4>(wr, wtype, in, x, t, out);
      for (int k = 0; k < 4; ++k)
        y[(t + k) * rows + r] = out[k] + b;
    }
    for (; t < tokens; ++t) {
      row_tile<1>(wr, wtype, in, x, t, out);
      y[t * rows + r] = out[0] + b;
    }
  }
}

float dot_avx2(const float* a, const float* b, std::int64_t n) noexcept {
  __m256 acc = _mm256_setzero_ps();
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float s = hsum(acc);
  for (; i < n; ++i)
    s += a[i] * b[i];
  return s;
}

void axpy_avx2(float a, const float* x, float* y, std::int64_t n) noexcept {
  const __m256 av = _mm256_set1_ps(a);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i)
    y[i] += a * x[i];
}

} // namespace thaw::host::detail
