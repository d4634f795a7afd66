#pragma once
/// The merge of online-softmax partials as plain functions usable on host and device
/// (gpu/kernels/attention.cu), so that the arithmetic decode attention relies on is tested on the
/// CPU. A partial covers some of a query's positions: its maximum score m (log2 domain), its sum
/// l of exp2(score - m) and its accumulator a = sum of exp2(score - m) * value. An empty partial
/// (no position) has m = -inf, l = 0 and an accumulator that may hold anything: it is skipped
/// by selection, never weighted by exp2(-inf - -inf) = NaN nor multiplied.
///
/// Partials lie as n (m, l) pairs, consecutive floats, and n accumulators `stride` floats apart;
/// the merged row is merge_column(...) * (1 / merge_den(...)), or zero when merge_den is 0.

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define THAW_MERGE_HD __host__ __device__
#else
#define THAW_MERGE_HD
#endif

namespace thaw::cuda::kernels {

/// The largest m of the n partials (-inf when every one is empty).
THAW_MERGE_HD inline float merge_max(const float* ml, int n) noexcept {
  float big = -INFINITY;
  for (int i = 0; i < n; ++i)
    big = fmaxf(big, ml[2 * i]);
  return big;
}

/// Partial (m, ...)'s weight relative to `big`: exp2(m - big), 0 for an empty partial.
THAW_MERGE_HD inline float merge_scale(float m, float big) noexcept {
  return m == -INFINITY ? 0.0f : exp2f(m - big);
}

/// The merged l relative to big = merge_max: 0 when every partial is empty.
THAW_MERGE_HD inline float merge_den(const float* ml, int n, float big) noexcept {
  float den = 0.0f;
  for (int i = 0; i < n; ++i)
    if (ml[2 * i] != -INFINITY)
      den += ml[2 * i + 1] * merge_scale(ml[2 * i], big);
  return den;
}

/// One column of the merged accumulator relative to big: acc[i * stride] is partial i's.
THAW_MERGE_HD inline float merge_column(const float* ml, const float* acc, int n,
                                        std::int64_t stride, float big) noexcept {
  float num = 0.0f;
  for (int i = 0; i < n; ++i)
    if (ml[2 * i] != -INFINITY)
      num += acc[i * stride] * merge_scale(ml[2 * i], big);
  return num;
}

} // namespace thaw::cuda::kernels
