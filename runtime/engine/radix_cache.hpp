#pragma once
/// The prefix cache (SGLang's RadixAttention, ARCHITECTURE.md section 6): a tree over token ids
/// whose nodes are whole KV blocks. A sequence that has computed the KV of its first 16 k tokens
/// leaves those blocks in the tree; a later sequence whose tokens start the same way takes them
/// instead of recomputing them. Only full blocks are shared: a block's KV depends on every token
/// before it, so a node is keyed by its 16 tokens under its parent (the path from the root is
/// the whole prefix).
///
///   root -- [t0..t15] -> block 7 -- [t16..t31] -> block 2 -- ...
///                                \- [u16..u31] -> block 9          (a fork after 16 tokens)
///
/// The cache holds one reference on each block in the tree (kv_blocks); sequences using a block
/// hold their own. A leaf whose block only the cache holds is evictable, least recently used
/// first; evicting it may make its parent an evictable leaf.
/// Not thread-safe: the step loop owns it.

#include "runtime/engine/kv_blocks.hpp"

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace thaw {

class radix_cache {
public:
  /// Blocks come from and go back to `blocks`, which must outlive the cache.
  explicit radix_cache(kv_blocks& blocks);
  /// Releases the cache's reference on every block in the tree.
  ~radix_cache();
  radix_cache(const radix_cache&) = delete;
  radix_cache& operator=(const radix_cache&) = delete;

  struct match {
    std::vector<std::int32_t> blocks; ///< the prefix's blocks in order, each retained for the caller
    std::int32_t tokens = 0;          ///< blocks.size() * kv_block_tokens
  };

  /// The longest cached prefix of `tokens` in whole blocks (at most tokens.size() / 16 of them).
  /// Each returned block gets one reference for the caller, who releases it when done; the
  /// nodes on the path become the most recently used.
  [[nodiscard]] match lookup(std::span<const std::int32_t> tokens);

  /// Records that blocks[i] holds the KV of tokens [16 i, 16 i + 16) of `tokens`, for each full
  /// block (i < tokens.size() / 16 and i < blocks.size()). New nodes take a reference on their
  /// block; where the tree already has a node for that prefix, the tree keeps its own block and
  /// the caller's is left alone (the caller always keeps its references). `invalid_argument` if
  /// a block is not held (a caller bug), and nothing after it is inserted.
  [[nodiscard]] status insert(std::span<const std::int32_t> tokens,
                              std::span<const std::int32_t> blocks);

  /// Frees up to `n` blocks by evicting least recently used leaves that only the cache holds;
  /// returns how many were freed (fewer when nothing else is evictable).
  std::int32_t evict(std::int32_t n);

  /// Blocks in the tree.
  [[nodiscard]] std::int32_t cached_blocks() const noexcept;
  /// Blocks that evict() could free now: nodes whose whole subtree only the cache holds.
  [[nodiscard]] std::int32_t evictable_blocks() const;

  struct node;

private:
  kv_blocks* blocks_;
  std::unique_ptr<node> root_;
  std::int32_t size_ = 0;
  std::uint64_t clock_ = 0; ///< logical time for LRU
};

} // namespace thaw
