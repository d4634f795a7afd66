#include "runtime/engine/radix_cache.hpp"

#include "runtime/engine/model_runner.hpp"

#include <gtest/gtest.h>

#include <numeric>

namespace thaw {
namespace {

/// `blocks` full blocks of tokens: base, base + 1, ...
std::vector<std::int32_t> tokens_of(std::int32_t blocks, std::int32_t base = 100) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(blocks) * kv_block_tokens);
  std::iota(t.begin(), t.end(), base);
  return t;
}

/// A sequence's blocks, allocated and filled in the cache as the step loop does; the caller's
/// references are released afterwards, as when a sequence finishes.
std::vector<std::int32_t> cache_sequence(kv_blocks& kv, radix_cache& cache,
                                         const std::vector<std::int32_t>& tokens) {
  auto got = kv.allocate(kv_blocks_for(static_cast<std::int64_t>(tokens.size())));
  EXPECT_TRUE(got);
  EXPECT_TRUE(cache.insert(tokens, *got));
  for (auto b : *got)
    EXPECT_TRUE(kv.release(b));
  return *got;
}

TEST(RadixCache, EmptyCacheMatchesNothing) {
  kv_blocks kv(8);
  radix_cache cache(kv);
  auto m = cache.lookup(tokens_of(3));
  EXPECT_EQ(m.tokens, 0);
  EXPECT_TRUE(m.blocks.empty());
  EXPECT_EQ(cache.cached_blocks(), 0);
}

TEST(RadixCache, FinishedSequenceLeavesItsFullBlocksAndTheLongestPrefixIsReused) {
  kv_blocks kv(16);
  radix_cache cache(kv);
  auto t = tokens_of(3);
  t.resize(t.size() + 5); // a partial fourth block is never cached
  auto blocks = cache_sequence(kv, cache, t);
  EXPECT_EQ(cache.cached_blocks(), 3);
  EXPECT_EQ(kv.free_count(), 16 - 3); // the partial block went back; the tree holds three

  // Same first two blocks, different third: two blocks reused, each retained for the caller.
  auto u = tokens_of(3);
  u[2 * kv_block_tokens + 4] = 7;
  auto m = cache.lookup(u);
  EXPECT_EQ(m.tokens, 2 * kv_block_tokens);
  ASSERT_EQ(m.blocks.size(), 2u);
  EXPECT_EQ(m.blocks[0], blocks[0]);
  EXPECT_EQ(m.blocks[1], blocks[1]);
  EXPECT_EQ(kv.ref_count(blocks[0]), 2);
  EXPECT_EQ(kv.ref_count(blocks[2]), 1);

  // A lookup shorter than a block, or differing in the first token, matches nothing.
  EXPECT_EQ(cache.lookup(std::span(t).first(kv_block_tokens - 1)).tokens, 0);
  auto v = t;
  v[0] = 1;
  EXPECT_EQ(cache.lookup(v).tokens, 0);
  for (auto b : m.blocks)
    EXPECT_TRUE(kv.release(b));
}

TEST(RadixCache, InsertingAnExistingPrefixKeepsTheTreesBlock) {
  kv_blocks kv(16);
  radix_cache cache(kv);
  auto t = tokens_of(2);
  auto first = cache_sequence(kv, cache, t);
  // A second sequence computed the same prefix into its own blocks (it started before the
  // first finished) and extends it by one block.
  auto longer = tokens_of(3);
  auto own = kv.allocate(3);
  ASSERT_TRUE(own);
  ASSERT_TRUE(cache.insert(longer, *own));
  EXPECT_EQ(cache.cached_blocks(), 3);
  EXPECT_EQ(kv.ref_count((*own)[0]), 1); // not taken: the tree has first[0]
  EXPECT_EQ(kv.ref_count((*own)[2]), 2); // new node
  auto m = cache.lookup(longer);
  ASSERT_EQ(m.blocks.size(), 3u);
  EXPECT_EQ(m.blocks[0], first[0]);
  EXPECT_EQ(m.blocks[1], first[1]);
  EXPECT_EQ(m.blocks[2], (*own)[2]);
  for (auto b : m.blocks)
    EXPECT_TRUE(kv.release(b));
  for (auto b : *own)
    EXPECT_TRUE(kv.release(b));
}

TEST(RadixCache, InsertRefusesABlockNobodyHolds) {
  kv_blocks kv(4);
  radix_cache cache(kv);
  auto t = tokens_of(2);
  std::vector<std::int32_t> blocks{0, 1};
  auto s = cache.insert(t, blocks);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::invalid_argument);
  EXPECT_EQ(cache.cached_blocks(), 0);
}

TEST(RadixCache, EvictsLeastRecentlyUsedLeavesThatOnlyTheCacheHolds) {
  kv_blocks kv(6);
  radix_cache cache(kv);
  auto a = tokens_of(2, 1000); // blocks a0 -> a1
  auto b = tokens_of(2, 2000); // blocks b0 -> b1
  auto a_blocks = cache_sequence(kv, cache, a);
  auto b_blocks = cache_sequence(kv, cache, b);
  EXPECT_EQ(kv.free_count(), 2);
  EXPECT_EQ(cache.evictable_blocks(), 4);

  // Touch a: b is now the least recently used.
  auto m = cache.lookup(a);
  for (auto x : m.blocks)
    EXPECT_TRUE(kv.release(x));
  EXPECT_EQ(cache.evict(1), 1);
  EXPECT_EQ(kv.ref_count(b_blocks[1]), 0); // b's leaf went first
  EXPECT_EQ(kv.ref_count(b_blocks[0]), 1);
  EXPECT_EQ(cache.evict(1), 1);            // then b's root block, now a leaf
  EXPECT_EQ(kv.ref_count(b_blocks[0]), 0);
  EXPECT_EQ(cache.lookup(b).tokens, 0);
  EXPECT_EQ(cache.cached_blocks(), 2);

  // A block a running sequence still holds is never evicted, nor is anything above it.
  auto held = cache.lookup(a);
  EXPECT_EQ(cache.evictable_blocks(), 0);
  EXPECT_EQ(cache.evict(10), 0);
  EXPECT_EQ(cache.cached_blocks(), 2);
  for (auto x : held.blocks)
    EXPECT_TRUE(kv.release(x));
  EXPECT_EQ(cache.evict(10), 2);
  EXPECT_EQ(kv.free_count(), 6);
  EXPECT_EQ(cache.cached_blocks(), 0);
}

TEST(RadixCache, DestructionReturnsEveryBlock) {
  kv_blocks kv(64);
  {
    radix_cache cache(kv);
    // A long chain and a fork: release must not recurse per level.
    cache_sequence(kv, cache, tokens_of(30));
    auto fork = tokens_of(30);
    fork[20 * kv_block_tokens] = 3;
    cache_sequence(kv, cache, fork);
    EXPECT_EQ(cache.cached_blocks(), 40);
  }
  EXPECT_EQ(kv.free_count(), 64);
}

} // namespace
} // namespace thaw
