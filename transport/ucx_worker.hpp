#pragma once
/// One UCX context and worker with a progress thread in wakeup mode: the machinery under
/// `data_plane` (transport/data_plane.hpp). Internal to transport/; includes UCX headers.
///
/// The worker is created thread-safe (UCS_THREAD_MODE_MULTI) so that any thread may post sends
/// and gets; only the progress thread calls ucp_worker_progress, and UCX callbacks (completions,
/// active messages, endpoint errors, connection requests) therefore run on it. The thread sleeps
/// on the worker's event fd (ucp_worker_get_efd + ucp_worker_arm + epoll) and polls only while
/// some posted operation is outstanding (`begin_op` / `end_op`). Work that must not run inside a
/// UCX callback (creating or closing endpoints, sending replies) is queued with `defer` and run
/// by the thread between progress calls.

#include "runtime/common/error.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <ucp/api/ucp.h>

namespace thaw::transport {

class ucx_worker {
public:
  /// Context with RMA, AM and WAKEUP features, and a multi-threaded worker. The progress thread
  /// is not running yet (`start_progress`) so that handlers can be installed first.
  [[nodiscard]] static expected<std::unique_ptr<ucx_worker>> create();

  /// Stops the thread if running, then destroys the worker and the context.
  ~ucx_worker();
  ucx_worker(const ucx_worker&) = delete;
  ucx_worker& operator=(const ucx_worker&) = delete;

  [[nodiscard]] ucp_context_h context() const noexcept { return context_; }
  [[nodiscard]] ucp_worker_h worker() const noexcept { return worker_; }

  /// Starts the progress thread. Wakeup mode when the worker offers an event fd; otherwise it
  /// logs why and polls (yielding between rounds).
  [[nodiscard]] status start_progress();

  /// Runs `task` on the progress thread after the current progress round. Thread-safe.
  void defer(std::function<void()> task);

  /// Marks an operation outstanding: the thread keeps polling until the matching `end_op`.
  void begin_op();
  void end_op();

  /// Wakes the thread from its event wait.
  void wake();

  /// Stops and joins the progress thread (idempotent). Deferred tasks still queued are run.
  /// Afterwards the caller owns the worker and may progress it directly (`progress_until`).
  void stop_progress();

  /// Progresses the worker on the calling thread until `done()` or `max_rounds` rounds; for
  /// shutdown, once the progress thread is joined.
  void progress_until(const std::function<bool()>& done, int max_rounds);

  /// Whether the thread sleeps on the event fd (false: polling fallback).
  [[nodiscard]] bool wakeup_mode() const noexcept { return wakeup_fd_ >= 0; }

private:
  ucx_worker() = default;
  void run();
  void run_deferred();

  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int event_fd_ = -1;  // the worker's efd (owned by UCX)
  int wakeup_fd_ = -1; // our epoll instance watching event_fd_
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> outstanding_{0};
  std::mutex deferred_mutex_;
  std::vector<std::function<void()>> deferred_;
  std::atomic<bool> has_deferred_{false};
};

} // namespace thaw::transport
