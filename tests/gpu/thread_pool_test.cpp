// The host compute pool: run() computes on the pool's own threads, one caller at a time, and
// those threads are marked as compute threads.
#include "gpu/host/thread_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <sched.h>
#include <set>
#include <thread>
#include <vector>

namespace thaw::host {
namespace {

TEST(thread_pool, run_computes_on_the_pool_not_the_caller) {
  thread_pool pool(3);
  const auto caller = std::this_thread::get_id();
  std::mutex m;
  std::set<std::thread::id> seen;
  std::thread::id leader;
  pool.run([&] {
    leader = std::this_thread::get_id();
    pool.parallel_for(300, [&](std::int64_t, std::int64_t) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5)); // all three take a part
      std::lock_guard lock(m);
      seen.insert(std::this_thread::get_id());
    });
  });
  EXPECT_NE(leader, caller);
  EXPECT_EQ(seen.count(caller), 0u);
  EXPECT_EQ(seen.size(), 3u); // the leader and both helpers
  EXPECT_EQ(seen.count(leader), 1u);
}

TEST(thread_pool, parallel_for_inside_run_covers_the_range_once) {
  thread_pool pool(4);
  for (int n : {1, 3, 4, 100}) {
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
    pool.run([&] {
      pool.parallel_for(n, [&](std::int64_t b, std::int64_t e) {
        for (auto i = b; i < e; ++i)
          hits[static_cast<std::size_t>(i)]++;
      });
    });
    for (auto& h : hits)
      EXPECT_EQ(h.load(), 1);
  }
}

TEST(thread_pool, concurrent_callers_take_turns_and_nested_runs_are_inline) {
  thread_pool pool(2);
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  std::atomic<int> done{0};
  auto job = [&] {
    const int now = ++inside;
    most = std::max(most.load(), now);
    pool.run([&] { ++done; }); // from the leader itself: runs inline, no deadlock
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    --inside;
  };
  std::vector<std::thread> callers;
  for (int i = 0; i < 4; ++i)
    callers.emplace_back([&] {
      for (int k = 0; k < 5; ++k)
        pool.run(job);
    });
  for (auto& t : callers)
    t.join();
  EXPECT_EQ(most.load(), 1); // never two tasks at once
  EXPECT_EQ(done.load(), 20);
}

TEST(thread_pool, a_pool_of_one_runs_parallel_for_on_the_leader) {
  thread_pool pool(1);
  EXPECT_EQ(pool.size(), 1);
  std::thread::id ran;
  pool.run([&] { pool.parallel_for(10, [&](std::int64_t, std::int64_t) { ran = std::this_thread::get_id(); }); });
  EXPECT_NE(ran, std::this_thread::get_id());
}

TEST(thread_pool, its_threads_are_batch_threads) {
  // Whether the kernel allows SCHED_BATCH here is checked on a scratch thread first: where it
  // refuses, the pool's threads run as before and there is nothing to see.
  bool allowed = false;
  std::thread([&] { allowed = mark_compute_thread(); }).join();
  if (!allowed)
    GTEST_SKIP() << "this kernel refuses SCHED_BATCH";
  thread_pool pool(2);
  std::mutex m;
  std::vector<int> policies;
  pool.run([&] {
    pool.parallel_for(2, [&](std::int64_t, std::int64_t) {
      std::lock_guard lock(m);
      policies.push_back(sched_getscheduler(0));
    });
  });
  ASSERT_EQ(policies.size(), 2u);
  for (int p : policies)
    EXPECT_EQ(p, SCHED_BATCH);
  EXPECT_NE(sched_getscheduler(0), SCHED_BATCH); // the caller is left alone
}

} // namespace
} // namespace thaw::host
