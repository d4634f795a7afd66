#pragma once
/// The KV block manager's allocator (ARCHITECTURE.md section 6): hands out ids of the model
/// runner's KV blocks with reference counts, so that a block holding a shared prefix (the radix
/// cache, forked sequences) is freed only when its last holder releases it. Block ids are opaque
/// handles to the step loop (vLLM v1's KV manager); the runner owns the memory behind them.
///
/// A block's life:   free --allocate--> held (refs = 1) --retain--> refs + 1
///                   held --release--> refs - 1; at 0 back to free
/// Not thread-safe: the step loop owns it.

#include "runtime/common/error.hpp"

#include <cstdint>
#include <vector>

namespace thaw {

class kv_blocks {
public:
  /// Blocks 0 .. count - 1, all free.
  explicit kv_blocks(std::int32_t count);

  /// `n` free blocks, each with one reference; all or nothing: `resource_exhausted` naming how
  /// many were asked for and how many are free, and nothing changes.
  [[nodiscard]] expected<std::vector<std::int32_t>> allocate(std::int32_t n);
  /// Adds a reference to a held block; `invalid_argument` for an id out of range or free.
  [[nodiscard]] status retain(std::int32_t id);
  /// Drops a reference; the block is free again at zero. `invalid_argument` for an id out of
  /// range or already free (a double release is a bug the caller must hear about).
  [[nodiscard]] status release(std::int32_t id);

  [[nodiscard]] std::int32_t capacity() const noexcept;
  [[nodiscard]] std::int32_t free_count() const noexcept;
  /// References held on `id` (0: free); 0 for an id out of range.
  [[nodiscard]] std::int32_t ref_count(std::int32_t id) const noexcept;
  /// Fraction of blocks held, 0..1 (vLLM's kv cache usage).
  [[nodiscard]] double usage() const noexcept;

private:
  [[nodiscard]] bool valid(std::int32_t id) const noexcept;
  std::vector<std::int32_t> refs_;
  std::vector<std::int32_t> free_; ///< a stack: recently freed blocks are reused first
};

} // namespace thaw
