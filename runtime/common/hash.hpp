#pragma once
/// xxh3 hashing (libxxhash): the checksum of checkpoint chunks.

#include <cstddef>
#include <cstdint>

namespace thaw {

/// 64-bit XXH3 of a byte range.
[[nodiscard]] std::uint64_t xxh3_64(const void* data, std::size_t n) noexcept;

} // namespace thaw
