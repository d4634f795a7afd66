#pragma once
/// The physical references a load is measured against, each over the same bytes as the load:
/// raw O_DIRECT sequential reads, plain buffered reads, mmap-and-copy of safetensors files, and
/// memcpy. Buffers are allocated and touched once, when the object is made, so that no
/// measurement pays (or makes a later one pay) for faulting in or freeing gigabytes of memory.
/// Each measurement returns the seconds taken; errors name the file.

#include "runtime/common/error.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

namespace thaw::bench {

class reference_io {
public:
  /// Buffers for copies of `bytes` and reads of `block_bytes`.
  [[nodiscard]] static expected<std::unique_ptr<reference_io>> create(std::size_t bytes,
                                                                      std::size_t block_bytes);
  ~reference_io();
  reference_io(const reference_io&) = delete;
  reference_io& operator=(const reference_io&) = delete;

  /// Reads the files front to back with O_DIRECT in block-sized reads, `threads` threads
  /// taking blocks in turn (each thread one sequential stream).
  [[nodiscard]] expected<double> raw_odirect_read(const std::vector<std::filesystem::path>& files,
                                                  int threads);
  /// The same with one reader, each block into its own place in memory the size of the files
  /// (touched beforehand), as a loader must put the bytes: the reads above reuse one block-sized
  /// buffer per thread, which stays in the CPU's cache.
  [[nodiscard]] expected<double>
  raw_odirect_read_to_memory(const std::vector<std::filesystem::path>& files);
  /// Reads the files with buffered read(2) after dropping their page cache. (Not dropped again
  /// afterwards: on this VM, memory the guest frees goes back to the host and is slow to fault
  /// in again, which would slow whatever allocates next.)
  [[nodiscard]] expected<double> buffered_read(const std::vector<std::filesystem::path>& files);
  /// A safetensors-style load: mmap each file and copy its bytes into one destination buffer
  /// (what `safetensors.torch.load_file` does on the CPU), page cache dropped before.
  [[nodiscard]] expected<double> mmap_copy_load(const std::vector<std::filesystem::path>& files);
  /// memcpy of the whole buffer with `threads` threads.
  [[nodiscard]] double memcpy_seconds(int threads);

private:
  struct mapping {
    std::byte* data = nullptr;
    std::size_t bytes = 0;
  };
  static expected<mapping> map(std::size_t bytes);
  reference_io() = default;

  std::size_t bytes_ = 0;
  std::size_t block_ = 0;
  mapping src_, dst_;
  std::vector<mapping> blocks_;
};

/// Sum of the files' sizes.
[[nodiscard]] expected<std::uint64_t> total_size(const std::vector<std::filesystem::path>& files);

/// Drops the files from the page cache.
[[nodiscard]] status drop_all(const std::vector<std::filesystem::path>& files);

} // namespace thaw::bench
