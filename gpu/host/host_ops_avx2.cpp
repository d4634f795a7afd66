// AVX2 + FMA + F16C bodies of host_ops; compiled with those flags and called only when the CPU has
// them (host_ops.cpp checks at run time).
#include "gpu/host/host_ops.hpp"

#include <immintrin.h>

#include <algorithm>

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

// Sums the eight lanes as ((v0+v1)+(v2+v3)) + ((v4+v5)+(v6+v7)), the order hsum8 reduces eight
// vectors in at once, so every tile shape gives an output the same bits.
inline float hsum(__m256 v) noexcept {
  const __m256 h = _mm256_hadd_ps(v, v);
  const __m256 h2 = _mm256_hadd_ps(h, h);
  return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(h2), _mm256_extractf128_ps(h2, 1)));
}

// hsum of eight vectors at once: lane k of the result is hsum(a[k]), bit for bit.
inline __m256 hsum8(const __m256* a) noexcept {
  const __m256 b0 = _mm256_hadd_ps(a[0], a[1]), b1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 b2 = _mm256_hadd_ps(a[4], a[5]), b3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 c0 = _mm256_hadd_ps(b0, b1), c1 = _mm256_hadd_ps(b2, b3);
  return _mm256_add_ps(_mm256_permute2f128_ps(c0, c1, 0x20), _mm256_permute2f128_ps(c0, c1, 0x31));
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
    for (int k = 0; k < N; ++k) {
      xv[k] = _mm256_loadu_ps(x + (t0 + k) * in + i);
      // With two or more rows, keep x in registers: GCC otherwise folds each load into every
      // FMA that uses it, and a 2x4 tile issues 10 loads per 8 FMAs instead of 6.
      if constexpr (R >= 2)
        asm("" : "+x"(xv[k]));
    }
    if constexpr (R == 2) {
      // The next two rows, which the hardware prefetcher does not guess from two interleaved
      // streams.
      const std::size_t off = static_cast<std::size_t>(i) * dtype_size(T);
      __builtin_prefetch(w0 + 2 * row_bytes + off);
      __builtin_prefetch(w0 + 3 * row_bytes + off);
    }
    #pragma GCC unroll 8
    for (int a = 0; a < R; ++a) {
      const __m256 wv = load8<T>(w0 + a * row_bytes, i);
      #pragma GCC unroll 8
      for (int k = 0; k < N; ++k)
        acc[a][k] = _mm256_fmadd_ps(wv, xv[k], acc[a][k]);
    }
  }
  if constexpr (R * N == 8) {
    alignas(32) float sums[8];
    _mm256_store_ps(sums, hsum8(&acc[0][0]));
    #pragma GCC unroll 8
    for (int a = 0; a < R; ++a)
      #pragma GCC unroll 8
      for (int k = 0; k < N; ++k)
        out[a][k] = sums[a * N + k];
  } else {
    #pragma GCC unroll 8
    for (int a = 0; a < R; ++a)
      #pragma GCC unroll 8
      for (int k = 0; k < N; ++k)
        out[a][k] = hsum(acc[a][k]);
  }
  // The tail (in not a multiple of 8) after every accumulator is reduced: a call with vector
  // values still live makes GCC keep the accumulators on the stack inside the loop above.
  if (i < in)
    for (int a = 0; a < R; ++a)
      for (int k = 0; k < N; ++k)
        for (std::int64_t j = i; j < in; ++j)
          out[a][k] += load_element(t, w0 + a * row_bytes, static_cast<std::size_t>(j)) *
                       x[(t0 + k) * in + j];
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
  if (rb < 2048 || tokens >= 4) {
    // Four tokens or more (batched decode, prefill): pairs of rows against four tokens at a
    // time, x held in registers and the next two rows prefetched, 6 loads per 8 FMAs in eight
    // independent chains. Against what came before, measured in one session (2 cores, Zen 3):
    // stories15m batch-8 decode 2250-2283 -> 2495-2541 tok/s over one row against 8 tokens
    // (9 loads per 8 FMAs), itself up from 1316-1322 with 1x4 tiles (four chains: FMA latency
    // caps them at half the peak); prefill products at 32 and 128 tokens 1.3-1.5x over 4x2
    // tiles (stories15m and stories110m shapes).
    // Fewer tokens on short rows: one row at a time, so the weights are read as one sequential
    // stream the hardware prefetcher follows; four interleaved rows of a few cache lines each
    // defeat it (stories15m, 1152-byte rows, batch 1: 0.45-0.53 of the bandwidth limit with
    // 4-row tiles, 0.75-0.85 this way). Long rows at one to three tokens keep the 4-row tiles
    // below: four long streams read faster than one (stories110m, 3 KiB rows: 0.78-0.84 vs
    // 0.63-0.70). Every tile keeps each (row, token)'s order of operations, so results do not
    // change with the batch.
    // Long prompts go in blocks of tokens whose activations (about 128 KiB) stay in L2 while
    // every row pair passes over them: streaming all of a 1024-token batch's activations past
    // each pair cost a quarter of the prefill rate.
    if (tokens >= 4) {
      const std::int64_t row_bytes_f32 = in * static_cast<std::int64_t>(sizeof(float));
      const std::int64_t block = std::max<std::int64_t>(4, 131072 / row_bytes_f32 / 4 * 4);
      const std::int64_t pairs_end = r0 + (r1 - r0) / 2 * 2;
      for (std::int64_t tb = 0; tb < tokens; tb += block) {
        const std::int64_t te = std::min(tokens, tb + block);
        for (std::int64_t rp = r0; rp < pairs_end; rp += 2) {
          std::int64_t t = tb;
          for (; t + 4 <= te; t += 4)
            run_tile<T, 2, 4>(wb, rb, wtype, rows, in, x, y, bias, rp, t);
          for (; t < te; ++t)
            run_tile<T, 2, 1>(wb, rb, wtype, rows, in, x, y, bias, rp, t);
        }
      }
      r = pairs_end;
    }
    for (; r < r1; ++r) {
      std::int64_t t = 0;
      for (; t + 8 <= tokens; t += 8)
        run_tile<T, 1, 8>(wb, rb, wtype, rows, in, x, y, bias, r, t);
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

void dot_rows_avx2(const float* q, const float* rows, std::int64_t n, std::int64_t d, float scale,
                   float* out) noexcept {
  // Eight keys at a time: eight independent FMA chains instead of one, q's vectors loaded once
  // for the eight, and one hsum8 for the eight sums. Each score keeps the one-key order of
  // operations (8-wide FMA, hsum, tail, scale).
  std::int64_t p = 0;
  for (; p + 8 <= n; p += 8) {
    const float* k = rows + p * d;
    __m256 acc[8];
    #pragma GCC unroll 8
    for (int r = 0; r < 8; ++r)
      acc[r] = _mm256_setzero_ps();
    std::int64_t i = 0;
    for (; i + 8 <= d; i += 8) {
      const __m256 qv = _mm256_loadu_ps(q + i);
      #pragma GCC unroll 8
      for (int r = 0; r < 8; ++r)
        acc[r] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + r * d + i), acc[r]);
    }
    __m256 sums = hsum8(acc);
    if (i < d) {
      alignas(32) float s[8];
      _mm256_store_ps(s, sums);
      for (int r = 0; r < 8; ++r)
        for (std::int64_t j = i; j < d; ++j)
          s[r] += q[j] * k[r * d + j];
      sums = _mm256_load_ps(s);
    }
    _mm256_storeu_ps(out + p, _mm256_mul_ps(sums, _mm256_set1_ps(scale)));
  }
  for (; p < n; ++p) {
    const float* k = rows + p * d;
    __m256 acc = _mm256_setzero_ps();
    std::int64_t i = 0;
    for (; i + 8 <= d; i += 8)
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), acc);
    float s = hsum(acc);
    for (; i < d; ++i)
      s += q[i] * k[i];
    out[p] = s * scale;
  }
}

namespace {

// V vectors of out (8V elements at `out`) accumulated over all n rows in registers.
template <int V>
inline void axpy_chunk(const float* w, const float* rows, std::int64_t n, std::int64_t d,
                       float* out) noexcept {
  __m256 acc[V];
  #pragma GCC unroll 8
  for (int v = 0; v < V; ++v)
    acc[v] = _mm256_loadu_ps(out + 8 * v);
  for (std::int64_t p = 0; p < n; ++p) {
    const __m256 wp = _mm256_set1_ps(w[p]);
    const float* r = rows + p * d;
    #pragma GCC unroll 8
    for (int v = 0; v < V; ++v)
      acc[v] = _mm256_fmadd_ps(wp, _mm256_loadu_ps(r + 8 * v), acc[v]);
  }
  #pragma GCC unroll 8
  for (int v = 0; v < V; ++v)
    _mm256_storeu_ps(out + 8 * v, acc[v]);
}

} // namespace

void axpy_rows_avx2(const float* w, const float* rows, std::int64_t n, std::int64_t d,
                    float* out) noexcept {
  std::int64_t i = 0;
  for (; i + 64 <= d; i += 64)
    axpy_chunk<8>(w, rows + i, n, d, out + i);
  switch ((d - i) / 8) {
  case 7: axpy_chunk<7>(w, rows + i, n, d, out + i); break;
  case 6: axpy_chunk<6>(w, rows + i, n, d, out + i); break;
  case 5: axpy_chunk<5>(w, rows + i, n, d, out + i); break;
  case 4: axpy_chunk<4>(w, rows + i, n, d, out + i); break;
  case 3: axpy_chunk<3>(w, rows + i, n, d, out + i); break;
  case 2: axpy_chunk<2>(w, rows + i, n, d, out + i); break;
  case 1: axpy_chunk<1>(w, rows + i, n, d, out + i); break;
  default: break;
  }
  i += (d - i) / 8 * 8;
  for (std::int64_t p = 0; p < n; ++p)
    for (std::int64_t j = i; j < d; ++j)
      out[j] += w[p] * rows[p * d + j];
}

namespace {

// e^x for 8 floats: x = n ln2 + r with |r| <= ln2/2, e^r = 1 + r + r^2 P(r) with Cephes' expf
// polynomial (degree 5, minimax: relative error 8.0e-8 against std::exp over [-87, 88], where
// the degree-6 Taylor polynomial used before reached 2.3e-7), 2^n from the exponent bits. Inputs
// below -87.3 give 0 and above 88.7 give +inf, as expf does.
inline __m256 exp8(__m256 x) noexcept {
  const __m256 hi = _mm256_set1_ps(88.7228f), lo = _mm256_set1_ps(-87.3365f);
  const __m256 over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504089f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n ln2 in two steps (ln2 split in a short high part and the rest).
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  // 2^n for n in [-126, 128]: build 2^(n/2) twice so that n = 128 and n = -126 stay finite
  // until the final product.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i half = _mm256_srai_epi32(ni, 1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
  const __m256i rest = _mm256_sub_epi32(ni, half);
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(rest, bias), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), over);
  return _mm256_andnot_ps(under, y);
}

// exp8 of one value, for the tails of the vector loops (the same function, so a value's result
// does not depend on where it falls).
inline float exp1(float v) noexcept {
  alignas(32) float e[8] = {v};
  _mm256_store_ps(e, exp8(_mm256_load_ps(e)));
  return e[0];
}

} // namespace

void silu_mul_avx2(float* gate, const float* up, std::int64_t n) noexcept {
  const __m256 one = _mm256_set1_ps(1.0f);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + exp1(-g)) * up[i];
  }
}

void softmax_avx2(float* x, std::int64_t n) noexcept {
  __m256 mv = _mm256_set1_ps(-__builtin_inff());
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, mv);
  float m = lanes[0];
  for (int k = 1; k < 8; ++k)
    m = lanes[k] > m ? lanes[k] : m;
  for (; i < n; ++i)
    m = x[i] > m ? x[i] : m;
  const __m256 mb = _mm256_set1_ps(m);
  __m256 sv = _mm256_setzero_ps();
  i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mb));
    _mm256_storeu_ps(x + i, e);
    sv = _mm256_add_ps(sv, e);
  }
  float sum = hsum(sv);
  for (; i < n; ++i) {
    x[i] = exp1(x[i] - m);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(inv)));
  for (; i < n; ++i)
    x[i] *= inv;
}

void exp_avx2(float* x, std::int64_t n) noexcept {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, exp8(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i)
    x[i] = exp1(x[i]);
}

} // namespace thaw::host::detail
