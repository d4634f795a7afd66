#pragma once
/// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
/// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, padded
/// with spaces), then the tensor data. Reading validates the header against the file before any
/// tensor byte is touched; writing streams tensors one at a time so that multi-GiB models never
/// sit in memory whole.

#include "runtime/common/dtype.hpp"
#include "runtime/common/error.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace thaw {

struct safetensors_tensor {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::uint64_t> shape;
  std::uint64_t offset = 0; ///< absolute byte offset in the file
  std::uint64_t bytes = 0;
};

struct safetensors_file {
  std::filesystem::path path;
  std::uint64_t file_bytes = 0;
  std::uint64_t data_offset = 0; ///< 8 + header length
  std::vector<safetensors_tensor> tensors; ///< in header order
  std::map<std::string, std::string> metadata;
};

/// Reads and validates a safetensors header: the length fits the file, the JSON parses, every
/// dtype is F32/F16/BF16 (others are `unsupported`, naming the tensor), bytes == product(shape) *
/// dtype size, offsets lie inside the data region, and no two tensors overlap. Errors name the
/// file and the tensor.
[[nodiscard]] expected<safetensors_file> read_safetensors_header(const std::filesystem::path& path);

/// The weights of a Hugging Face model directory: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json` (every listed shard must exist and hold exactly the tensors the
/// weight_map assigns it). Returns the files in shard order.
[[nodiscard]] expected<std::vector<safetensors_file>> open_hf_weights(
    const std::filesystem::path& dir);

/// One tensor to write.
struct safetensors_entry {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::uint64_t> shape;
  [[nodiscard]] std::uint64_t bytes() const;
};

/// Fills `out` (exactly entry.bytes() long) with the data of entry `index`.
using safetensors_fill = std::function<status(std::size_t index, std::span<std::byte> out)>;

/// Writes a safetensors file: header for `entries` (in that order), then each tensor's bytes as
/// `fill` produces them. Errors (a full disk, say) name the file.
[[nodiscard]] status write_safetensors(const std::filesystem::path& path,
                                       const std::vector<safetensors_entry>& entries,
                                       const safetensors_fill& fill,
                                       const std::map<std::string, std::string>& metadata = {});

} // namespace thaw
