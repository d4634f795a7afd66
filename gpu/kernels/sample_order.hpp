#pragma once
/// The CUDA sampler's candidate order as plain functions usable on host and device
/// (gpu/kernels/sampling.cu), so that the order the bisection relies on is tested on the CPU:
/// (logit descending, id ascending), as thaw::sample's by_value_desc, with a logit named by its
/// bit pattern mapped to an unsigned key that grows with the value.

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define THAW_SAMPLE_HD __host__ __device__
#else
#define THAW_SAMPLE_HD
#endif

namespace thaw::cuda::kernels {

/// The logit's order as an unsigned integer (larger value, larger key); -0 is +0, as the CPU's
/// == treats them. Not for NaN (the sampler reports those before ordering anything).
THAW_SAMPLE_HD inline std::uint32_t sample_order_key(float v) noexcept {
#if defined(__CUDA_ARCH__)
  std::uint32_t u = __float_as_uint(v);
#else
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
#endif
  if ((u & 0x7fffffffu) == 0)
    u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/// The last element of a prefix of the order (key descending, id ascending).
struct sample_boundary {
  std::uint32_t key;
  std::int64_t id;
};

/// True when (key, id) is in the prefix that ends at b.
THAW_SAMPLE_HD constexpr bool sample_in_prefix(std::uint32_t key, std::int64_t id,
                                               sample_boundary b) noexcept {
  return key > b.key || (key == b.key && id <= b.id);
}

/// The shorter of two prefixes: the boundary that comes first in the order.
THAW_SAMPLE_HD constexpr sample_boundary sample_earliest(sample_boundary a,
                                                         sample_boundary b) noexcept {
  return (a.key > b.key || (a.key == b.key && a.id < b.id)) ? a : b;
}

} // namespace thaw::cuda::kernels
