#include "runtime/loader/dram_tier.hpp"

#include "tests/support/temp_dir.hpp"
#include "tests/support/test_checkpoint.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

namespace thaw {
namespace {

using namespace std::chrono_literals;

/// Three models of the same size (different seeds) and a pool that holds exactly two.
class DramTier : public ::testing::Test {
protected:
  void SetUp() override {
    for (std::uint64_t seed = 1; seed <= 3; ++seed) {
      testing::test_model_spec spec;
      spec.seed = seed;
      auto c = testing::make_test_checkpoint(dir / ("model-" + std::to_string(seed)), spec);
      ASSERT_TRUE(c) << c.err().to_string();
      models.push_back(std::move(*c));
    }
    per_model = models[0].chunks().size(); // 64 KiB checkpoint chunks in 64 KiB pool chunks
    auto p = chunk_pool::create(2 * per_model * (64 << 10), 64 << 10);
    ASSERT_TRUE(p);
    pool = std::move(*p);
    tier = std::make_unique<dram_tier>(*pool);
  }

  /// Plays the reader: marks every segment of a created entry verified.
  void fill(dram_tier::lease& l) {
    ASSERT_TRUE(l.created());
    for (std::size_t i = 0; i < l.model().segment_count(); ++i) {
      ASSERT_TRUE(tier->begin_read(l.model()));
      tier->end_read(l.model(), i, {});
    }
  }

  /// Loads a model into the tier and lets it go (ready, unpinned).
  void cache(const checkpoint& c) {
    auto l = tier->try_acquire(c);
    ASSERT_TRUE(l) << l.err().to_string();
    if (l->created())
      fill(*l);
  }

  testing::temp_dir dir;
  std::vector<checkpoint> models;
  std::size_t per_model = 0;
  std::unique_ptr<chunk_pool> pool;
  std::unique_ptr<dram_tier> tier;
};

TEST_F(DramTier, FirstAcquireCreatesLaterOnesShareAndReadyModelsServeFromMemory) {
  ASSERT_GT(per_model, 4u) << "the test model should span several chunks";
  auto first = tier->try_acquire(models[0]);
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->created());
  EXPECT_FALSE(first->was_ready());
  EXPECT_EQ(*tier->state_of(models[0].content_id()), dram_state::loading);
  EXPECT_EQ(pool->free_chunks(), per_model) << "a model's chunks are reserved whole";
  EXPECT_EQ(first->model().segment_count(), models[0].chunks().size());
  EXPECT_EQ(first->model().bytes(), models[0].total_bytes());

  auto second = tier->try_acquire(models[0]);
  ASSERT_TRUE(second);
  EXPECT_FALSE(second->created());
  EXPECT_EQ(&second->model(), &first->model());

  // The sharer waits for segment 0 until the filler marks it.
  auto waiter = std::async(std::launch::async, [&] {
    return tier->wait_segment(second->model(), 0, {});
  });
  EXPECT_EQ(waiter.wait_for(20ms), std::future_status::timeout);
  fill(*first);
  EXPECT_TRUE(waiter.get());
  EXPECT_EQ(*tier->state_of(models[0].content_id()), dram_state::ready);
  first->reset();
  second->reset();

  auto again = tier->try_acquire(models[0]);
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->created());
  EXPECT_TRUE(again->was_ready());
  EXPECT_EQ(pool->free_chunks(), per_model);
}

TEST_F(DramTier, EvictsTheLeastRecentlyUsedIdleModel) {
  cache(models[0]);
  cache(models[1]);
  cache(models[0]); // touch model 0: model 1 is now the least recently used
  EXPECT_EQ(tier->lru_order(),
            (std::vector<std::string>{models[1].content_id(), models[0].content_id()}));
  cache(models[2]);
  EXPECT_EQ(tier->evictions(), 1u);
  EXPECT_FALSE(tier->state_of(models[1].content_id()));
  EXPECT_EQ(tier->state_of(models[0].content_id()), dram_state::ready);
  EXPECT_EQ(tier->state_of(models[2].content_id()), dram_state::ready);
  EXPECT_EQ(pool->free_chunks(), 0u);
}

TEST_F(DramTier, PinnedModelsAreNeverEvicted) {
  cache(models[1]);
  cache(models[0]);
  auto pin = tier->try_acquire(models[1]); // the older one, pinned
  ASSERT_TRUE(pin);
  cache(models[2]); // must take model 0's chunks, though model 1 is older
  EXPECT_EQ(tier->state_of(models[1].content_id()), dram_state::ready);
  EXPECT_FALSE(tier->state_of(models[0].content_id()));

  // Both remaining models pinned: no room, and nothing is disturbed.
  auto pin2 = tier->try_acquire(models[2]);
  ASSERT_TRUE(pin2);
  auto refused = tier->try_acquire(models[0]);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.err().code, errc::resource_exhausted);
  EXPECT_EQ(tier->state_of(models[1].content_id()), dram_state::ready);
  EXPECT_EQ(tier->state_of(models[2].content_id()), dram_state::ready);
  EXPECT_EQ(tier->evictions(), 1u);
}

TEST_F(DramTier, BlockingAcquireWaitsForAPinToGoAndCanBeCancelled) {
  cache(models[0]);
  cache(models[1]);
  auto pin0 = tier->try_acquire(models[0]);
  auto pin1 = tier->try_acquire(models[1]);
  ASSERT_TRUE(pin0 && pin1);

  std::stop_source cancel;
  auto cancelled = std::async(std::launch::async, [&] {
    return tier->acquire(models[2], cancel.get_token());
  });
  EXPECT_EQ(cancelled.wait_for(20ms), std::future_status::timeout);
  cancel.request_stop();
  auto c = cancelled.get();
  ASSERT_FALSE(c);
  EXPECT_EQ(c.err().code, errc::cancelled);

  auto waiting = std::async(std::launch::async, [&] { return tier->acquire(models[2], {}); });
  EXPECT_EQ(waiting.wait_for(20ms), std::future_status::timeout);
  pin1->reset();
  auto got = waiting.get();
  ASSERT_TRUE(got) << got.err().to_string();
  EXPECT_TRUE(got->created());
  EXPECT_FALSE(tier->state_of(models[1].content_id()));
  EXPECT_EQ(tier->state_of(models[0].content_id()), dram_state::ready);
}

TEST_F(DramTier, ModelBiggerThanThePoolIsRefusedUpFront) {
  cache(models[0]);
  testing::test_model_spec big;
  big.vocab = 8000; // embeddings and lm_head alone are 4 MB
  big.seed = 9;
  auto huge = testing::make_test_checkpoint(dir / "huge-model", big);
  ASSERT_TRUE(huge) << huge.err().to_string();
  auto refused = tier->try_acquire(*huge);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.err().code, errc::resource_exhausted);
  const auto& msg = refused.err().message;
  EXPECT_NE(msg.find("huge-model"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(huge->total_bytes())), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(pool->capacity_bytes())), std::string::npos) << msg;
  auto blocking = tier->acquire(*huge, {});
  ASSERT_FALSE(blocking);
  EXPECT_EQ(blocking.err().code, errc::resource_exhausted);
  EXPECT_EQ(tier->state_of(models[0].content_id()), dram_state::ready);
  EXPECT_EQ(tier->evictions(), 0u);
}

TEST_F(DramTier, FailedReadDropsTheModelAndFreesItsChunksOnceReadsEnd) {
  auto filler = tier->try_acquire(models[0]);
  auto sharer = tier->try_acquire(models[0]);
  ASSERT_TRUE(filler && sharer);
  auto model = filler->shared_model(); // as the reader holds it
  auto& m = *model;
  ASSERT_TRUE(tier->begin_read(m));
  ASSERT_TRUE(tier->begin_read(m));
  tier->end_read(m, 0, make_error(errc::corrupt, "data-00000.bin: chunk 0: checksum mismatch"));
  EXPECT_FALSE(tier->state_of(models[0].content_id())) << "removed at once";
  EXPECT_FALSE(tier->begin_read(m)) << "no new reads into a failed model";
  auto seen = tier->wait_segment(sharer->model(), 1, {});
  ASSERT_FALSE(seen);
  EXPECT_EQ(seen.err().code, errc::corrupt);
  EXPECT_NE(seen.err().message.find("data-00000.bin"), std::string::npos);

  filler->reset();
  sharer->reset();
  EXPECT_EQ(pool->free_chunks(), per_model) << "a read is still writing into the chunks";
  tier->end_read(m, 1, {});
  EXPECT_EQ(pool->free_chunks(), 2 * per_model);

  // A fresh acquire starts over with a new entry.
  auto retry = tier->try_acquire(models[0]);
  ASSERT_TRUE(retry);
  EXPECT_TRUE(retry->created());
}

TEST_F(DramTier, LastLeaseOfALoadingModelAbandonsIt) {
  auto l = tier->try_acquire(models[0]);
  ASSERT_TRUE(l);
  auto model = l->shared_model();
  auto token = model->abandoned();
  EXPECT_FALSE(token.stop_requested());
  l->reset();
  EXPECT_TRUE(token.stop_requested()) << "queued reads for it are skipped";
  EXPECT_FALSE(tier->state_of(models[0].content_id()));
  tier->wait_released(*model);
  EXPECT_EQ(pool->free_chunks(), 2 * per_model);
}

TEST_F(DramTier, EvictUnpinnedEmptiesIdleModels) {
  cache(models[0]);
  cache(models[1]);
  auto pin = tier->try_acquire(models[1]);
  EXPECT_EQ(tier->evict_unpinned(), 1u);
  EXPECT_FALSE(tier->state_of(models[0].content_id()));
  EXPECT_TRUE(tier->state_of(models[1].content_id()));
  EXPECT_STREQ(to_string(dram_state::ready), "ready");
}

} // namespace
} // namespace thaw
