#pragma once
/// A thaw checkpoint on disk, opened and validated. `checkpoint::open` reads manifest.bin and
/// checks every field against the data files before anything else is read: format version,
/// file sizes, offsets and sizes of tensors, dtype and shape against bytes, tensor names and
/// shapes against the architecture. Everything after open may trust the manifest.
///
/// The device weight buffer is the data files concatenated in order, so file i starts at
/// `file_base(i)` and a tensor lives at `file_base(t.file) + t.offset`.

#include "runtime/checkpoint/manifest.hpp"
#include "runtime/common/error.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace thaw {

/// One checksummed piece of a data file: the unit the loader reads, verifies and copies.
struct checkpoint_chunk {
  std::uint32_t file = 0;
  std::uint64_t file_offset = 0;   ///< inside the data file; a multiple of checkpoint_alignment
  std::uint64_t bytes = 0;         ///< <= the file's chunk_bytes; a multiple of the alignment
  std::uint64_t device_offset = 0; ///< file_base(file) + file_offset
  std::uint64_t checksum = 0;      ///< XXH3-64 of the chunk's bytes
};

class checkpoint {
public:
  /// Opens and validates the checkpoint directory `dir`.
  [[nodiscard]] static expected<checkpoint> open(const std::filesystem::path& dir);
  /// A checkpoint known from its manifest.bin bytes alone, as a peer sends them: validated like
  /// open() except that its data files are not looked at (they need not exist: the bytes come
  /// from a peer's DRAM tier, loader::pull). `dir` is where they would be, for messages.
  [[nodiscard]] static expected<checkpoint> from_manifest(const std::filesystem::path& dir,
                                                          std::string manifest_bytes);

  [[nodiscard]] const std::filesystem::path& dir() const noexcept { return dir_; }
  [[nodiscard]] const manifest& info() const noexcept { return manifest_; }
  [[nodiscard]] const model_config& config() const noexcept { return manifest_.config; }
  [[nodiscard]] std::uint64_t total_bytes() const noexcept { return manifest_.total_bytes; }

  /// A stable identity of the checkpoint's content (XXH3 of manifest.bin, hex); two copies of
  /// the same checkpoint in different directories share it.
  [[nodiscard]] const std::string& content_id() const noexcept { return content_id_; }
  /// manifest.bin as read (what from_manifest takes back).
  [[nodiscard]] const std::string& manifest_bytes() const noexcept { return *manifest_bytes_; }

  [[nodiscard]] std::filesystem::path file_path(std::uint32_t file) const;
  [[nodiscard]] std::uint64_t file_base(std::uint32_t file) const { return file_bases_.at(file); }

  /// All chunks of all files in device-buffer order.
  [[nodiscard]] const std::vector<checkpoint_chunk>& chunks() const noexcept { return chunks_; }

  /// Bytes from the start of the device buffer that must be loaded before `layer` may run
  /// (-1 embeddings ... num_layers final norm/lm_head): the end of that layer's last tensor.
  [[nodiscard]] std::uint64_t layer_end(std::int32_t layer) const;

  /// The tensor with this name, or nullptr.
  [[nodiscard]] const tensor_entry* find_tensor(std::string_view name) const;

  /// Reads every chunk and checks its checksum (`thaw inspect --verify`); the first mismatch is
  /// `corrupt`, naming the file, chunk index and byte offset. `on_progress(done, total)`.
  [[nodiscard]] status verify_data(
      const std::function<void(std::uint64_t, std::uint64_t)>& on_progress = {}) const;

private:
  [[nodiscard]] static expected<checkpoint> build(const std::filesystem::path& dir,
                                                  std::string manifest_bytes, bool check_files);

  std::filesystem::path dir_;
  manifest manifest_;
  std::string content_id_;
  std::shared_ptr<const std::string> manifest_bytes_; ///< shared by copies of the checkpoint
  std::vector<std::uint64_t> file_bases_;
  std::vector<checkpoint_chunk> chunks_;
  std::vector<std::uint64_t> layer_ends_; ///< index layer + 1
};

/// Checks a decoded manifest for internal consistency (no file access): versions, alignment,
/// tensor bounds and overlaps, dtype x shape = bytes, names and shapes against the architecture,
/// checksum counts. Errors name the tensor or file.
[[nodiscard]] status validate_manifest(const manifest& m);

} // namespace thaw
