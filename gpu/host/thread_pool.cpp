#include "gpu/host/thread_pool.hpp"

#include <cstring>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace thaw::host {

namespace {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

constexpr int spin_rounds = 20000;

/// A compute thread's requested slice: longer than the kernel's default (0.7-3 ms by core count),
/// so that serving-path threads, with the default, count as the shorter-sliced ones.
constexpr std::uint64_t compute_slice_ns = 4'000'000;

} // namespace

bool mark_compute_thread() noexcept {
#if defined(__linux__) && defined(SYS_sched_setattr)
  // glibc has no sched_setattr wrapper in Debian 12; this is the kernel's struct sched_attr
  // (the fields up to sched_period; the kernel takes the size from `size`).
  struct {
    std::uint32_t size;
    std::uint32_t sched_policy;
    std::uint64_t sched_flags;
    std::int32_t sched_nice;
    std::uint32_t sched_priority;
    std::uint64_t sched_runtime;
    std::uint64_t sched_deadline;
    std::uint64_t sched_period;
  } attr;
  std::memset(&attr, 0, sizeof attr);
  attr.size = sizeof attr;
  attr.sched_policy = SCHED_BATCH;
  attr.sched_runtime = compute_slice_ns; // a slice request for fair policies since Linux 6.12
  if (::syscall(SYS_sched_setattr, 0, &attr, 0) == 0)
    return true;
  // Kernels that check sched_runtime only for deadline tasks accept it; any other refusal:
  // try the policy alone.
  sched_param param{};
  return ::sched_setscheduler(0, SCHED_BATCH, &param) == 0;
#else
  return false;
#endif
}

thread_pool::thread_pool(int threads) {
  for (int i = 1; i < threads; ++i)
    helpers_.emplace_back([this, i] { help(i); });
  leader_ = std::thread([this] { lead(); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard lock(mutex_);
    stop_.store(true);
  }
  start_cv_.notify_all();
  {
    std::lock_guard lock(lead_mutex_);
  }
  lead_cv_.notify_all();
  for (auto& t : helpers_)
    t.join();
  leader_.join();
}

void thread_pool::lead() {
  mark_compute_thread();
  for (;;) {
    const std::function<void()>* task = nullptr;
    {
      std::unique_lock lock(lead_mutex_);
      lead_cv_.wait(lock, [&] { return stop_.load() || task_ != nullptr; });
      if (task_ == nullptr)
        return; // stopping
      task = task_;
    }
    (*task)();
    {
      std::lock_guard lock(lead_mutex_);
      task_ = nullptr;
      task_done_ = true;
    }
    done_cv_.notify_all();
  }
}

void thread_pool::run(const std::function<void()>& fn) {
  if (std::this_thread::get_id() == leader_.get_id()) {
    fn();
    return;
  }
  std::lock_guard turn(run_turn_);
  {
    std::lock_guard lock(lead_mutex_);
    task_ = &fn;
    task_done_ = false;
  }
  lead_cv_.notify_one();
  std::unique_lock lock(lead_mutex_);
  done_cv_.wait(lock, [&] { return task_done_; });
}

void thread_pool::help(int index) {
  mark_compute_thread();
  std::uint64_t seen = 0;
  for (;;) {
    bool ready = false;
    for (int i = 0; i < spin_rounds && !ready; ++i) {
      ready = generation_.load(std::memory_order_acquire) != seen ||
              stop_.load(std::memory_order_relaxed);
      if (!ready)
        cpu_relax();
    }
    if (!ready) {
      std::unique_lock lock(mutex_);
      start_cv_.wait(lock, [&] {
        return stop_.load() || generation_.load(std::memory_order_acquire) != seen;
      });
    }
    if (stop_.load())
      return;
    seen = generation_.load(std::memory_order_acquire);
    const auto* job = job_;
    const std::int64_t n = job_n_;
    const std::int64_t parts = size();
    const std::int64_t b = n * index / parts;
    const std::int64_t e = n * (index + 1) / parts;
    if (b < e)
      (*job)(b, e);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void thread_pool::parallel_for(std::int64_t n,
                               const std::function<void(std::int64_t, std::int64_t)>& fn) {
  if (n <= 0)
    return;
  if (helpers_.empty() || n == 1) {
    fn(0, n);
    return;
  }
  job_ = &fn;
  job_n_ = n;
  pending_.store(static_cast<int>(helpers_.size()), std::memory_order_relaxed);
  {
    // Under the mutex so that a helper between its predicate check and its sleep cannot miss it.
    std::lock_guard lock(mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  start_cv_.notify_all();
  const std::int64_t e = n / size();
  if (e > 0)
    fn(0, e);
  for (int i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
    if (i < spin_rounds)
      cpu_relax();
    else
      std::this_thread::yield();
  }
}

} // namespace thaw::host
