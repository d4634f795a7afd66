#include "transport/ucx_worker.hpp"

#include "transport/ucx_check.hpp"

#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <unistd.h>

namespace thaw::transport {

expected<std::unique_ptr<ucx_worker>> ucx_worker::create() {
  std::unique_ptr<ucx_worker> w{new ucx_worker()};

  ucp_config_t* config = nullptr;
  THAW_UCX_CHECK(ucp_config_read(nullptr, nullptr, &config), "data plane");
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 0;
  const ucs_status_t init_status = ucp_init(&params, config, &w->context_);
  ucp_config_release(config);
  THAW_UCX_CHECK(init_status, "data plane");

  ucp_worker_params_t wparams{};
  wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wparams.thread_mode = UCS_THREAD_MODE_MULTI;
  THAW_UCX_CHECK(ucp_worker_create(w->context_, &wparams, &w->worker_), "data plane");

  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_THREAD_MODE;
  THAW_UCX_CHECK(ucp_worker_query(w->worker_, &attr), "data plane");
  if (attr.thread_mode != UCS_THREAD_MODE_MULTI)
    return make_error(errc::unsupported,
                      "data plane: this UCX build has no thread-safe workers "
                      "(configure --enable-mt)");
  return w;
}

ucx_worker::~ucx_worker() {
  stop_progress();
  if (wakeup_fd_ >= 0)
    ::close(wakeup_fd_);
  if (worker_ != nullptr)
    ucp_worker_destroy(worker_);
  if (context_ != nullptr)
    ucp_cleanup(context_);
}

status ucx_worker::start_progress() {
  // Wakeup mode: sleep on the worker's event fd. Any failure here leaves the thread polling,
  // which works everywhere but burns a core, so say so.
  if (const ucs_status_t s = ucp_worker_get_efd(worker_, &event_fd_); s != UCS_OK) {
    spdlog::warn("data plane: ucp_worker_get_efd: {}; the progress thread polls instead",
                 ucs_status_string(s));
  } else if (int ep = ::epoll_create1(EPOLL_CLOEXEC); ep < 0) {
    spdlog::warn("data plane: epoll_create1: {}; the progress thread polls instead",
                 std::strerror(errno));
  } else {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = event_fd_;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, event_fd_, &ev) != 0) {
      spdlog::warn("data plane: epoll_ctl: {}; the progress thread polls instead",
                   std::strerror(errno));
      ::close(ep);
    } else {
      wakeup_fd_ = ep;
    }
  }
  thread_ = std::thread([this] { run(); });
  return {};
}

void ucx_worker::defer(std::function<void()> task) {
  {
    std::lock_guard lock{deferred_mutex_};
    deferred_.push_back(std::move(task));
  }
  has_deferred_.store(true, std::memory_order_release);
  wake();
}

void ucx_worker::begin_op() {
  outstanding_.fetch_add(1, std::memory_order_acq_rel);
  wake();
}

void ucx_worker::end_op() { outstanding_.fetch_sub(1, std::memory_order_acq_rel); }

void ucx_worker::wake() {
  if (worker_ != nullptr && thread_.joinable())
    (void)ucp_worker_signal(worker_);
}

void ucx_worker::run_deferred() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock{deferred_mutex_};
    tasks.swap(deferred_);
    has_deferred_.store(false, std::memory_order_release);
  }
  for (auto& t : tasks)
    t();
}

void ucx_worker::run() {
  while (!stopping_.load(std::memory_order_acquire)) {
    while (ucp_worker_progress(worker_) != 0) {
    }
    if (has_deferred_.load(std::memory_order_acquire)) {
      run_deferred();
      continue;
    }
    if (outstanding_.load(std::memory_order_acquire) > 0 || wakeup_fd_ < 0) {
      std::this_thread::yield();
      continue;
    }
    // Nothing outstanding: arm and sleep. BUSY means events arrived since the last progress.
    const ucs_status_t s = ucp_worker_arm(worker_);
    if (s == UCS_ERR_BUSY)
      continue;
    if (s != UCS_OK) {
      spdlog::warn("data plane: ucp_worker_arm: {}; the progress thread polls instead",
                   ucs_status_string(s));
      ::close(wakeup_fd_);
      wakeup_fd_ = -1;
      continue;
    }
    // The bound only matters if a wakeup were ever lost; a tick a second costs nothing.
    epoll_event ev{};
    (void)::epoll_wait(wakeup_fd_, &ev, 1, 1000);
  }
  run_deferred();
}

void ucx_worker::stop_progress() {
  if (!thread_.joinable())
    return;
  stopping_.store(true, std::memory_order_release);
  (void)ucp_worker_signal(worker_);
  thread_.join();
}

void ucx_worker::progress_until(const std::function<bool()>& done, int max_rounds) {
  for (int i = 0; i < max_rounds && !done(); ++i) {
    if (ucp_worker_progress(worker_) == 0)
      std::this_thread::yield();
    if (has_deferred_.load(std::memory_order_acquire))
      run_deferred();
  }
}

} // namespace thaw::transport
