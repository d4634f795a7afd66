// The node's parts one by one: the slot, the SSD tier and the DRAM tier actors, and the node
// placing starts on its slots. Real actors on the tiny model.

#include "actors/dram_tier.hpp"
#include "actors/embedded.hpp"
#include "actors/instance.hpp"
#include "actors/node.hpp"
#include "actors/slot.hpp"
#include "actors/ssd_tier.hpp"
#include "runtime/common/metrics.hpp"
#include "tests/support/test_checkpoint.hpp"
#include "tests/support/test_models.hpp"
#if THAW_HAVE_CUDA
#include "gpu/cuda/cuda_device.hpp"
#include "tests/support/cuda_test.hpp"
#endif

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace thaw {
namespace {

class NodeParts : public testing::tiny_model_suite {
protected:
  void SetUp() override {
    cfg_ = make_actor_system_config();
    sys_ = std::make_unique<caf::actor_system>(*cfg_);
  }
  void TearDown() override {
    for (auto& a : spawned_)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    sys_.reset();
  }

  static model_spec spec() {
    model_spec m;
    m.name = "tiny";
    m.checkpoint = ckpt();
    m.kv_blocks = 64;
    return m;
  }

  /// Bytes an instance of spec() takes in a slot.
  static std::uint64_t tiny_bytes() {
    auto ck = checkpoint::open(ckpt());
    EXPECT_TRUE(ck) << ck.err().to_string();
    return instance_bytes(ck->total_bytes(), ck->config(), spec().kv_blocks);
  }

  std::shared_ptr<node_context> context(node_options no = {}) {
    no.loader.pool_bytes = 64ull << 20;
    no.loader.chunk_bytes = 64 << 10;
    no.threads = 1;
    auto ctx = node_context::create(no, std::make_shared<metrics::registry>());
    EXPECT_TRUE(ctx) << ctx.err().to_string();
    return *ctx;
  }

  template <class Handle>
  Handle keep(Handle h) {
    spawned_.push_back(caf::actor_cast<caf::actor>(h));
    return h;
  }

  /// request(...).receive(...) as an expected<T>.
  template <class T, class Handle, class... Ts>
  expected<T> ask(const Handle& to, Ts&&... xs) {
    caf::scoped_actor self{*sys_};
    expected<T> out = make_error(errc::internal, "no answer");
    self->request(to, caf::infinite, std::forward<Ts>(xs)...)
        .receive([&](T& x) { out = std::move(x); }, [&](caf::error& e) { out = from_caf(e); });
    return out;
  }

  std::unique_ptr<caf::actor_system_config> cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  std::vector<caf::actor> spawned_;
};

TEST_F(NodeParts, GpusTheMachineDoesNotHaveAreRefusedSayingWhy) {
#if THAW_HAVE_CUDA
  if (cuda::device_count() > 0)
    GTEST_SKIP() << "this machine has a GPU; the test is for machines without one";
#endif
  node_options no;
  no.gpus = 1;
  no.loader.pool_bytes = 64ull << 20;
  auto ctx = node_context::create(no, std::make_shared<metrics::registry>());
  ASSERT_FALSE(ctx);
  EXPECT_NE(ctx.err().message.find("node.gpus = 1"), std::string::npos) << ctx.err().to_string();
#if THAW_HAVE_CUDA
  EXPECT_EQ(ctx.err().code, errc::device_error);
  EXPECT_NE(ctx.err().message.find(cuda::unavailable_reason()), std::string::npos)
      << ctx.err().to_string();
#else
  EXPECT_EQ(ctx.err().code, errc::unsupported);
#endif
}

#if THAW_HAVE_CUDA
TEST_F(NodeParts, AGpuSlotLoadsItsInstancesOntoTheGpuFromTheSharedTier) {
  THAW_SKIP_WITHOUT_GPU();
  node_options no;
  no.gpus = 1;
  auto ctx = context(no);
  ASSERT_EQ(ctx->gpus.size(), 1u);
  caf::scoped_actor node{*sys_};
  auto* gpu = ctx->gpus[0].get();
  auto slot = keep(spawn_slot(*sys_, ctx, 1, gpu->memory_bytes(),
                              caf::actor_cast<caf::actor>(node), gpu));
  auto ck = std::make_shared<const checkpoint>(*checkpoint::open(ckpt()));
  auto first = ask<instance_started>(slot, start_atom::value, spec(), slot_load{ck, nullptr});
  ASSERT_TRUE(first) << first.err().to_string();
  EXPECT_EQ(first->source, "ssd");
  EXPECT_FALSE(first->mapped);
  auto second = ask<instance_started>(slot, start_atom::value, spec(), slot_load{ck, nullptr});
  ASSERT_TRUE(second) << second.err().to_string();
  EXPECT_EQ(second->source, "dram") << "read from SSD once, for every device of the node";
  auto st = ask<slot_report>(slot, status_atom::value);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->info.kind, "cuda");
  EXPECT_EQ(st->info.used_bytes, 2 * tiny_bytes());
}
#endif

TEST_F(NodeParts, ASlotRefusesWhatDoesNotFitAndFreesTheBytesOfAKilledInstance) {
  auto ctx = context();
  const auto bytes = tiny_bytes();
  caf::scoped_actor node{*sys_}; // stands in for the node: gets (changed_atom)
  auto slot = keep(spawn_slot(*sys_, ctx, 3, bytes + bytes / 2, caf::actor_cast<caf::actor>(node)));
  auto ck = std::make_shared<const checkpoint>(*checkpoint::open(ckpt()));

  auto first = ask<instance_started>(slot, start_atom::value, spec(), slot_load{ck, nullptr});
  ASSERT_TRUE(first) << first.err().to_string();
  auto st = ask<slot_report>(slot, status_atom::value);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->info.index, 3);
  EXPECT_EQ(st->info.used_bytes, bytes);
  ASSERT_EQ(st->instances.size(), 1u);
  EXPECT_EQ(st->instances[0].handle, first->handle);
  EXPECT_EQ(st->info.models, std::vector<std::string>{"tiny"});

  auto second = ask<instance_started>(slot, start_atom::value, spec(), slot_load{ck, nullptr});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.err().code, errc::resource_exhausted);
  EXPECT_NE(second.err().message.find(std::to_string(bytes)), std::string::npos)
      << second.err().message;

  // An instance that is killed frees its bytes; the slot lives on and tells its node.
  caf::anon_send_exit(first->handle, caf::exit_reason::kill);
  bool changed = false;
  node->receive([&](changed_atom) { changed = true; },
                caf::after(std::chrono::seconds(10)) >> [] {});
  EXPECT_TRUE(changed);
  st = ask<slot_report>(slot, status_atom::value);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->info.used_bytes, 0u);
  EXPECT_TRUE(st->instances.empty());
  auto again = ask<instance_started>(slot, start_atom::value, spec(), slot_load{ck, nullptr});
  ASSERT_TRUE(again) << again.err().to_string();

  // When the slot goes, its instances go.
  caf::scoped_actor watcher{*sys_};
  watcher->monitor(again->handle);
  caf::anon_send_exit(slot, caf::exit_reason::user_shutdown);
  bool down = false;
  watcher->receive([&](caf::down_msg&) { down = true; },
                   caf::after(std::chrono::seconds(10)) >> [] {});
  EXPECT_TRUE(down);
}

TEST_F(NodeParts, TheSsdTierOpensChecksContentAndLends) {
  auto ssd = keep(spawn_ssd_tier(*sys_, context()));
  auto none = ask<ssd_tier_report>(ssd, status_atom::value);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->dirs.empty());

  auto found = ask<disk_checkpoint>(ssd, open_atom::value, ckpt(), std::string{});
  ASSERT_TRUE(found) << found.err().to_string();
  const auto id = found->ckpt->content_id();
  EXPECT_TRUE(found->tokenizer_json.empty()); // open: the checkpoint only
  auto same = ask<disk_checkpoint>(ssd, open_atom::value, ckpt(), id);
  EXPECT_TRUE(same) << same.err().to_string();

  auto other = ask<disk_checkpoint>(ssd, open_atom::value, ckpt(), std::string{"0123abcd"});
  ASSERT_FALSE(other);
  EXPECT_EQ(other.err().code, errc::not_found);
  EXPECT_NE(other.err().message.find("other content"), std::string::npos) << other.err().message;

  auto missing =
      ask<disk_checkpoint>(ssd, open_atom::value, (dir() / "absent").string(), std::string{});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.err().code, errc::not_found);

  auto lent = ask<disk_checkpoint>(ssd, lend_atom::value, ckpt());
  ASSERT_TRUE(lent) << lent.err().to_string();
  EXPECT_NE(lent->tokenizer_json.find("\"vocab\""), std::string::npos);

  auto st = ask<ssd_tier_report>(ssd, status_atom::value);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->dirs, (std::map<std::string, std::string>{{id, ckpt()}}));
}

TEST_F(NodeParts, TheDramTierPrefetchesAndNamesWhyItCannotFetch) {
  auto ctx = context();
  auto ssd = keep(spawn_ssd_tier(*sys_, ctx));
  auto dram = keep(spawn_dram_tier(*sys_, ctx, ssd));
  auto st = ask<dram_tier_report>(dram, status_atom::value);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->ready.empty());
  EXPECT_EQ(st->bytes, 64ull << 20);
  EXPECT_EQ(st->used_bytes, 0u);

  auto read = ask<prefetched>(dram, prefetch_atom::value, ckpt());
  ASSERT_TRUE(read) << read.err().to_string();
  EXPECT_GT(read->bytes, 0u);
  EXPECT_GT(read->seconds, 0.0);
  auto there = ask<prefetched>(dram, prefetch_atom::value, ckpt());
  ASSERT_TRUE(there);
  EXPECT_EQ(there->seconds, 0.0); // there already
  st = ask<dram_tier_report>(dram, status_atom::value);
  ASSERT_TRUE(st);
  ASSERT_EQ(st->ready.size(), 1u);
  EXPECT_EQ(st->ready[0], checkpoint::open(ckpt())->content_id());
  EXPECT_GE(st->used_bytes, read->bytes);
  EXPECT_TRUE(st->pulled.empty());

  // Nothing to pull with (this context has no data plane): not_found, naming both reasons.
  auto m = spec();
  m.checkpoint = (dir() / "elsewhere").string();
  auto fetched = ask<dram_model>(dram, fetch_atom::value, m, std::vector<caf::actor>{},
                                 std::string{"not on this disk"});
  ASSERT_FALSE(fetched);
  EXPECT_EQ(fetched.err().code, errc::not_found);
  EXPECT_NE(fetched.err().message.find("no data plane"), std::string::npos)
      << fetched.err().message;
  EXPECT_NE(fetched.err().message.find("not on this disk"), std::string::npos)
      << fetched.err().message;

  // Lending needs a data plane too.
  auto lend = ask<pull_offer>(dram, pull_atom::value, ckpt(), std::uint64_t{64 << 10});
  ASSERT_FALSE(lend);
  EXPECT_EQ(lend.err().code, errc::unsupported) << lend.err().to_string();
}

TEST_F(NodeParts, ConcurrentStartsAreEachPlacedOnAFreeSlot) {
  // Two slots with room for one instance each, and two starts asked at once: each goes to the
  // slot the other did not take.
  node_options no;
  no.cpu_slots = 2;
  const auto bytes = tiny_bytes();
  no.slot_memory_bytes = bytes + bytes / 2;
  auto node = keep(spawn_node(*sys_, context(no), caf::actor{}));
  caf::scoped_actor self{*sys_};
  std::vector<expected<instance_started>> out;
  // Both asked before either answer is awaited.
  auto a = self->request(node, caf::infinite, start_atom::value, spec(), std::vector<caf::actor>{});
  auto b = self->request(node, caf::infinite, start_atom::value, spec(), std::vector<caf::actor>{});
  for (auto* h : {&a, &b})
    h->receive([&](instance_started& s) { out.emplace_back(std::move(s)); },
               [&](caf::error& e) { out.emplace_back(from_caf(e)); });
  ASSERT_EQ(out.size(), 2u);
  for (auto& r : out)
    EXPECT_TRUE(r) << r.err().to_string();
  auto st = ask<node_status>(node, status_atom::value);
  ASSERT_TRUE(st);
  ASSERT_EQ(st->slots.size(), 2u);
  for (const auto& s : st->slots) {
    EXPECT_EQ(s.used_bytes, bytes) << "slot " << s.index;
    EXPECT_EQ(s.models, std::vector<std::string>{"tiny"});
  }
  EXPECT_EQ(st->instances.size(), 2u);
  EXPECT_EQ(st->local_models, std::vector<std::string>{ckpt()});

  // A third finds no room, and says how much the freest slot has.
  auto third =
      ask<instance_started>(node, start_atom::value, spec(), std::vector<caf::actor>{});
  ASSERT_FALSE(third);
  EXPECT_EQ(third.err().code, errc::resource_exhausted);
  EXPECT_NE(third.err().message.find("freest slot"), std::string::npos) << third.err().message;

  // An instance killed outright (a kill passes along links) frees its slot; the node lives on.
  caf::anon_send_exit(out[0]->handle, caf::exit_reason::kill);
  std::size_t left = 2;
  for (int i = 0; i < 500 && left != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    auto now = ask<node_status>(node, status_atom::value);
    ASSERT_TRUE(now) << "the node went with its instance: " << now.err().to_string();
    left = now->instances.size();
  }
  EXPECT_EQ(left, 1u);
  auto fourth =
      ask<instance_started>(node, start_atom::value, spec(), std::vector<caf::actor>{});
  EXPECT_TRUE(fourth) << fourth.err().to_string();
}

} // namespace
} // namespace thaw
