#pragma once
/// xxh3 hashing (libxxhash's header, inlined): the checksum of checkpoint chunks. The vector
/// code is chosen at run time: AVX2 where the CPU has it (2.3x the SSE2 baseline here), else
/// the baseline, so checksums never hold back a load reading at disk speed.

#include <cstddef>
#include <cstdint>
#include <span>

namespace thaw {

/// 64-bit XXH3 of a byte range.
[[nodiscard]] std::uint64_t xxh3_64(const void* data, std::size_t n) noexcept;

/// 64-bit XXH3 of the first `bytes` bytes of the concatenated `pieces` (a chunk spread over
/// several buffers); equal to the one-shot hash of the same bytes.
[[nodiscard]] std::uint64_t xxh3_64(std::span<const std::span<std::byte>> pieces,
                                    std::uint64_t bytes) noexcept;

/// "avx2" or "sse2": the implementation in use.
[[nodiscard]] const char* xxh3_implementation() noexcept;

} // namespace thaw
