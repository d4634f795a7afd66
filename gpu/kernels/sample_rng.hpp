#pragma once
/// The sampler's counter-based uniform (thaw::rng_state::next_uniform) as one function usable on
/// host and device, so that the CUDA sampler draws exactly the number the CPU sampler draws.

#include <cstdint>

#if defined(__CUDACC__)
#define THAW_HOST_DEVICE __host__ __device__
#else
#define THAW_HOST_DEVICE
#endif

namespace thaw::cuda::kernels {

/// splitmix64's finaliser, as runtime/engine/sampler.cpp's mix64.
THAW_HOST_DEVICE constexpr std::uint64_t sample_mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// Draw number `counter` of the stream `seed`: a uniform in [0, 1) with 53 random bits, what
/// rng_state{seed, counter}.next_uniform() returns.
THAW_HOST_DEVICE constexpr double sample_uniform(std::uint64_t seed, std::uint64_t counter) noexcept {
  const std::uint64_t bits =
      sample_mix64(sample_mix64(seed ^ 0x6a09e667f3bcc909ULL) + sample_mix64(counter));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

} // namespace thaw::cuda::kernels
