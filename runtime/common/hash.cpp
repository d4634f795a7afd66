#include "runtime/common/hash.hpp"

#include "runtime/common/hash_system_headers.hpp"

namespace thaw::detail {
namespace baseline {
#include "runtime/common/hash_impl.inc"
} // namespace baseline

#if defined(__x86_64__)
std::uint64_t xxh3_64_avx2(const void* data, std::size_t n) noexcept;
std::uint64_t xxh3_64_pieces_avx2(std::span<const std::span<std::byte>> parts,
                                  std::uint64_t bytes) noexcept;
#endif

namespace {
bool use_avx2() noexcept {
#if defined(__x86_64__)
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
#else
  return false;
#endif
}
} // namespace
} // namespace thaw::detail

namespace thaw {

std::uint64_t xxh3_64(const void* data, std::size_t n) noexcept {
#if defined(__x86_64__)
  if (detail::use_avx2())
    return detail::xxh3_64_avx2(data, n);
#endif
  return detail::baseline::one_shot(data, n);
}

std::uint64_t xxh3_64(std::span<const std::span<std::byte>> pieces, std::uint64_t bytes) noexcept {
#if defined(__x86_64__)
  if (detail::use_avx2())
    return detail::xxh3_64_pieces_avx2(pieces, bytes);
#endif
  return detail::baseline::pieces(pieces, bytes);
}

const char* xxh3_implementation() noexcept { return detail::use_avx2() ? "avx2" : "sse2"; }

} // namespace thaw
