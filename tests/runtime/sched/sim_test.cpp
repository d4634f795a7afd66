#include "runtime/sched/sim.hpp"

#include <gtest/gtest.h>

#include <numeric>
#include <random>

namespace thaw::sched {
namespace {

constexpr double gb = 1e9;

// A cluster with exact bandwidths (no jitter), so times can be checked by hand:
// 16 GB from SSD at 1.6 GB/s = 10 s, from DRAM at 8 GB/s = 2 s, over the network at 0.4 GB/s = 40 s.
sim_config small_cluster(std::uint32_t nodes, std::int32_t slots, std::uint32_t models,
                         policy_kind p) {
  sim_config c;
  c.nodes = nodes;
  c.slots_per_node = slots;
  c.bandwidth.dram = 8 * gb;
  c.bandwidth.ssd = 1.6 * gb;
  c.bandwidth.remote = 0.4 * gb;
  c.estimator_bandwidth = c.bandwidth;
  c.bandwidth_jitter = 0;
  c.setup_seconds = 0;
  c.dram_bytes = 1000 * gb;
  c.ssd_replicas = 1; // with 2^k nodes, model m's home SSD is node m mod nodes
  c.migration_prior_a = 1.0 / 1000;
  c.migration_prior_b = 0.2;
  sim_model m;
  m.bytes = 16 * gb;
  m.prefill_tps = 1000;
  m.decode_tps = 10;
  m.concurrency = 2;
  m.max_instances = 1;
  m.keep_alive = 1;
  c.models.assign(models, m);
  c.policy = p;
  return c;
}

sim_result run(const sim_config& c, const std::vector<sim_request>& r) {
  auto out = simulate(c, r);
  EXPECT_TRUE(out) << (out ? "" : out.err().to_string());
  return out ? std::move(*out) : sim_result{};
}

TEST(Sim, AColdStartLoadsFromTheHomeSsdAndASecondRequestSharesTheInstance) {
  auto c = small_cluster(1, 1, 1, policy_kind::locality);
  c.models[0].keep_alive = 100;
  auto r = run(c, {{0.0, 0, 500, 10}, {11.0, 0, 1000, 20}});
  EXPECT_EQ(r.completed, 2u);
  EXPECT_EQ(r.cold_starts[static_cast<int>(tier::ssd)], 1u);
  EXPECT_EQ(r.cold_starts[static_cast<int>(tier::dram)] + r.cold_starts[static_cast<int>(tier::remote)], 0u);
  EXPECT_NEAR(r.ttft[0], 10.0 + 0.5, 1e-9);   // SSD load, then prefill of 500 tokens
  EXPECT_NEAR(r.e2e[0], 10.5 + 1.0, 1e-9);    // 10 tokens at 10 tok/s
  EXPECT_NEAR(r.ttft[1], 1.0, 1e-9);          // warm: prefill only
  EXPECT_EQ(r.scale_to_zero, 0u);
}

TEST(Sim, KeepAliveScalesToZeroAndTheNextRequestColdStartsFromDram) {
  auto c = small_cluster(1, 1, 1, policy_kind::locality);
  c.models[0].keep_alive = 5;
  auto r = run(c, {{0.0, 0, 100, 10}, {100.0, 0, 100, 10}});
  EXPECT_EQ(r.scale_to_zero, 1u);
  EXPECT_EQ(r.cold_starts[static_cast<int>(tier::ssd)], 1u);
  EXPECT_EQ(r.cold_starts[static_cast<int>(tier::dram)], 1u);
  EXPECT_NEAR(r.ttft[1], 2.0 + 0.1, 1e-9); // the DRAM tier kept the checkpoint

  // With a keep-alive longer than the gap the instance is still there: no second cold start.
  c.models[0].keep_alive = 200;
  auto warm = run(c, {{0.0, 0, 100, 10}, {100.0, 0, 100, 10}});
  EXPECT_EQ(warm.scale_to_zero, 0u);
  EXPECT_EQ(std::accumulate(warm.cold_starts.begin(), warm.cold_starts.end(), 0ull), 1ull);
  EXPECT_NEAR(warm.ttft[1], 0.1, 1e-9);
}

TEST(Sim, ARequestWaitsForABusySlot) {
  auto c = small_cluster(1, 1, 2, policy_kind::locality);
  auto r = run(c, {{0.0, 0, 100, 100}, {1.0, 1, 100, 10}});
  // Model 1 needs the only slot; it gets it when model 0's request ends and its instance is
  // idle (taken at once, not after the keep-alive), then loads from the SSD (one node: home of
  // every model).
  const double end0 = 10.0 + 0.1 + 10.0;
  EXPECT_NEAR(r.e2e[0], end0, 1e-9);
  EXPECT_NEAR(r.ttft[1], end0 + 10.0 + 0.1 - 1.0, 1e-9);
  EXPECT_EQ(r.evictions, 1u);
}

TEST(Sim, LocalityBeatsRandomWhenEveryNodeHoldsADifferentModel) {
  // Eight nodes of one slot, model m on node m's SSD; one request per model, far apart.
  std::vector<sim_request> reqs;
  for (std::uint32_t i = 0; i < 32; ++i)
    reqs.push_back({100.0 * i, (i * 5) % 8, 100, 10});
  auto loc = run(small_cluster(8, 1, 8, policy_kind::locality), reqs);
  auto rnd = run(small_cluster(8, 1, 8, policy_kind::random), reqs);
  EXPECT_EQ(loc.cold_starts[static_cast<int>(tier::remote)], 0u);
  EXPECT_GT(rnd.cold_starts[static_cast<int>(tier::remote)], 8u);
  EXPECT_LT(quantile(loc.ttft, 0.99), quantile(rnd.ttft, 0.99));
  auto mean = [](const std::vector<double>& v) {
    return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  };
  EXPECT_LT(mean(loc.ttft), 0.5 * mean(rnd.ttft));
  // The same seed gives the same run; another seed another.
  auto again = run(small_cluster(8, 1, 8, policy_kind::random), reqs);
  EXPECT_EQ(again.ttft, rnd.ttft);
}

// Two nodes of one slot; models 1 and 3 live on node 1's SSD, model 0 on node 0's. Model 3
// takes node 1 first, so model 1's long request lands on node 0 over the network; when model
// 0 comes, node 0 is the place for it and node 1 is free again.
std::vector<sim_request> migration_trace() {
  return {{0.0, 3, 100, 10}, {0.001, 1, 1000, 1500}, {60.0, 0, 100, 10}};
}

TEST(Sim, LocalityMigrateMovesARunningInstanceWhenThatStartsTheNewModelSooner) {
  auto c = small_cluster(2, 1, 4, policy_kind::locality_migrate);
  auto mig = run(c, migration_trace());
  c.policy = policy_kind::locality;
  auto loc = run(c, migration_trace());
  EXPECT_EQ(loc.migrations, 0u);
  ASSERT_EQ(mig.migrations, 1u);
  // Locality loads model 0 over the network on node 1 (40 s). Moving model 1 to node 1 costs its
  // SSD load (10 s) and recomputing its ~1,200 tokens (1.2 s); then model 0 loads from node
  // 0's SSD (10 s).
  EXPECT_NEAR(loc.ttft[2], 40.0 + 0.1, 1e-6);
  EXPECT_LT(mig.ttft[2], 22.0);
  EXPECT_GT(mig.ttft[2], 21.0);
  EXPECT_GT(mig.migrated_tokens, 1000u);
  // The moved request loses only the handoff pause (two decode steps), nothing is redone.
  EXPECT_NEAR(mig.e2e[1], loc.e2e[1] + 2.0 / 10.0, 1e-6);
  EXPECT_EQ(mig.completed, 3u);
  // The resume it observed is what the estimator learned from.
  EXPECT_GT(mig.learned_migration_b, 0.0);
}

TEST(Sim, MigrationIsNotUsedWhenItDoesNotPay) {
  auto c = small_cluster(2, 1, 4, policy_kind::locality_migrate);
  // Recomputing 1,200 tokens at 50 tokens/s (24 s) makes the move cost more than the 40 s
  // network load it would save.
  for (auto& m : c.models)
    m.prefill_tps = 50;
  c.migration_prior_a = 1.0 / 50;
  auto r = run(c, migration_trace());
  EXPECT_EQ(r.migrations, 0u);
  EXPECT_EQ(r.cold_starts[static_cast<int>(tier::remote)], 2u); // model 1 and then model 0
}

TEST(Sim, UnderHeavyContentionEveryPolicyServesEveryRequestWithinPhysicalBounds) {
  // 600 requests for 24 models on 3 nodes of 2 slots, arriving faster than they can be
  // served, with small DRAM tiers so checkpoints come and go.
  std::mt19937_64 rng{3};
  std::vector<sim_request> reqs;
  double t = 0;
  for (int i = 0; i < 600; ++i) {
    t += std::exponential_distribution<double>{2.0}(rng);
    reqs.push_back({t, static_cast<std::uint32_t>(rng() % 24),
                    static_cast<std::int32_t>(10 + rng() % 2000),
                    static_cast<std::int32_t>(1 + rng() % 300)});
  }
  for (auto p : all_policies) {
    auto c = small_cluster(3, 2, 24, p);
    c.dram_bytes = 40 * gb;
    c.bandwidth_jitter = 0.3;
    for (auto& m : c.models)
      m.max_instances = 3;
    auto r = run(c, reqs);
    ASSERT_EQ(r.completed, reqs.size()) << to_string(p);
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      const double prefill = reqs[i].input_tokens / 1000.0;
      const double decode = reqs[i].output_tokens / 10.0;
      ASSERT_GE(r.ttft[i], prefill - 1e-9) << to_string(p) << " request " << i;
      ASSERT_GE(r.e2e[i], r.ttft[i] + decode - 1e-9) << to_string(p) << " request " << i;
    }
    const auto s = summarize(r, 10);
    EXPECT_LE(s.slot_occupancy, 1.0 + 1e-9) << to_string(p);
    EXPECT_LE(s.slot_utilisation, s.slot_occupancy + 1e-9) << to_string(p);
    EXPECT_GT(s.slot_utilisation, 0.3) << to_string(p);
    EXPECT_GT(r.evictions + r.scale_to_zero, 0u);
    EXPECT_EQ(r.migrations > 0, p == policy_kind::locality_migrate) << to_string(p);
  }
}

TEST(Sim, RejectsRequestsForModelsItDoesNotKnow) {
  auto c = small_cluster(1, 1, 1, policy_kind::locality);
  auto r = simulate(c, {{0.0, 3, 10, 10}});
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("model 3"), std::string::npos);
}

} // namespace
} // namespace thaw::sched
