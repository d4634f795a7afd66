#pragma once
/// Writes a thaw checkpoint: tensors in load order, each 4096-byte aligned, packed into data
/// files of at most `max_file_bytes` (a tensor larger than that gets a file of its own), per-chunk
/// XXH3 checksums, and the manifest. Everything is written into a temporary directory beside
/// `out_dir` that is renamed to `out_dir` only when complete: a failure (a full disk, a bad
/// tensor) leaves nothing behind, and an existing `out_dir` is never replaced.

#include "runtime/checkpoint/manifest.hpp"
#include "runtime/common/error.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace thaw {

struct writer_options {
  std::uint64_t chunk_bytes = default_checkpoint_chunk_bytes;    ///< multiple of 4096
  std::uint64_t max_file_bytes = default_checkpoint_file_bytes;  ///< multiple of 4096
  /// Files copied verbatim from this directory if present (tokenizer.json, config.json, ...).
  std::filesystem::path extra_files_from;
  /// Called with (bytes written so far, total bytes) as data is written.
  std::function<void(std::uint64_t, std::uint64_t)> on_progress;
  /// When set and it becomes true, writing stops with errc::cancelled and nothing is left
  /// behind (the CLI sets it on SIGINT/SIGTERM).
  const std::atomic<bool>* cancel = nullptr;
};

/// One tensor to write. `fill` must produce exactly product(shape) * dtype_size(type) bytes.
struct tensor_source {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::uint64_t> shape;
  std::int32_t layer = -1;
  std::function<status(std::span<std::byte> out)> fill;
};

/// Writes a checkpoint of `cfg` with `tensors` (already in load order) to `out_dir`.
/// `source` is free text recorded in the manifest. The tensors are validated against the
/// architecture before anything is written.
[[nodiscard]] status write_checkpoint(const std::filesystem::path& out_dir,
                                      const model_config& cfg,
                                      const std::vector<tensor_source>& tensors,
                                      const writer_options& options, std::string source = {});

/// Files copied from a Hugging Face directory into a checkpoint when present.
inline constexpr const char* checkpoint_side_files[] = {
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json"};

} // namespace thaw
