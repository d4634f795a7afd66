#pragma once
/// The host runner's compute threads. A pool is a leader and helpers, all started when the pool
/// is made and kept for its life: a node makes one pool per CPU slot and the instances placed in
/// the slot share it, so a cold start creates no compute thread and two instances of a slot take
/// turns on its cores instead of oversubscribing them.
///
/// Why a leader instead of the caller: an instance's thread is new at every cold start, and the
/// kernel first runs a new thread on its parent's core, often one a helper is using. With the
/// caller computing the first range of every parallel_for, the first prefill of a new instance
/// ran two compute threads on one core while the other idled, 11 ms became 14-36 ms (perf sched
/// timehist showed it). The leader is as old as the pool, so the kernel has long since spread
/// it and the helpers over the cores; the caller only waits.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace thaw::host {

/// Marks the calling thread as a compute thread: SCHED_BATCH (the kernel treats it as CPU-bound
/// and lets it preempt nobody on wake-up) with a requested time slice longer than the default
/// (Linux 6.12+ schedules a waking thread with a shorter slice at once). A serving-path thread that
/// wakes on a busy core (the HTTP edge writing a token, an actor routing one) then runs without
/// waiting out the compute thread's slice: from the gateway to the client, a first token's median
/// went from 2.3 ms to 0.14 ms on a two-core machine with both cores computing. Best effort:
/// false when the kernel refuses, and the thread runs as before.
bool mark_compute_thread() noexcept;

class thread_pool {
public:
  /// `threads` compute threads in all (at least one): the leader and threads - 1 helpers.
  explicit thread_pool(int threads);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  /// Threads a parallel_for splits its work among.
  [[nodiscard]] int size() const noexcept { return static_cast<int>(helpers_.size()) + 1; }

  /// Runs `fn` on the leader and returns when it has; the parallel_for calls `fn` makes split
  /// their work between the leader and the helpers, and the calling thread computes nothing.
  /// Calls from several threads run one at a time; a call from inside `fn` runs inline. `fn`
  /// must not throw.
  void run(const std::function<void()>& fn);

  /// Splits [0, n) into size() contiguous ranges, one per thread, and returns when all are done.
  /// Call it from inside run() (the leader takes the first range) or from one thread that owns
  /// the pool and does not use run() (that thread takes the first range); never concurrently.
  void parallel_for(std::int64_t n,
                    const std::function<void(std::int64_t begin, std::int64_t end)>& fn);

private:
  void help(int index);
  void lead();

  std::vector<std::thread> helpers_;
  std::thread leader_;

  // parallel_for: helpers spin briefly on generation_ before sleeping on start_cv_: a decode step
  // issues dozens of short parallel_for calls, and a futex wake-up per call costs more than the
  // work.
  std::mutex mutex_;
  std::condition_variable start_cv_;
  const std::function<void(std::int64_t, std::int64_t)>* job_ = nullptr;
  std::int64_t job_n_ = 0;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};

  // run(): one caller at a time hands the leader a task and sleeps until it is done.
  std::mutex run_turn_;
  std::mutex lead_mutex_;
  std::condition_variable lead_cv_;
  std::condition_variable done_cv_;
  const std::function<void()>* task_ = nullptr;
  bool task_done_ = false;
};

} // namespace thaw::host
