#include "runtime/sched/placement.hpp"

#include <gtest/gtest.h>

namespace thaw::sched {
namespace {

constexpr std::uint64_t gib = 1ull << 30;

TEST(Placement, PrefersDramThenLocalSsdThenAny) {
  std::vector<node_view> nodes = {
      {"far", {}, {}, 8 * gib, 0},
      {"ssd", {}, {"/m/a"}, 4 * gib, 0},
      {"dram", {"/m/a"}, {"/m/a"}, 2 * gib, 3},
  };
  EXPECT_EQ(rank_nodes(nodes, "/m/a", gib), (std::vector<std::size_t>{2, 1, 0}));
  EXPECT_EQ(locality_of(nodes[2], "/m/a"), locality::dram);
  EXPECT_EQ(locality_of(nodes[1], "/m/a"), locality::ssd);
  EXPECT_EQ(locality_of(nodes[0], "/m/a"), locality::remote);
}

TEST(Placement, ANodeThatCannotHoldTheInstanceComesLastWhateverItHolds) {
  std::vector<node_view> nodes = {
      {"dram-full", {"/m/a"}, {}, gib / 2, 0},
      {"empty", {}, {}, 8 * gib, 0},
  };
  EXPECT_EQ(rank_nodes(nodes, "/m/a", gib), (std::vector<std::size_t>{1, 0}));
}

TEST(Placement, WithinAClassMostRoomThenFewestInstances) {
  std::vector<node_view> nodes = {
      {"a", {}, {}, 2 * gib, 0},
      {"b", {}, {}, 4 * gib, 5},
      {"c", {}, {}, 4 * gib, 1},
  };
  EXPECT_EQ(rank_nodes(nodes, "/m/x", gib), (std::vector<std::size_t>{2, 1, 0}));
  EXPECT_TRUE(rank_nodes({}, "/m/x", gib).empty());
}

} // namespace
} // namespace thaw::sched
