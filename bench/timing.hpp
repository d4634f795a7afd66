#pragma once
// Timing helpers every benchmark shares: seconds since a steady-clock instant, and the median
// of repeated measurements.

#include <algorithm>
#include <chrono>
#include <vector>

namespace thaw::bench {

using clock = std::chrono::steady_clock;

/// Seconds from `start` to now.
inline double since(clock::time_point start) {
  return std::chrono::duration<double>(clock::now() - start).count();
}

/// The median (mean of the middle two for an even count); 0 for no values.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2);
}

} // namespace thaw::bench
