// AVX2 + FMA + F16C bodies of host_ops; compiled with those flags and called only when the CPU has
// them (host_ops.cpp checks at run time).
#include "gpu/host/host_ops.hpp"

#include <immintrin.h>

namespace thaw::host::detail {

namespace {

template <dtype T>
inline __m256 load8(const void* w, std::int64_t i) noexcept {
  if constexpr (T == dtype::f32) {
    return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  } else {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const std::uint16_t*>(w) + i));
    if constexpr (T == dtype::bf16)
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    else
      return _mm256_cvtph_ps(h);
  }
}


inline float hsum(__m256 v) noexcept {
  const __m128 lo = _mm256_castps256_ps128(v);
  const __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// R rows against tokens [t0, t0 + N): each (row, token) pair has its own accumulator and the same
// order of operations whatever R, N and the tile it falls in, so a result does not depend on the
// batch around it. Several rows at once give independent FMA chains for a single token (decode).
template <dtype T, int R, int N>
inline void tile(const std::byte* w0, std::size_t row_bytes, dtype t, std::int64_t in,
                 const float* x, std::int64_t t0, float (&out)[R][N]) noexcept {
  __m256 acc[R][N];
  #pragma GCC unroll 8
  for (int a = 0; a < R; ++a)
    #pragma GCC unroll 8
    for (int k = 0; k < N; ++k)
      acc[a][k] = _mm256_setzero_ps();
  std::int64_t i = 0;
  for (; i + 8 <= in; i += 8) {
    __m256 xv[N];
    #pragma GCC unroll 8
    for (int k = 0; k < N; ++k)
      xv[k] = _mm256_loadu_ps(x + (t0 + k) * in + i);
    #pragma GCC unroll 8
    for (int a = 0; a < R; ++a) {
      const __m256 wv = load8<T>(w0 + a * row_bytes, i);
      #pragma GCC unroll 8
      for (int k = 0; k < N; ++k)
        acc[a][k] = _mm256_fmadd_ps(wv, xv[k], acc[a][k]);
    }
  }
  #pragma GCC unroll 8
  for (int a = 0; a < R; ++a)
    #pragma GCC unroll 8
    for (int k = 0; k < N; ++k) {
      float s = hsum(acc[a][k]);
      for (std::int64_t j = i; j < in; ++j)
        s += load_element(t, w0 + a * row_bytes, static_cast<std::size_t>(j)) * x[(t0 + k) * in + j];
      out[a][k] = s;
    }
}

template <dtype T, int R, int N>
inline void run_tile(const std::byte* wbase, std::size_t row_bytes, dtype t, std::int64_t rows,
                     std::int64_t in, const float* x, float* y, const float* bias, std::int64_t r,
                     std::int64_t t0) noexcept {
  float out[R][N];
  tile<T, R, N>(wbase + static_cast<std::size_t>(r) * row_bytes, row_bytes, t, in, x, t0, out);
  for (int a = 0; a < R; ++a) {
    const float b = bias != nullptr ? bias[r + a] : 0.0f;
    for (int k = 0; k < N; ++k)
      y[(t0 + k) * rows + r + a] = out[a][k] + b;
  }
}

} // namespace

template <dtype T>
void rows_t(const void* w, dtype wtype, std::int64_t rows, std::int64_t in, const float* x,
            std::int64_t tokens, float* y, const float* bias, std::int64_t r0,
            std::int64_t r1) noexcept {
  const auto* wb = static_cast<const std::byte*>(w);
  const std::size_t rb = static_cast<std::size_t>(in) * dtype_size(wtype);
  std::int64_t r = r0;
  if (rb < 2048 && tokens <= 8) {
    // Short rows against few tokens (decode, batched decode): one row at a time, so the weights
    // are read as one sequential stream the hardware prefetcher follows; four interleaved rows
    // of a few cache lines each defeat it. stories15m (1152-byte rows), fraction of the
    // bandwidth limit at batch 1: 0.45-0.53 with 4-row tiles, 0.75-0.85 this way; batch 8:
    // about 770 -> 890 tok/s. Long rows keep the 4-row tiles: four long streams read faster
    // than one (stories110m, 3 KiB rows: 0.78-0.84 vs 0.63-0.70). The order of operations of
    // each (row, token) is the tiles' own, so results do not change.
    for (; r < r1; ++r) {
      std::int64_t t = 0;
      for (; t + 4 <= tokens; t += 4)
        run_tile<T, 1, 4>(wb, rb, wtype, rows, in, x, y, bias, r, t);
      for (; t + 2 <= tokens; t += 2)
        run_tile<T, 1, 2>(wb, rb, wtype, rows, in, x, y, bias, r, t);
      for (; t < tokens; ++t)
        run_tile<T, 1, 1>(wb, rb, wtype, rows, in, x, y, bias, r, t);
    }
    return;
  }
  for (; r + 4 <= r1; r += 4) {
    std::int64_t t = 0;
    for (; t + 2 <= tokens; t += 2)
      run_tile<T, 4, 2>(wb, rb, wtype, rows, in, x, y, bias, r, t);
    for (; t < tokens; ++t)
      run_tile<T, 4, 1>(wb, rb, wtype, rows, in, x, y, bias, r, t);
  }
  for (; r < r1; ++r)
    for (std::int64_t t = 0; t < tokens; ++t)
      run_tile<T, 1, 1>(wb, rb, wtype, rows, in, x, y, bias, r, t);
}

void matmul_rows_avx2(const void* w, dtype wtype, std::int64_t rows, std::int64_t in,
                      const float* x, std::int64_t tokens, float* y, const float* bias,
                      std::int64_t r0, std::int64_t r1) noexcept {
  switch (wtype) {
  case dtype::f32:
    return rows_t<dtype::f32>(w, wtype, rows, in, x, tokens, y, bias, r0, r1);
  case dtype::bf16:
    return rows_t<dtype::bf16>(w, wtype, rows, in, x, tokens, y, bias, r0, r1);
  case dtype::f16:
    return rows_t<dtype::f16>(w, wtype, rows, in, x, tokens, y, bias, r0, r1);
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
