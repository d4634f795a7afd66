#include "runtime/engine/kv_blocks.hpp"

#include <algorithm>
#include <gtest/gtest.h>
#include <set>

namespace thaw {
namespace {

TEST(KvBlocks, AllocatesDistinctBlocksUntilFull) {
  kv_blocks b{8};
  auto a = b.allocate(5);
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, (std::vector<std::int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(b.free_count(), 3);
  EXPECT_DOUBLE_EQ(b.usage(), 5.0 / 8.0);
  auto c = b.allocate(3);
  ASSERT_TRUE(c);
  std::set<std::int32_t> all(a->begin(), a->end());
  all.insert(c->begin(), c->end());
  EXPECT_EQ(all.size(), 8u);
  EXPECT_EQ(b.free_count(), 0);
}

TEST(KvBlocks, TooManyIsAnErrorThatChangesNothing) {
  kv_blocks b{4};
  ASSERT_TRUE(b.allocate(3));
  auto r = b.allocate(2);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::resource_exhausted);
  EXPECT_NE(r.err().message.find("2 needed, 1 free of 4"), std::string::npos) << r.err().message;
  EXPECT_EQ(b.free_count(), 1);
  EXPECT_FALSE(b.allocate(-1));
}

TEST(KvBlocks, SharedBlockIsFreedByItsLastHolder) {
  kv_blocks b{2};
  auto a = b.allocate(1);
  ASSERT_TRUE(a);
  const auto id = (*a)[0];
  ASSERT_TRUE(b.retain(id)); // a second sequence shares the prefix block
  EXPECT_EQ(b.ref_count(id), 2);
  ASSERT_TRUE(b.release(id));
  EXPECT_EQ(b.free_count(), 1); // still held by the other
  ASSERT_TRUE(b.release(id));
  EXPECT_EQ(b.free_count(), 2);
  EXPECT_EQ(b.ref_count(id), 0);
  // Freed blocks are handed out again.
  auto again = b.allocate(2);
  ASSERT_TRUE(again);
  EXPECT_NE(std::find(again->begin(), again->end(), id), again->end());
}

TEST(KvBlocks, MisuseIsReported) {
  kv_blocks b{2};
  EXPECT_EQ(b.release(0).err().code, errc::invalid_argument); // never allocated
  EXPECT_EQ(b.retain(1).err().code, errc::invalid_argument);
  EXPECT_EQ(b.release(7).err().code, errc::invalid_argument); // out of range
  EXPECT_EQ(b.release(-1).err().code, errc::invalid_argument);
  auto a = b.allocate(1);
  ASSERT_TRUE(a);
  ASSERT_TRUE(b.release((*a)[0]));
  auto twice = b.release((*a)[0]); // double release
  ASSERT_FALSE(twice);
  EXPECT_NE(twice.err().message.find("not held"), std::string::npos);
  EXPECT_EQ(b.free_count(), 2);
}

} // namespace
} // namespace thaw
