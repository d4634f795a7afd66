#include "runtime/loader/chunk_pool.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <sys/mman.h>

namespace thaw {
namespace {

constexpr std::uint64_t page_bytes = 4096;
constexpr std::uint64_t huge_page_bytes = 2ull << 20;

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 // Linux 5.14; older headers lack the name
#endif

/// Faults every page in now. MADV_POPULATE_WRITE does it in one call; older kernels get a write
/// to each page, which does the same work.
void prefault(std::byte* base, std::uint64_t bytes) {
  if (::madvise(base, bytes, MADV_POPULATE_WRITE) == 0)
    return;
  for (std::uint64_t off = 0; off < bytes; off += page_bytes)
    base[off] = std::byte{0};
}

/// An anonymous mapping of `used` bytes rounded up to huge pages, huge-page aligned.
expected<std::byte*> map_pool(std::uint64_t used) {
  // Huge-page alignment lets THP back the whole pool; over-map and trim the ends to get it.
  const std::uint64_t mapped = (used + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes;
  const std::uint64_t span = mapped + huge_page_bytes;
  void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    return make_error(errc::resource_exhausted, "chunk pool: cannot map " + std::to_string(span) +
                                                    " bytes: " + std::strerror(errno));
  const auto start = reinterpret_cast<std::uintptr_t>(raw);
  const auto aligned = (start + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes;
  if (aligned > start)
    ::munmap(raw, aligned - start);
  if (start + span > aligned + mapped)
    ::munmap(reinterpret_cast<void*>(aligned + mapped), start + span - (aligned + mapped));
  return reinterpret_cast<std::byte*>(aligned);
}

} // namespace

chunk_pool::handle& chunk_pool::handle::operator=(handle&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::exchange(other.pool_, nullptr);
    index_ = other.index_;
  }
  return *this;
}

std::byte* chunk_pool::handle::data() const noexcept {
  return pool_->base_ + static_cast<std::uint64_t>(index_) * pool_->chunk_bytes_;
}

std::size_t chunk_pool::handle::size() const noexcept {
  return static_cast<std::size_t>(pool_->chunk_bytes_);
}

void chunk_pool::handle::reset() noexcept {
  if (pool_ != nullptr)
    std::exchange(pool_, nullptr)->release(index_);
}

expected<std::unique_ptr<chunk_pool>> chunk_pool::create(std::uint64_t pool_bytes,
                                                         std::uint64_t chunk_bytes, device* dev,
                                                         const memory_source& source) {
  if (chunk_bytes == 0 || chunk_bytes % page_bytes != 0)
    return make_error(errc::invalid_argument,
                      "chunk pool: chunk_bytes " + std::to_string(chunk_bytes) +
                          " must be a positive multiple of 4096 (O_DIRECT reads into chunks)");
  if (pool_bytes < chunk_bytes)
    return make_error(errc::invalid_argument,
                      "chunk pool: pool_bytes " + std::to_string(pool_bytes) +
                          " is smaller than one chunk of " + std::to_string(chunk_bytes) + " bytes");
  const std::uint64_t chunks = pool_bytes / chunk_bytes;
  if (chunks > 0xffffffffull)
    return make_error(errc::invalid_argument, "chunk pool: more than 2^32 chunks; use bigger chunks");
  const std::uint64_t used = chunks * chunk_bytes;
  std::byte* base = nullptr;
  std::uint64_t mapped = used;
  if (source) {
    THAW_ASSIGN(auto region, source(used));
    if (region.size() < used || reinterpret_cast<std::uintptr_t>(region.data()) % page_bytes != 0)
      return make_error(errc::internal, "chunk pool: the memory source gave " +
                                            std::to_string(region.size()) +
                                            " bytes (or unaligned ones) for " +
                                            std::to_string(used));
    base = region.data();
  } else {
    THAW_ASSIGN(base, map_pool(used));
    mapped = (used + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes;
  }
  const bool owned = !source;
  ::madvise(base, mapped, MADV_HUGEPAGE); // advisory: THP where the kernel offers it
  prefault(base, mapped);

  if (dev != nullptr) {
    if (auto registered = dev->register_host_memory(base, mapped); !registered) {
      if (owned)
        ::munmap(base, mapped);
      return with_context(std::move(registered).err(), "chunk pool: registering with the device");
    }
  }
  return std::unique_ptr<chunk_pool>(
      new chunk_pool(base, mapped, chunk_bytes, static_cast<std::size_t>(chunks), dev, owned));
}

chunk_pool::chunk_pool(std::byte* base, std::uint64_t mapped, std::uint64_t chunk_bytes,
                       std::size_t total_chunks, device* dev, bool owned)
    : base_(base), mapped_(mapped), chunk_bytes_(chunk_bytes), total_chunks_(total_chunks),
      owned_(owned) {
  if (dev != nullptr)
    registered_.push_back(dev);
  free_.reserve(total_chunks);
  // Pushed in reverse so that chunk 0 is handed out first: fresh pools fill front to back.
  for (std::size_t i = total_chunks; i > 0; --i)
    free_.push_back(static_cast<std::uint32_t>(i - 1));
}

chunk_pool::~chunk_pool() {
  if (free_chunks() != total_chunks_)
    spdlog::error("chunk pool destroyed with {} of {} chunks still held", total_chunks_ - free_chunks(),
                  total_chunks_);
  for (auto* dev : registered_)
    dev->unregister_host_memory(base_);
  if (owned_)
    ::munmap(base_, mapped_);
}

status chunk_pool::register_with(device& dev) {
  if (std::any_of(registered_.begin(), registered_.end(),
                  [&](const device* d) { return d->kind() == dev.kind(); }))
    return {};
  if (auto registered = dev.register_host_memory(base_, mapped_); !registered)
    return with_context(std::move(registered).err(), "chunk pool: registering with " + dev.name());
  registered_.push_back(&dev);
  return {};
}

std::optional<chunk_pool::handle> chunk_pool::try_acquire() {
  std::lock_guard lock{mutex_};
  if (free_.empty())
    return std::nullopt;
  const auto index = free_.back();
  free_.pop_back();
  return handle{this, index};
}

std::optional<std::vector<chunk_pool::handle>> chunk_pool::try_acquire(std::size_t n) {
  std::vector<handle> out;
  out.reserve(n);
  std::lock_guard lock{mutex_};
  if (free_.size() < n)
    return std::nullopt;
  if (n > 1) {
    // The lowest run of n free chunks in a row, if there is one.
    std::vector<std::uint32_t> sorted = free_;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t first = 0, i = 1; i <= sorted.size(); ++i) {
      if (i < sorted.size() && sorted[i] == sorted[i - 1] + 1 && i - first < n)
        continue;
      if (i - first >= n) {
        const std::uint32_t begin = sorted[first];
        std::erase_if(free_, [&](std::uint32_t c) { return c >= begin && c < begin + n; });
        for (std::size_t k = 0; k < n; ++k)
          out.push_back(handle{this, static_cast<std::uint32_t>(begin + k)});
        return out;
      }
      first = i;
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(handle{this, free_.back()});
    free_.pop_back();
  }
  return out;
}

std::size_t chunk_pool::free_chunks() const {
  std::lock_guard lock{mutex_};
  return free_.size();
}

void chunk_pool::release(std::uint32_t index) noexcept {
  std::lock_guard lock{mutex_};
  free_.push_back(index);
}

} // namespace thaw
