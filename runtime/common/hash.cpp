#include "runtime/common/hash.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace thaw {

std::uint64_t xxh3_64(const void* data, std::size_t n) noexcept {
  return XXH3_64bits(data, n);
}

} // namespace thaw
