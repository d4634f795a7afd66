#include "runtime/sched/estimator.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace thaw::sched {
namespace {

TEST(MigrationEstimator, RecoversTheLineFromNoisySamples) {
  migration_estimator m{/*prior_a=*/1e-3, /*prior_b=*/1.0};
  std::mt19937_64 rng{7};
  std::uniform_real_distribution<double> tokens{100, 8000};
  std::normal_distribution<double> noise{0, 0.01};
  const double a = 2.5e-4, b = 0.12;
  for (int i = 0; i < 400; ++i) {
    const double t = tokens(rng);
    m.observe(t, a * t + b + noise(rng));
  }
  EXPECT_NEAR(m.a(), a, a * 0.03);
  EXPECT_NEAR(m.b(), b, 0.01);
  EXPECT_NEAR(m.estimate(4000), a * 4000 + b, 0.01);
}

TEST(MigrationEstimator, UsesThePriorUntilItHasEnoughSamples) {
  migration_estimator m{1e-3, 0.5, 3};
  EXPECT_DOUBLE_EQ(m.estimate(1000), 1.5);
  m.observe(1000, 10.0);
  m.observe(2000, 20.0);
  EXPECT_DOUBLE_EQ(m.estimate(1000), 1.5); // two samples: still the prior
  m.observe(3000, 30.0);
  EXPECT_NEAR(m.estimate(1000), 10.0, 1e-9);
}

TEST(MigrationEstimator, ResumesOfOneSizeMoveTheInterceptNotTheSlope) {
  migration_estimator m{1e-3, 0.0, 2};
  for (int i = 0; i < 5; ++i)
    m.observe(1000, 3.0);
  EXPECT_DOUBLE_EQ(m.a(), 1e-3);
  EXPECT_NEAR(m.estimate(1000), 3.0, 1e-9);
  EXPECT_GE(m.b(), 0.0);
}

TEST(BandwidthModel, StartsFromTheDefaultsAndMovesTowardObservations) {
  bandwidth_defaults d;
  d.ssd = 2e9;
  bandwidth_model bw{d, 0.3};
  EXPECT_DOUBLE_EQ(bw.bandwidth(5, tier::ssd), 2e9);
  bw.observe(5, tier::ssd, 1e9, 1.0); // 1 GB/s: the node's own figure replaces the guess
  EXPECT_DOUBLE_EQ(bw.bandwidth(5, tier::ssd), 1e9);
  double before = bw.bandwidth(5, tier::ssd);
  for (int i = 0; i < 20; ++i) {
    bw.observe(5, tier::ssd, 3e9, 1.0);
    const double now = bw.bandwidth(5, tier::ssd);
    EXPECT_GT(now, before);
    EXPECT_LE(now, 3e9);
    before = now;
  }
  EXPECT_NEAR(bw.bandwidth(5, tier::ssd), 3e9, 0.01e9);
  // Other nodes and tiers are untouched; nonsense observations are ignored.
  EXPECT_DOUBLE_EQ(bw.bandwidth(4, tier::ssd), 2e9);
  EXPECT_DOUBLE_EQ(bw.bandwidth(5, tier::dram), d.dram);
  bw.observe(5, tier::ssd, 0, 1.0);
  bw.observe(5, tier::ssd, 1e9, 0);
  EXPECT_EQ(bw.samples(5, tier::ssd), 21u);
}

TEST(StartupEstimator, IsQueueWaitPlusBytesOverTheTierBandwidth) {
  bandwidth_defaults d;
  d.dram = 10e9;
  d.ssd = 2e9;
  startup_estimator s{d, 0.0};
  EXPECT_DOUBLE_EQ(s.estimate(0, tier::dram, 20e9, 0), 2.0);
  EXPECT_DOUBLE_EQ(s.estimate(0, tier::ssd, 20e9, 3.0), 13.0);
  s.observe_load(0, tier::ssd, 20e9, 20.0); // this node's SSD turns out to do 1 GB/s
  EXPECT_DOUBLE_EQ(s.estimate(0, tier::ssd, 20e9, 0), 20.0);
  EXPECT_DOUBLE_EQ(s.estimate(1, tier::ssd, 20e9, 0), 10.0);
}

TEST(StartupEstimator, QueueWaitIsTheQueuedBytesOverEachTiersLearnedBandwidth) {
  bandwidth_defaults d;
  d.dram = 10e9;
  d.ssd = 2e9;
  startup_estimator s{d, 0.0};
  EXPECT_DOUBLE_EQ(s.queue_wait(0, 0, 0), 0.0);
  EXPECT_DOUBLE_EQ(s.queue_wait(0, 4e9, 10e9), 2.0 + 1.0);
  s.observe_load(1, tier::ssd, 4e9, 4.0); // node 1 reads at 1 GB/s
  EXPECT_DOUBLE_EQ(s.queue_wait(1, 4e9, 0), 4.0);
  // The wait feeds the estimate: a node busy loading starts a new model later.
  EXPECT_DOUBLE_EQ(s.estimate(1, tier::dram, 10e9, s.queue_wait(1, 4e9, 0)), 5.0);
}

} // namespace
} // namespace thaw::sched
