#include "actors/scheduler.hpp"

#include "actors/embedded.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <gtest/gtest.h>

#include <memory>
#include <mutex>

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

/// What a scripted node saw of the start it was asked for.
struct start_seen {
  std::mutex mutex;
  int starts = 0;
  std::vector<caf::actor> peers;
};

/// A node as the scheduler talks to it, scripted: it answers every start with `refusal`, or
/// with an instance when there is none. (The real node is tested in serve_test and the
/// cluster process tests; this one lets the scheduler's side be checked alone.)
caf::behavior scripted_node(caf::event_based_actor* self, std::string name,
                            std::optional<error> refusal, std::shared_ptr<start_seen> seen) {
  return {
      [=](start_atom, model_spec&,
          std::vector<caf::actor>& peers) -> caf::result<instance_started> {
        {
          std::lock_guard lock{seen->mutex};
          ++seen->starts;
          seen->peers = peers;
        }
        if (refusal)
          return to_caf(*refusal);
        instance_started s;
        s.handle = caf::actor_cast<caf::actor>(self); // any live actor will do as the handle
        s.node = name;
        s.source = "ssd";
        return s;
      },
  };
}

class SchedulerPlacement : public ::testing::Test {
protected:
  SchedulerPlacement() : cfg_(make_actor_system_config()), sys_(*cfg_) {}

  /// Registers a scripted node that reports `dram` in its DRAM tier.
  std::shared_ptr<start_seen> add_node(const std::string& name, std::optional<error> refusal,
                                       std::vector<std::string> dram = {}) {
    auto seen = std::make_shared<start_seen>();
    auto node = sys_.spawn(scripted_node, name, refusal, seen);
    node_status st;
    st.name = name;
    st.handle = node;
    st.dram_models = std::move(dram);
    st.slots.push_back(slot_info{0, "cpu", 8ull << 30, 0, {}});
    caf::anon_send(scheduler_, node_atom::value, st);
    nodes_.push_back(node);
    return seen;
  }

  expected<instance_started> place(const std::string& node = {}) {
    model_spec spec;
    spec.name = "m";
    spec.checkpoint = "models/m";
    spec.weight_bytes = 1 << 20;
    caf::scoped_actor self{sys_};
    expected<instance_started> out = make_error(errc::internal, "no answer");
    auto on_ok = [&](instance_started& s) { out = std::move(s); };
    auto on_err = [&](caf::error& e) { out = from_caf(e); };
    if (node.empty())
      self->request(scheduler_, std::chrono::seconds(10), place_atom::value, spec)
          .receive(on_ok, on_err);
    else
      self->request(scheduler_, std::chrono::seconds(10), place_atom::value, spec, node)
          .receive(on_ok, on_err);
    return out;
  }

  ~SchedulerPlacement() override {
    for (auto& n : nodes_)
      caf::anon_send_exit(n, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(scheduler_, caf::exit_reason::user_shutdown);
  }

  std::unique_ptr<caf::actor_system_config> cfg_;
  caf::actor_system sys_;
  caf::actor scheduler_ = spawn_scheduler(sys_);
  std::vector<caf::actor> nodes_;
};

TEST_F(SchedulerPlacement, ANodeWithoutTheCheckpointIsSkippedAndTheStartNamesWhoHoldsIt) {
  auto lacking = add_node("lacking", make_error(errc::not_found, "models/m: not on this disk"));
  auto other = add_node("other", make_error(errc::resource_exhausted, "full"));
  auto holder = add_node("holder", std::nullopt, {"models/m"});
  // Asked for "lacking" by name: its peers to pull from, the holder (m in DRAM) first, then
  // the rest, whose disks might have it.
  auto by_name = place("lacking");
  ASSERT_FALSE(by_name);
  EXPECT_EQ(by_name.err().code, errc::not_found) << by_name.err().to_string();
  {
    std::lock_guard lock{lacking->mutex};
    ASSERT_EQ(lacking->peers.size(), 2u);
    EXPECT_EQ(lacking->peers[0], nodes_[2]);
    EXPECT_EQ(lacking->peers[1], nodes_[1]);
  }
  // Placed freely: whichever is asked first, the start lands on the holder.
  auto placed = place();
  ASSERT_TRUE(placed) << placed.err().to_string();
  EXPECT_EQ(placed->node, "holder");
}

TEST_F(SchedulerPlacement, WhenNoNodeHasTheCheckpointThePlacementIsNotFoundNamingEach) {
  add_node("a", make_error(errc::not_found, "models/m: not on node a"));
  add_node("b", make_error(errc::not_found, "models/m: not on node b"));
  auto r = place();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::not_found) << r.err().to_string();
  EXPECT_NE(r.err().message.find("not on node a"), std::string::npos) << r.err().message;
  EXPECT_NE(r.err().message.find("not on node b"), std::string::npos) << r.err().message;
}

TEST_F(SchedulerPlacement, ACorruptCheckpointFailsThePlacementWithoutAskingFurther) {
  auto a = add_node("a", make_error(errc::corrupt, "models/m: checksum mismatch"));
  auto b = add_node("b", make_error(errc::corrupt, "models/m: checksum mismatch"));
  auto r = place();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::corrupt);
  std::lock_guard la{a->mutex};
  std::lock_guard lb{b->mutex};
  EXPECT_EQ(a->starts + b->starts, 1);
}

} // namespace
} // namespace thaw
