#pragma once
/// The physical references a load is measured against, each over the same bytes as the load:
/// raw O_DIRECT sequential reads, plain buffered reads, mmap-and-copy of safetensors files, and
/// memcpy. Each returns the seconds taken (errors name the file).

#include "runtime/common/error.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <vector>

namespace thaw::bench {

/// Reads the files front to back with O_DIRECT in `block_bytes` reads, `threads` threads taking
/// blocks in turn (so the disk sees one sequential stream per thread), into a reused buffer.
[[nodiscard]] expected<double> raw_odirect_read(const std::vector<std::filesystem::path>& files,
                                                std::size_t block_bytes, int threads);

/// Reads the files with buffered read(2) into a reused buffer (drop the page cache first).
[[nodiscard]] expected<double> buffered_read(const std::vector<std::filesystem::path>& files,
                                             std::size_t block_bytes);

/// A safetensors-style load: mmap each file and copy its bytes into one destination buffer of
/// the summed size (what `safetensors.torch.load_file` does on the CPU), touching every page.
[[nodiscard]] expected<double> mmap_copy_load(const std::vector<std::filesystem::path>& files);

/// memcpy of `bytes` between two already-touched buffers with `threads` threads.
[[nodiscard]] double memcpy_seconds(std::size_t bytes, int threads);

/// Sum of the files' sizes.
[[nodiscard]] expected<std::uint64_t> total_size(const std::vector<std::filesystem::path>& files);

} // namespace thaw::bench
