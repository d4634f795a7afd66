#include "actors/scheduler.hpp"

#include <gtest/gtest.h>

namespace thaw {
namespace {

TEST(SchedulerOptions, DefaultsToLocalityAndReadsThePlacementTable) {
  auto d = scheduler_options::from_config(config{});
  ASSERT_TRUE(d) << d.err().to_string();
  EXPECT_EQ(d->policy, sched::policy_kind::locality);

  auto cfg = config::parse("[placement]\npolicy = \"locality-migrate\"\nseed = 9\n"
                           "ssd_gbps = 1.5\n");
  ASSERT_TRUE(cfg);
  auto o = scheduler_options::from_config(*cfg);
  ASSERT_TRUE(o) << o.err().to_string();
  EXPECT_EQ(o->policy, sched::policy_kind::locality_migrate);
  EXPECT_EQ(o->seed, 9u);
  EXPECT_DOUBLE_EQ(o->bandwidth.ssd, 1.5e9);
  EXPECT_DOUBLE_EQ(o->bandwidth.dram, sched::bandwidth_defaults{}.dram);
}

TEST(SchedulerOptions, AnUnknownPolicyOrABadBandwidthNamesItsKey) {
  auto cfg = config::parse("[placement]\npolicy = \"fastest\"\n");
  ASSERT_TRUE(cfg);
  auto o = scheduler_options::from_config(*cfg);
  ASSERT_FALSE(o);
  EXPECT_NE(o.err().message.find("placement.policy"), std::string::npos);
  EXPECT_NE(o.err().message.find("fastest"), std::string::npos);

  auto bw = config::parse("[placement]\ndram_gbps = 0\n");
  ASSERT_TRUE(bw);
  auto b = scheduler_options::from_config(*bw);
  ASSERT_FALSE(b);
  EXPECT_NE(b.err().message.find("placement.dram_gbps"), std::string::npos);
}

} // namespace
} // namespace thaw
