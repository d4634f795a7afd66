#pragma once
/// The chunk pool: one page-aligned allocation made at start-up and cut into fixed-size chunks
/// (fatcache's slabs), through which every checkpoint byte passes between the disk and the device
/// and in which the DRAM tier keeps models. Allocating once means no allocation on the load path,
/// memory that O_DIRECT can read into, and one registration with the device (CUDA pins it, so
/// copies from it run at full PCIe speed) instead of one per load.
///
/// The memory is faulted in at creation, with transparent huge pages where the kernel offers
/// them: the first touch of a page is paid at start-up, not in the middle of a cold load.
///
/// Chunks are handed out as move-only `handle`s that give the chunk back when destroyed, so a
/// chunk cannot leak past its owner and `free_chunks()` returns to `total_chunks()` once every
/// owner is gone. Thread-safe.

#include "gpu/device.hpp"
#include "runtime/common/error.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace thaw {

class chunk_pool {
public:
  /// One chunk, owned until destroyed or reset.
  class handle {
  public:
    handle() = default;
    handle(handle&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), index_(other.index_) {}
    handle& operator=(handle&& other) noexcept;
    handle(const handle&) = delete;
    handle& operator=(const handle&) = delete;
    ~handle() { reset(); }

    [[nodiscard]] explicit operator bool() const noexcept { return pool_ != nullptr; }
    /// Start of the chunk, aligned to 4096 bytes (O_DIRECT needs no more).
    [[nodiscard]] std::byte* data() const noexcept;
    /// The pool's chunk size.
    [[nodiscard]] std::size_t size() const noexcept;
    [[nodiscard]] std::span<std::byte> bytes() const noexcept { return {data(), size()}; }
    /// Index of the chunk in the pool (0 .. total_chunks()-1).
    [[nodiscard]] std::uint32_t index() const noexcept { return index_; }
    /// Gives the chunk back to the pool now.
    void reset() noexcept;

  private:
    friend class chunk_pool;
    handle(chunk_pool* pool, std::uint32_t index) noexcept : pool_(pool), index_(index) {}
    chunk_pool* pool_ = nullptr;
    std::uint32_t index_ = 0;
  };

  /// Where the pool's memory comes from when the pool does not map it itself: given the bytes
  /// needed, a region of at least that many, 4096-aligned, that outlives the pool (the node's
  /// data plane allocates it so that peers can read the DRAM tier over UCX).
  using memory_source = std::function<expected<std::span<std::byte>>(std::uint64_t bytes)>;

  /// Allocates `pool_bytes / chunk_bytes` chunks of `chunk_bytes` (from `source` when given,
  /// else an anonymous mapping of its own) and registers them with `dev` (may be null: no
  /// registration). `chunk_bytes` must be a positive multiple of 4096 and `pool_bytes` at least
  /// one chunk (`invalid_argument` naming the value otherwise).
  [[nodiscard]] static expected<std::unique_ptr<chunk_pool>>
  create(std::uint64_t pool_bytes, std::uint64_t chunk_bytes, device* dev = nullptr,
         const memory_source& source = {});
  /// Every handle must have been released; the memory is unregistered and unmapped.
  ~chunk_pool();
  chunk_pool(const chunk_pool&) = delete;
  chunk_pool& operator=(const chunk_pool&) = delete;

  /// Registers the pool's memory with another device too (a GPU the loader also copies to);
  /// unregistered when the pool goes. A second device of a kind the memory is already
  /// registered with is a no-op: CUDA registers host memory portably, for every GPU at once.
  [[nodiscard]] status register_with(device& dev);

  /// One free chunk, or nullopt when none is free.
  [[nodiscard]] std::optional<handle> try_acquire();
  /// `n` chunks, or nullopt and nothing taken when fewer than `n` are free. Consecutive chunks
  /// (the lowest such run) when the pool has them, so that a model's bytes can be used in place
  /// (dram_tier::file_bytes); otherwise any free ones.
  [[nodiscard]] std::optional<std::vector<handle>> try_acquire(std::size_t n);

  [[nodiscard]] std::size_t free_chunks() const;
  [[nodiscard]] std::size_t total_chunks() const noexcept { return total_chunks_; }
  [[nodiscard]] std::uint64_t chunk_bytes() const noexcept { return chunk_bytes_; }
  /// total_chunks() * chunk_bytes(): the usable bytes.
  [[nodiscard]] std::uint64_t capacity_bytes() const noexcept {
    return total_chunks_ * chunk_bytes_;
  }
  /// Chunks needed to hold `bytes`.
  [[nodiscard]] std::size_t chunks_for(std::uint64_t bytes) const noexcept {
    return static_cast<std::size_t>((bytes + chunk_bytes_ - 1) / chunk_bytes_);
  }

private:
  chunk_pool(std::byte* base, std::uint64_t mapped, std::uint64_t chunk_bytes,
             std::size_t total_chunks, device* dev, bool owned);
  void release(std::uint32_t index) noexcept;

  std::byte* base_;
  std::uint64_t mapped_;
  std::uint64_t chunk_bytes_;
  std::size_t total_chunks_;
  std::vector<device*> registered_; ///< the devices the memory is registered with
  bool owned_;     ///< the pool mapped its memory (else a memory_source's owner frees it)
  mutable std::mutex mutex_;
  std::vector<std::uint32_t> free_; ///< a stack: the most recently used chunk is reused first
};

} // namespace thaw
