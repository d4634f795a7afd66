// Compiled with -mavx2 (see CMakeLists.txt); called only when the CPU has AVX2.
#include "runtime/common/hash_system_headers.hpp"

namespace thaw::detail::avx2 {
#include "runtime/common/hash_impl.inc"
} // namespace thaw::detail::avx2

namespace thaw::detail {

std::uint64_t xxh3_64_avx2(const void* data, std::size_t n) noexcept {
  return avx2::one_shot(data, n);
}

std::uint64_t xxh3_64_pieces_avx2(std::span<const std::span<std::byte>> parts,
                                  std::uint64_t bytes) noexcept {
  return avx2::pieces(parts, bytes);
}

} // namespace thaw::detail
