#include "gpu/host/host_device.hpp"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace thaw {
namespace {

constexpr std::uint64_t page_bytes = 4096;
constexpr std::uint64_t huge_page_bytes = 2ull << 20;

std::uint64_t round_up(std::uint64_t n, std::uint64_t align) {
  return (n + align - 1) / align * align;
}

/// Copies as a DMA engine would: large copies use non-temporal stores, which write the
/// destination without first reading its lines into the cache. glibc's memcpy keeps ordinary
/// stores for copies below roughly the L3 size, so copying a model in 16 MiB chunks with it
/// reaches only ~70% of the memory bandwidth a streaming copy gets; nothing reads the
/// destination soon after, so caching it buys nothing.
void copy_to_device(std::byte* dst, const std::byte* src, std::size_t n) noexcept {
#if defined(__SSE2__)
  constexpr std::size_t streaming_threshold = 256 << 10;
  if (n >= streaming_threshold) {
    const std::size_t head = (16 - reinterpret_cast<std::uintptr_t>(dst) % 16) % 16;
    std::memcpy(dst, src, head);
    std::size_t i = head;
    for (; i + 64 <= n; i += 64) {
      const auto* s = reinterpret_cast<const __m128i*>(src + i);
      auto* d = reinterpret_cast<__m128i*>(dst + i);
      const __m128i a = _mm_loadu_si128(s);
      const __m128i b = _mm_loadu_si128(s + 1);
      const __m128i c = _mm_loadu_si128(s + 2);
      const __m128i e = _mm_loadu_si128(s + 3);
      _mm_stream_si128(d, a);
      _mm_stream_si128(d + 1, b);
      _mm_stream_si128(d + 2, c);
      _mm_stream_si128(d + 3, e);
    }
    std::memcpy(dst + i, src + i, n - i);
    _mm_sfence(); // streaming stores are weakly ordered: complete them before reporting done
    return;
  }
#endif
  std::memcpy(dst, src, n);
}

/// Maps `bytes` anonymous bytes aligned to `align`: over-maps by `align` and trims the ends,
/// since mmap only promises page alignment.
void* map_aligned(std::uint64_t bytes, std::uint64_t align) {
  const std::uint64_t span = bytes + (align > page_bytes ? align : 0);
  void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    return nullptr;
  auto start = reinterpret_cast<std::uintptr_t>(raw);
  auto aligned = static_cast<std::uintptr_t>(round_up(start, align));
  if (aligned > start)
    ::munmap(raw, aligned - start);
  const std::uintptr_t end = start + span;
  if (end > aligned + bytes)
    ::munmap(reinterpret_cast<void*>(aligned + bytes), end - (aligned + bytes));
  return reinterpret_cast<void*>(aligned);
}

} // namespace

/// Mappings are retained by their exact mapped size: a reused buffer is the same size class, so
/// nothing is split and nothing fragments.
struct host_device::memory {
  std::uint64_t limit = 0;
  std::uint64_t retain_limit = 0;
  std::mutex mutex;
  std::uint64_t used = 0;
  std::uint64_t retained = 0;
  std::multimap<std::uint64_t, void*> cache; ///< mapped size -> mapping

  void release_retained_locked() noexcept {
    for (auto& [size, ptr] : cache)
      ::munmap(ptr, size);
    cache.clear();
    retained = 0;
  }

  void give_back(void* data, std::uint64_t mapped) noexcept {
    std::lock_guard lock{mutex};
    used -= mapped;
    if (retained + mapped <= retain_limit) {
      cache.emplace(mapped, data);
      retained += mapped;
    } else {
      ::munmap(data, mapped);
    }
  }
};

namespace {

class host_buffer final : public device_buffer {
public:
  host_buffer(void* data, std::size_t size, std::uint64_t mapped,
              std::shared_ptr<host_device::memory> memory)
      : data_(data), size_(size), mapped_(mapped), memory_(std::move(memory)) {}
  ~host_buffer() override { memory_->give_back(data_, mapped_); }
  host_buffer(const host_buffer&) = delete;
  host_buffer& operator=(const host_buffer&) = delete;

  [[nodiscard]] void* data() noexcept override { return data_; }
  [[nodiscard]] std::size_t size() const noexcept override { return size_; }

private:
  void* data_;
  std::size_t size_;
  std::uint64_t mapped_;
  std::shared_ptr<host_device::memory> memory_;
};

/// Worker threads taking copies from one queue: any idle lane takes the next copy, so copies
/// complete out of order, as the interface allows.
class host_copy_engine final : public copy_engine {
public:
  explicit host_copy_engine(int lanes) {
    const int n = std::max(lanes, 1);
    workers_.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
      workers_.emplace_back([this] { run(); });
  }

  ~host_copy_engine() override {
    drain();
    {
      std::lock_guard lock{mutex_};
      stopping_ = true;
    }
    work_cv_.notify_all();
    for (auto& w : workers_)
      w.join();
  }

  void submit(device_buffer& dst, std::uint64_t offset, const void* src, std::size_t n,
              completion done) override {
    {
      std::lock_guard lock{mutex_};
      queue_.push_back(task{&dst, offset, src, n, std::move(done)});
      ++pending_;
    }
    work_cv_.notify_one();
  }

  void drain() override {
    std::unique_lock lock{mutex_};
    idle_cv_.wait(lock, [this] { return pending_ == 0; });
  }

private:
  struct task {
    device_buffer* dst;
    std::uint64_t offset;
    const void* src;
    std::size_t n;
    completion done;
  };

  static status execute(const task& t) {
    if (dynamic_cast<host_buffer*>(t.dst) == nullptr)
      return make_error(errc::invalid_argument, "host copy engine: destination is not a host buffer");
    const std::uint64_t size = t.dst->size();
    if (t.offset > size || t.n > size - t.offset)
      return make_error(errc::invalid_argument,
                        "host copy engine: copy of " + std::to_string(t.n) + " bytes at offset " +
                            std::to_string(t.offset) + " is outside the buffer of " +
                            std::to_string(size) + " bytes");
    if (t.n > 0)
      copy_to_device(static_cast<std::byte*>(t.dst->data()) + t.offset,
                     static_cast<const std::byte*>(t.src), t.n);
    return {};
  }

  void run() {
    for (;;) {
      task t;
      {
        std::unique_lock lock{mutex_};
        work_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty())
          return; // stopping, and drain() already emptied the queue
        t = std::move(queue_.front());
        queue_.pop_front();
      }
      auto result = execute(t);
      if (t.done)
        t.done(std::move(result));
      t.done = nullptr; // release what the completion captured before counting it done
      {
        std::lock_guard lock{mutex_};
        if (--pending_ == 0)
          idle_cv_.notify_all();
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::deque<task> queue_;
  std::size_t pending_ = 0; ///< queued plus running
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

} // namespace

std::uint64_t physical_memory_bytes() noexcept {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long size = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || size <= 0)
    return 0;
  return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(size);
}

host_device::host_device(std::uint64_t memory_limit) : memory_(std::make_shared<memory>()) {
  memory_->limit = memory_limit != 0 ? memory_limit : physical_memory_bytes();
  memory_->retain_limit = memory_->limit / 4;
}

host_device::~host_device() = default;

std::uint64_t host_device::memory_bytes() const noexcept { return memory_->limit; }

std::uint64_t host_device::allocated_bytes() const noexcept {
  std::lock_guard lock{memory_->mutex};
  return memory_->used;
}

std::uint64_t host_device::retained_bytes() const noexcept {
  std::lock_guard lock{memory_->mutex};
  return memory_->retained;
}

void host_device::trim() noexcept {
  std::lock_guard lock{memory_->mutex};
  memory_->release_retained_locked();
}

expected<std::unique_ptr<device_buffer>> host_device::allocate(std::size_t bytes) {
  if (bytes == 0)
    return make_error(errc::invalid_argument, "host device: cannot allocate 0 bytes");
  const bool huge = bytes >= huge_page_bytes;
  const std::uint64_t mapped = round_up(bytes, huge ? huge_page_bytes : page_bytes);
  auto& mem = *memory_;
  void* data = nullptr;
  {
    std::lock_guard lock{mem.mutex};
    if (mapped > mem.limit || mem.used > mem.limit - mapped)
      return make_error(errc::resource_exhausted,
                        "host device: " + std::to_string(bytes) + " bytes requested, " +
                            std::to_string(mem.limit - std::min(mem.used, mem.limit)) + " of the " +
                            std::to_string(mem.limit) + "-byte limit free");
    if (auto it = mem.cache.find(mapped); it != mem.cache.end()) {
      data = it->second;
      mem.cache.erase(it);
      mem.retained -= mapped;
    } else if (mem.used + mem.retained + mapped > mem.limit) {
      mem.release_retained_locked(); // retained memory must never push live buffers out
    }
    mem.used += mapped; // reserved before mapping so that racing allocations cannot both pass
  }
  if (data == nullptr) {
    data = map_aligned(mapped, huge ? huge_page_bytes : page_bytes);
    if (data == nullptr) {
      const int err = errno;
      std::lock_guard lock{mem.mutex};
      mem.used -= mapped;
      return make_error(errc::device_error, "host device: mmap of " + std::to_string(mapped) +
                                                " bytes failed: " + std::strerror(err));
    }
    if (huge)
      ::madvise(data, mapped, MADV_HUGEPAGE); // advisory: without THP the buffer still works
  }
  return std::unique_ptr<device_buffer>(
      std::make_unique<host_buffer>(data, bytes, mapped, memory_));
}

std::unique_ptr<copy_engine> host_device::make_copy_engine(int lanes) {
  return std::make_unique<host_copy_engine>(lanes);
}

} // namespace thaw
