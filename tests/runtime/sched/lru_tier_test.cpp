#include "runtime/sched/lru_tier.hpp"

#include <gtest/gtest.h>

namespace thaw::sched {
namespace {

TEST(LruTier, EvictsTheLeastRecentlyUsedButNeverAPinnedCopy) {
  lru_tier t{30};
  EXPECT_TRUE(t.touch(1, 10, /*pinned=*/true).empty());
  EXPECT_TRUE(t.touch(2, 10).empty());
  EXPECT_TRUE(t.touch(3, 10).empty());
  t.touch(2, 10); // 3 is now the least recently used unpinned copy
  EXPECT_EQ(t.touch(4, 10), (std::vector<std::uint32_t>{3}));
  EXPECT_TRUE(t.contains(1));
  EXPECT_TRUE(t.contains(2));
  EXPECT_FALSE(t.contains(3));
  EXPECT_EQ(t.touch(5, 20), (std::vector<std::uint32_t>{2, 4}));
  EXPECT_TRUE(t.contains(1));
  EXPECT_TRUE(t.contains(5));
}

TEST(LruTier, ACheckpointLargerThanTheTierIsNotKept) {
  lru_tier t{10};
  t.touch(1, 5);
  EXPECT_TRUE(t.touch(2, 11).empty());
  EXPECT_FALSE(t.contains(2));
  EXPECT_TRUE(t.contains(1));

  // Beside pinned copies that leave no room, nothing is evicted for it either.
  lru_tier p{20};
  p.touch(1, 15, true);
  p.touch(2, 5);
  EXPECT_TRUE(p.touch(3, 10).empty());
  EXPECT_TRUE(p.contains(2));
  EXPECT_FALSE(p.contains(3));
}

} // namespace
} // namespace thaw::sched
