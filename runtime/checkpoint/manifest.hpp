#pragma once
/// The in-memory form of a checkpoint's manifest (schema/checkpoint.capnp; the on-disk format is
/// specified in schema/checkpoint.md), and its Cap'n Proto encoding. Cap'n Proto stays inside
/// manifest.cpp: the rest of thaw sees these plain structs.

#include "runtime/checkpoint/model_config.hpp"
#include "runtime/common/dtype.hpp"
#include "runtime/common/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace thaw {

inline constexpr std::uint32_t checkpoint_format_version = 1;
/// Every tensor, and every data file's length, is a multiple of this.
inline constexpr std::uint64_t checkpoint_alignment = 4096;
inline constexpr std::uint64_t default_checkpoint_chunk_bytes = 16ull << 20;
inline constexpr std::uint64_t default_checkpoint_file_bytes = 4ull << 30;
inline constexpr const char* manifest_file_name = "manifest.bin";

struct tensor_entry {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::uint64_t> shape;
  std::uint32_t file = 0;   ///< index into manifest::files
  std::uint64_t offset = 0; ///< byte offset inside that file, a multiple of checkpoint_alignment
  std::uint64_t bytes = 0;  ///< product(shape) * dtype_size(type)
  std::int32_t layer = -1;  ///< -1 embeddings, 0..L-1 decoder layers, L final norm and lm_head

  bool operator==(const tensor_entry&) const = default;
};

struct data_file_entry {
  std::string name;              ///< "data-00000.bin"
  std::uint64_t bytes = 0;       ///< file length, a multiple of checkpoint_alignment
  std::uint64_t chunk_bytes = 0; ///< checksum granularity; the last chunk may be shorter
  std::vector<std::uint64_t> chunk_checksums; ///< XXH3-64 of each chunk

  bool operator==(const data_file_entry&) const = default;
};

struct manifest {
  std::uint32_t format_version = checkpoint_format_version;
  model_config config;
  std::vector<tensor_entry> tensors; ///< in load order (ordered by layer)
  std::vector<data_file_entry> files;
  std::uint64_t total_bytes = 0; ///< sum of the data files' bytes = the device buffer's size
  std::string source;            ///< free text: where it was converted from

  bool operator==(const manifest&) const = default;
};

/// Serialises to Cap'n Proto (unpacked, single segment stream).
[[nodiscard]] std::string encode_manifest(const manifest& m);

/// Parses Cap'n Proto bytes; malformed input is `parse_error`, an unknown format version or
/// dtype is `unsupported`. No cross-checks against files here: see checkpoint::open.
[[nodiscard]] expected<manifest> decode_manifest(std::string_view bytes,
                                                 std::string_view source = manifest_file_name);

} // namespace thaw
