#include "gpu/cuda/cuda_device.hpp"

#include "gpu/cuda/cuda_check.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace thaw::cuda {
namespace {

constexpr std::uint64_t small_granule = 4096;
constexpr std::uint64_t large_granule = 2ull << 20;
constexpr std::uint64_t large_threshold = 1ull << 20;
constexpr std::uint64_t min_reserve = 512ull << 20;

std::uint64_t round_up(std::uint64_t n, std::uint64_t align) {
  return (n + align - 1) / align * align;
}

/// The size class of a request: coarse for large buffers so that weights and KV pools of
/// slightly different sizes still reuse each other's blocks, fine for small ones so that they
/// waste little.
std::uint64_t rounded_size(std::uint64_t n) {
  return round_up(n, n >= large_threshold ? large_granule : small_granule);
}

std::string describe(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

/// What cudaGetDeviceCount says, as a count and a reason. An error here (no libcuda.so, a
/// driver older than the runtime, no GPU) is the normal case in CI, so it is a value, never a
/// crash; the runtime's last-error slot is cleared so that nothing later mistakes it for its own.
struct probe_result {
  int count = 0;
  std::string reason;
};

probe_result probe() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return {0, "CUDA driver: " + describe(e)};
  }
  if (n <= 0)
    return {0, "CUDA driver: no CUDA-capable device is present"};
  return {n, {}};
}

std::string ordinal_name(int ordinal) { return "cuda:" + std::to_string(ordinal); }

} // namespace

/// The allocator's books. Blocks are kept by their exact rounded size: a reused block is of the
/// same class, so nothing is split and nothing fragments. Kept blocks count against the limit as
/// well as live ones (they hold GPU memory); they are released when a request would not fit
/// otherwise.
struct cuda_device::state {
  /// A cudaMalloc'd block: `data` is `base` aligned up to 4096 (equal in practice).
  struct block {
    void* base = nullptr;
    void* data = nullptr;
  };

  int ordinal = 0;
  std::string name;
  std::uint64_t limit = 0;

  mutable std::mutex mutex;
  std::uint64_t used = 0;   ///< rounded bytes of live buffers
  std::uint64_t cached = 0; ///< rounded bytes of kept blocks
  std::multimap<std::uint64_t, block> cache;

  state() = default;
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() {
    std::lock_guard lock{mutex};
    release_cache_locked();
  }

  [[nodiscard]] status make_current() const {
    THAW_CUDA_CHECK(cudaSetDevice(ordinal));
    return {};
  }

  /// cudaFree of every kept block. Errors are ignored: at process exit the runtime may already
  /// be unloaded (cudaErrorCudartUnloading), and the memory goes with the context anyway.
  void release_cache_locked() noexcept {
    if (cache.empty())
      return;
    (void)cudaSetDevice(ordinal);
    for (auto& [size, b] : cache)
      (void)cudaFree(b.base);
    (void)cudaGetLastError();
    cache.clear();
    cached = 0;
  }

  void give_back(block b, std::uint64_t rounded) noexcept {
    std::lock_guard lock{mutex};
    used -= rounded;
    try {
      cache.emplace(rounded, b);
      cached += rounded;
    } catch (...) {
      (void)cudaSetDevice(ordinal); // no memory for the map node: free the block instead
      (void)cudaFree(b.base);
      (void)cudaGetLastError();
    }
  }

  [[nodiscard]] error exhausted(std::uint64_t bytes, std::string_view why) const {
    return make_error(errc::resource_exhausted,
                      name + ": " + std::to_string(bytes) + " bytes requested, " +
                          std::to_string(used) + " bytes held, limit " + std::to_string(limit) +
                          " bytes: " + std::string(why));
  }

  /// cudaMalloc of `rounded` bytes, 4096-byte aligned. cudaMalloc promises only 256 bytes; when
  /// it hands out less (never seen), the block is freed at once and taken again 4 KiB larger.
  [[nodiscard]] expected<block> malloc_block(std::uint64_t rounded) {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, rounded);
    if (e == cudaSuccess && reinterpret_cast<std::uintptr_t>(p) % small_granule == 0)
      return block{p, p};
    if (e == cudaSuccess) {
      (void)cudaFree(p);
      e = cudaMalloc(&p, rounded + small_granule);
      if (e == cudaSuccess) {
        const auto aligned = round_up(reinterpret_cast<std::uintptr_t>(p), small_granule);
        return block{p, reinterpret_cast<void*>(aligned)};
      }
    }
    (void)cudaGetLastError(); // an out-of-memory is an answer here, not a pending failure
    return runtime_error(e, "cudaMalloc(&p, rounded)", __FILE__, __LINE__);
  }
};

namespace {

class cuda_buffer final : public device_buffer {
public:
  cuda_buffer(cuda_device::state::block b, std::size_t size, std::uint64_t rounded,
              std::shared_ptr<cuda_device::state> st)
      : block_(b), size_(size), rounded_(rounded), state_(std::move(st)) {}
  ~cuda_buffer() override { state_->give_back(block_, rounded_); }
  cuda_buffer(const cuda_buffer&) = delete;
  cuda_buffer& operator=(const cuda_buffer&) = delete;

  [[nodiscard]] void* data() noexcept override { return block_.data; }
  [[nodiscard]] std::size_t size() const noexcept override { return size_; }
  [[nodiscard]] int ordinal() const noexcept { return state_->ordinal; }

private:
  cuda_device::state::block block_;
  std::size_t size_;
  std::uint64_t rounded_;
  std::shared_ptr<cuda_device::state> state_;
};

/// Lanes of CUDA streams. Each lane has a completion thread rather than a cudaLaunchHostFunc
/// callback: host functions must not call CUDA, and a loader completion may do anything
/// (recycle a chunk, start the next copy). A lane's events complete in stream order, so its
/// thread waits for them first to last.
class cuda_copy_engine final : public copy_engine {
public:
  cuda_copy_engine(std::shared_ptr<cuda_device::state> st, int lanes) : state_(std::move(st)) {
    const auto n = static_cast<std::size_t>(std::max(lanes, 1));
    lanes_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      auto l = std::make_unique<lane>();
      l->ready = create_stream(*l);
      lanes_.push_back(std::move(l));
    }
    for (auto& l : lanes_)
      l->thread = std::thread([this, p = l.get()] { complete(*p); });
  }

  ~cuda_copy_engine() override {
    drain();
    for (auto& l : lanes_) {
      {
        std::lock_guard lock{l->mutex};
        l->stopping = true;
      }
      l->cv.notify_all();
    }
    for (auto& l : lanes_)
      l->thread.join();
    (void)cudaSetDevice(state_->ordinal);
    for (auto& l : lanes_) {
      for (cudaEvent_t ev : l->spare)
        (void)cudaEventDestroy(ev);
      if (l->stream != nullptr)
        (void)cudaStreamDestroy(l->stream);
    }
    (void)cudaGetLastError();
  }

  cuda_copy_engine(const cuda_copy_engine&) = delete;
  cuda_copy_engine& operator=(const cuda_copy_engine&) = delete;

  void submit(device_buffer& dst, std::uint64_t offset, const void* src, std::size_t n,
              completion done) override {
    {
      std::lock_guard lock{mutex_};
      ++pending_;
    }
    const std::size_t i = next_.fetch_add(1, std::memory_order_relaxed) % lanes_.size();
    lane& l = *lanes_[i];
    std::lock_guard lock{l.mutex};
    // Issued under the lane's lock so that the lane's queue is in stream order. Errors go through
    // the queue too: `done` always runs on the lane's thread, never inside submit().
    auto issued = issue(l, dst, offset, src, n);
    if (issued)
      l.queue.push_back(entry{*issued, std::move(done), {}});
    else
      l.queue.push_back(entry{nullptr, std::move(done), unexpected(std::move(issued).err())});
    l.cv.notify_one();
  }

  void drain() override {
    std::unique_lock lock{mutex_};
    idle_cv_.wait(lock, [this] { return pending_ == 0; });
  }

private:
  struct entry {
    cudaEvent_t event = nullptr; ///< null: nothing to wait for (failed, or 0 bytes)
    completion done;
    status result;
  };

  struct lane {
    cudaStream_t stream = nullptr;
    status ready; ///< the stream's creation
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<entry> queue;
    std::vector<cudaEvent_t> spare; ///< events whose copies completed, for reuse
    bool stopping = false;
    std::thread thread;
  };

  status create_stream(lane& l) {
    THAW_TRY(state_->make_current());
    THAW_CUDA_CHECK(cudaStreamCreateWithFlags(&l.stream, cudaStreamNonBlocking));
    return {};
  }

  /// Checks the copy and issues it on `l` (whose lock is held); the event behind it, or null
  /// for an empty copy.
  expected<cudaEvent_t> issue(lane& l, device_buffer& dst, std::uint64_t offset, const void* src,
                              std::size_t n) {
    auto* buf = dynamic_cast<cuda_buffer*>(&dst);
    if (buf == nullptr)
      return make_error(errc::invalid_argument,
                        state_->name + " copy engine: destination is not a CUDA buffer");
    if (buf->ordinal() != state_->ordinal)
      return make_error(errc::invalid_argument,
                        state_->name + " copy engine: destination is on " +
                            ordinal_name(buf->ordinal()));
    const std::uint64_t size = buf->size();
    if (offset > size || n > size - offset)
      return make_error(errc::invalid_argument,
                        state_->name + " copy engine: copy of " + std::to_string(n) +
                            " bytes at offset " + std::to_string(offset) +
                            " is outside the buffer of " + std::to_string(size) + " bytes");
    if (!l.ready)
      return unexpected(l.ready.err());
    if (n == 0)
      return static_cast<cudaEvent_t>(nullptr);
    THAW_TRY(state_->make_current());
    cudaEvent_t ev = nullptr;
    if (!l.spare.empty()) {
      ev = l.spare.back();
      l.spare.pop_back();
    } else {
      // Blocking sync: the completion thread sleeps in cudaEventSynchronize instead of spinning
      // on a core that the loader's reads and checksums need.
      THAW_CUDA_CHECK(
          cudaEventCreateWithFlags(&ev, cudaEventDisableTiming | cudaEventBlockingSync));
    }
    auto put_back = [&] { l.spare.push_back(ev); };
    void* to = static_cast<std::byte*>(buf->data()) + offset;
    if (const cudaError_t e = cudaMemcpyAsync(to, src, n, cudaMemcpyHostToDevice, l.stream);
        e != cudaSuccess) {
      put_back();
      return runtime_error(e, "cudaMemcpyAsync(to, src, n, cudaMemcpyHostToDevice, stream)",
                           __FILE__, __LINE__);
    }
    if (const cudaError_t e = cudaEventRecord(ev, l.stream); e != cudaSuccess) {
      // The copy is issued but cannot be waited for: wait for the whole stream instead, so that
      // `src` is no longer read when `done` reports the failure.
      (void)cudaStreamSynchronize(l.stream);
      put_back();
      return runtime_error(e, "cudaEventRecord(ev, stream)", __FILE__, __LINE__);
    }
    return ev;
  }

  void complete(lane& l) {
    const status current = state_->make_current();
    for (;;) {
      entry en;
      {
        std::unique_lock lock{l.mutex};
        l.cv.wait(lock, [&] { return l.stopping || !l.queue.empty(); });
        if (l.queue.empty())
          return; // stopping, and drain() has seen every copy complete
        en = std::move(l.queue.front());
        l.queue.pop_front();
      }
      status result = std::move(en.result);
      if (en.event != nullptr) {
        // Waited for even when this thread could not make the device current (an event needs
        // no current device): `done` may recycle the source, which the copy may still be reading.
        const cudaError_t e = cudaEventSynchronize(en.event);
        if (!current)
          result = current;
        else if (e != cudaSuccess)
          result = unexpected(runtime_error(e, "cudaEventSynchronize(event)", __FILE__, __LINE__));
        std::lock_guard lock{l.mutex};
        l.spare.push_back(en.event);
      }
      if (en.done)
        en.done(std::move(result));
      en.done = nullptr; // release what the completion captured before counting it done
      {
        std::lock_guard lock{mutex_};
        if (--pending_ == 0)
          idle_cv_.notify_all();
      }
    }
  }

  std::shared_ptr<cuda_device::state> state_;
  std::vector<std::unique_ptr<lane>> lanes_;
  std::atomic<std::size_t> next_{0};
  std::mutex mutex_;
  std::condition_variable idle_cv_;
  std::size_t pending_ = 0; ///< submitted, `done` not yet returned
};

} // namespace

int device_count() noexcept { return probe().count; }

std::string unavailable_reason() { return probe().reason; }

cuda_device::cuda_device(std::shared_ptr<state> s) : state_(std::move(s)) {}

/// Kept blocks go now; blocks of buffers that outlive the device are kept by the state, which
/// frees them when the last buffer goes.
cuda_device::~cuda_device() { trim(); }

std::string cuda_device::name() const { return state_->name; }

std::uint64_t cuda_device::memory_bytes() const noexcept { return state_->limit; }

int cuda_device::ordinal() const noexcept { return state_->ordinal; }

status cuda_device::make_current() const { return state_->make_current(); }

std::uint64_t cuda_device::allocated_bytes() const noexcept {
  std::lock_guard lock{state_->mutex};
  return state_->used;
}

std::uint64_t cuda_device::cached_bytes() const noexcept {
  std::lock_guard lock{state_->mutex};
  return state_->cached;
}

void cuda_device::trim() noexcept {
  std::lock_guard lock{state_->mutex};
  state_->release_cache_locked();
}

expected<std::unique_ptr<device_buffer>> cuda_device::allocate(std::size_t bytes) {
  auto& st = *state_;
  if (bytes == 0)
    return make_error(errc::invalid_argument, st.name + ": cannot allocate 0 bytes");
  // Before rounding: a size within 2 MiB of 2^64 would round up to 0 (cudaMalloc(0) succeeds
  // with a null pointer) and come back as a null buffer claiming that size.
  if (bytes > st.limit) {
    std::lock_guard lock{st.mutex};
    return st.exhausted(bytes, "over the limit");
  }
  const std::uint64_t rounded = rounded_size(bytes);
  THAW_TRY(st.make_current());
  state::block b;
  {
    std::lock_guard lock{st.mutex};
    if (rounded > st.limit || st.used > st.limit - rounded)
      return st.exhausted(bytes, "over the limit");
    if (auto it = st.cache.find(rounded); it != st.cache.end()) {
      b = it->second;
      st.cache.erase(it);
      st.cached -= rounded;
    } else if (st.used + st.cached + rounded > st.limit) {
      st.release_cache_locked(); // kept blocks must never push live buffers out
    }
    st.used += rounded; // reserved before cudaMalloc so that racing allocations cannot both pass
  }
  if (b.base == nullptr) {
    auto got = st.malloc_block(rounded);
    if (!got && got.err().code == errc::resource_exhausted) {
      // The GPU is fuller than the limit says (other processes, cuBLAS, fragmentation): give
      // back what this device keeps and try once more.
      {
        std::lock_guard lock{st.mutex};
        st.release_cache_locked();
      }
      got = st.malloc_block(rounded);
    }
    if (!got) {
      std::lock_guard lock{st.mutex};
      st.used -= rounded;
      if (got.err().code == errc::resource_exhausted)
        return st.exhausted(bytes, "the GPU is out of memory: " + got.err().message);
      return with_context(std::move(got).err(), st.name + ": allocating " +
                                                    std::to_string(bytes) + " bytes");
    }
    b = *got;
  }
  return std::unique_ptr<device_buffer>(std::make_unique<cuda_buffer>(b, bytes, rounded, state_));
}

std::unique_ptr<copy_engine> cuda_device::make_copy_engine(int lanes) {
  return std::make_unique<cuda_copy_engine>(state_, lanes);
}

status cuda_device::register_host_memory(void* ptr, std::size_t bytes) {
  THAW_TRY(make_current());
  if (const cudaError_t e =
          cudaHostRegister(ptr, bytes, cudaHostRegisterPortable | cudaHostRegisterMapped);
      e != cudaSuccess) {
    (void)cudaGetLastError(); // a refusal is reported here, not left for the next caller
    return unexpected(with_context(
        runtime_error(e, "cudaHostRegister(ptr, bytes, cudaHostRegisterPortable | "
                         "cudaHostRegisterMapped)",
                      __FILE__, __LINE__),
        state_->name + ": pinning " + std::to_string(bytes) + " bytes"));
  }
  return {};
}

void cuda_device::unregister_host_memory(void* ptr) noexcept {
  (void)cudaSetDevice(state_->ordinal);
  (void)cudaHostUnregister(ptr);
  (void)cudaGetLastError();
}

expected<std::unique_ptr<cuda_device>> make_cuda_device(const device_options& opt) {
  if (opt.ordinal < 0)
    return make_error(errc::invalid_argument,
                      "cuda device: ordinal " + std::to_string(opt.ordinal) + " is negative");
  const std::string name = ordinal_name(opt.ordinal);
  const probe_result found = probe();
  if (found.count == 0)
    return make_error(errc::device_error, name + ": unavailable: " + found.reason);
  if (opt.ordinal >= found.count)
    return make_error(errc::device_error, name + ": unavailable: only " +
                                              std::to_string(found.count) + " CUDA device(s)");

  THAW_CUDA_CHECK(cudaSetDevice(opt.ordinal));
  cudaDeviceProp prop{};
  THAW_CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.ordinal));
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  THAW_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));

  auto st = std::make_shared<cuda_device::state>();
  st->ordinal = opt.ordinal;
  st->name = name + " (" + prop.name + ")";
  if (opt.memory_limit > total_bytes)
    return make_error(errc::invalid_argument,
                      st->name + ": memory limit " + std::to_string(opt.memory_limit) +
                          " bytes is above the GPU's " + std::to_string(total_bytes));
  if (opt.memory_limit != 0) {
    st->limit = opt.memory_limit;
  } else {
    const std::uint64_t reserve = std::max<std::uint64_t>(free_bytes / 20, min_reserve);
    if (free_bytes <= reserve)
      return make_error(errc::resource_exhausted,
                        st->name + ": only " + std::to_string(free_bytes) +
                            " bytes free, not more than the reserve of " +
                            std::to_string(reserve));
    st->limit = free_bytes - reserve;
  }
  return std::unique_ptr<cuda_device>(new cuda_device(std::move(st)));
}

} // namespace thaw::cuda
