#include "runtime/sched/policy.hpp"

#include <gtest/gtest.h>

#include <set>

namespace thaw::sched {
namespace {

constexpr double gb = 1e9;

estimators make_estimators() {
  bandwidth_defaults d;
  d.dram = 10 * gb;
  d.ssd = 2 * gb;
  d.remote = 1 * gb;
  return {startup_estimator{d, 0.0}, migration_estimator{1e-3, 0.1}};
}

cluster_node node(std::string name, std::int32_t slots, std::int32_t used = 0) {
  cluster_node n;
  n.name = std::move(name);
  n.slots = slots;
  for (std::int32_t s = used; s < slots; ++s)
    n.free_slots.push_back(s);
  return n;
}

instance_view busy(std::uint64_t id, std::uint32_t model, std::int32_t slot, std::int64_t tokens,
                   double bytes = 10 * gb) {
  return instance_view{id, model, slot, bytes, tokens, 1, true};
}

TEST(Policy, NamesParseAndPrint) {
  for (auto p : all_policies)
    EXPECT_EQ(parse_policy(to_string(p)).value(), p);
  auto bad = parse_policy("fastest");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.err().message.find("fastest"), std::string::npos);
}

TEST(Policy, LocalityPrefersTheNodeHoldingTheModelInDramOverSsd) {
  cluster_view v;
  v.nodes = {node("far", 2), node("ssd", 2), node("dram", 2)};
  v.set_tier(1, 7, tier::ssd);
  v.set_tier(2, 7, tier::dram);
  v.nodes[2].load = 50; // busier, still the fastest start
  auto est = make_estimators();
  placer p{policy_kind::locality};
  auto d = p.place(v, {7, 20 * gb}, est);
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.node, 2u);
  EXPECT_EQ(d.source, tier::dram);
  EXPECT_DOUBLE_EQ(d.startup_seconds, 2.0);
  EXPECT_TRUE(d.migrations.empty());
  EXPECT_EQ(p.rank(v, {7, 20 * gb}, est), (std::vector<std::uint32_t>{2, 1, 0}));

  // A long loader queue on the DRAM node makes the SSD node the faster start.
  v.nodes[2].loader_wait = 30;
  EXPECT_EQ(p.place(v, {7, 20 * gb}, est).node, 1u);
}

TEST(Policy, LeastLoadedPicksTheLeastLoadedNodeWithASlot) {
  cluster_view v;
  v.nodes = {node("a", 2), node("b", 2), node("c", 2, 2)};
  v.nodes[0].load = 9;
  v.nodes[1].load = 3;
  v.nodes[2].load = 0; // least loaded but full
  v.nodes[2].instances = {busy(1, 0, 0, 10), busy(2, 0, 1, 10)};
  v.set_tier(0, 7, tier::dram);
  auto est = make_estimators();
  placer p{policy_kind::least_loaded};
  auto d = p.place(v, {7, gb}, est);
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.node, 1u);
  EXPECT_EQ(d.source, tier::remote);
}

TEST(Policy, RandomIsDeterministicForASeedAndOnlyPicksNodesWithASlot) {
  cluster_view v;
  for (int i = 0; i < 16; ++i)
    v.nodes.push_back(node("n" + std::to_string(i), 1, i % 4 == 0 ? 1 : 0));
  for (int i = 0; i < 16; i += 4)
    v.nodes[i].instances = {busy(100 + i, 0, 0, 10)};
  auto est = make_estimators();
  placer a{policy_kind::random, 42}, b{policy_kind::random, 42}, c{policy_kind::random, 43};
  std::vector<std::uint32_t> pa, pb, pc;
  for (int i = 0; i < 50; ++i) {
    pa.push_back(a.place(v, {1, gb}, est).node);
    pb.push_back(b.place(v, {1, gb}, est).node);
    pc.push_back(c.place(v, {1, gb}, est).node);
  }
  EXPECT_EQ(pa, pb);
  EXPECT_NE(pa, pc);
  std::set<std::uint32_t> seen(pa.begin(), pa.end());
  for (auto n : seen)
    EXPECT_NE(n % 4, 0u) << "picked a full node";
  EXPECT_GT(seen.size(), 4u);
}

TEST(Policy, AnIdleInstanceGivesUpItsSlot) {
  cluster_view v;
  v.nodes = {node("x", 1, 1)};
  v.nodes[0].instances = {instance_view{9, 3, 0, gb, 0, 0, true}};
  auto est = make_estimators();
  placer p{policy_kind::locality};
  auto d = p.place(v, {7, gb}, est);
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.slot, 0);
  EXPECT_EQ(d.evictions, (std::vector<std::uint64_t>{9}));
}

TEST(Policy, NoSlotAnywhereIsNoDecision) {
  cluster_view v;
  v.nodes = {node("x", 1, 1)};
  v.nodes[0].instances = {busy(1, 3, 0, 100)};
  v.set_tier(0, 7, tier::dram);
  auto est = make_estimators();
  for (auto k : all_policies) {
    placer p{k};
    EXPECT_FALSE(p.place(v, {7, gb}, est).placed) << to_string(k);
  }
}

// Node 0 holds model 7 in DRAM but its only slot runs a short instance of model 3, which node
// 2 also holds in DRAM and has a slot for; node 1 has a slot but would load 7 remotely.
cluster_view migration_case(std::int64_t tokens) {
  cluster_view v;
  v.nodes = {node("x", 1, 1), node("far", 1), node("y", 1)};
  v.nodes[0].instances = {busy(11, 3, 0, tokens)};
  v.set_tier(0, 7, tier::dram);
  v.set_tier(2, 3, tier::dram);
  return v;
}

TEST(Policy, LocalityMigrateMovesAnInstanceWhenThatIsFaster) {
  auto v = migration_case(1000); // move: 1 s load + 1.1 s recompute; then 2 s load of 7
  auto est = make_estimators();
  placer p{policy_kind::locality_migrate};
  auto d = p.place(v, {7, 20 * gb}, est); // without moving: 20 s remote load on "far"
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.node, 0u);
  EXPECT_EQ(d.slot, 0);
  EXPECT_EQ(d.source, tier::dram);
  ASSERT_EQ(d.migrations.size(), 1u);
  EXPECT_EQ(d.migrations[0].instance, 11u);
  EXPECT_EQ(d.migrations[0].from, 0u);
  EXPECT_EQ(d.migrations[0].to, 2u);
  EXPECT_EQ(d.migrations[0].source, tier::dram);
  EXPECT_NEAR(d.migrations[0].seconds, 1.0 + 1.1, 1e-9);
  EXPECT_NEAR(d.startup_seconds, 2.1 + 2.0, 1e-9);

  // Plain locality never moves anything: it takes the remote load.
  placer plain{policy_kind::locality};
  auto q = plain.place(v, {7, 20 * gb}, est);
  EXPECT_TRUE(q.migrations.empty());
  EXPECT_EQ(q.source, tier::remote);
}

TEST(Policy, LocalityMigrateDoesNotMoveWhenItDoesNotPay) {
  // 30,000 tokens to recompute (30 s) costs more than the 20 s remote load.
  auto v = migration_case(30'000);
  auto est = make_estimators();
  placer p{policy_kind::locality_migrate};
  auto d = p.place(v, {7, 20 * gb}, est);
  ASSERT_TRUE(d.placed);
  EXPECT_TRUE(d.migrations.empty());
  EXPECT_EQ(d.node, 1u);

  // Nor when the model is as close on a node with a slot.
  auto w = migration_case(10);
  w.set_tier(1, 7, tier::dram);
  auto e = p.place(w, {7, 20 * gb}, est);
  EXPECT_TRUE(e.migrations.empty());
  EXPECT_EQ(e.node, 1u);

  // Nor when the learned line says resumes are slow.
  for (int i = 0; i < 10; ++i)
    est.migration.observe(1000.0 * i, 0.05 * i + 30);
  auto f = p.place(migration_case(1000), {7, 20 * gb}, est);
  EXPECT_TRUE(f.migrations.empty());
}

} // namespace
} // namespace thaw::sched
