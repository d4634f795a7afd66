#pragma once
/// The DRAM tier: models kept in the chunk pool, keyed by checkpoint content id, so that the next
/// cold start of a model recently loaded on this node copies from memory instead of reading the
/// disk. A model enters the tier as it is read (the first load creates its entry and fills it;
/// loads of the same model that arrive meanwhile share that one read), stays after its loads
/// finish, and leaves when a new model needs the chunks (least recently used first) or when its
/// read fails.
///
/// Model lifecycle in the tier:
///
///     (absent) --acquire, chunks reserved--> loading --every segment verified--> ready
///                                               |                                  |
///           read failed, or last lease released |                        evicted   |
///                                               v          (no lease held)         v
///                                            failed --------------------------> (absent)
///                                  (removed at once; chunks freed once no read is in flight
///                                   and no lease is held)
///
/// A `lease` pins a model: a pinned model is never evicted. A model's chunks are reserved whole
/// when its entry is created, so concurrent loads can never deadlock holding halves of the pool;
/// a load that does not fit beside the pinned models waits (`acquire`) until they are released.
/// A model larger than the whole pool is refused up front without touching anything held.
/// Thread-safe: one mutex guards the tier (events are per 16 MiB chunk, never per byte).

#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/common/error.hpp"
#include "runtime/loader/chunk_pool.hpp"

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <chrono>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <vector>

namespace thaw {

enum class dram_state : std::uint8_t { loading = 0, ready = 1, failed = 2 };
[[nodiscard]] const char* to_string(dram_state s) noexcept;

/// A model's bytes in the pool: one segment per checkpoint chunk, each segment in one or more
/// pool chunks. Segment contents may be read only once the tier reports them ready.
class cached_model {
public:
  [[nodiscard]] const std::string& content_id() const noexcept { return content_id_; }
  /// The checkpoint directory's name, for messages.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }
  [[nodiscard]] std::size_t segment_count() const noexcept { return segment_bytes_.size(); }
  [[nodiscard]] std::uint64_t segment_bytes(std::size_t i) const { return segment_bytes_.at(i); }
  /// The pool chunks holding segment `i`, in order; the last may be longer than needed.
  [[nodiscard]] std::vector<std::span<std::byte>> segment_buffers(std::size_t i) const;
  /// Stopped when the model fails or is abandoned: reads queued for it need not run.
  [[nodiscard]] std::stop_token abandoned() const noexcept { return abandon_.get_token(); }

private:
  friend class dram_tier;
  std::string content_id_;
  std::string name_;
  std::uint64_t bytes_ = 0;
  std::vector<std::uint64_t> segment_bytes_;
  std::vector<std::size_t> first_chunk_; ///< index into chunks_ of each segment's first chunk
  std::vector<chunk_pool::handle> chunks_;
  std::stop_source abandon_;
  // Guarded by the tier's mutex:
  dram_state state_ = dram_state::loading;
  std::vector<bool> segment_ready_;
  std::size_t ready_segments_ = 0;
  int pins_ = 0;
  int reads_in_flight_ = 0;
  bool released_ = false;       ///< chunks returned to the pool (failed models only)
  std::uint64_t last_used_ = 0; ///< LRU clock
  std::optional<error> failure_;
};

class dram_tier {
public:
  /// Pins a model while held. Move-only; destroying it unpins.
  class lease {
  public:
    lease() = default;
    lease(lease&& other) noexcept;
    lease& operator=(lease&& other) noexcept;
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    ~lease() { reset(); }

    [[nodiscard]] explicit operator bool() const noexcept { return tier_ != nullptr; }
    [[nodiscard]] cached_model& model() const noexcept { return *model_; }
    [[nodiscard]] const std::shared_ptr<cached_model>& shared_model() const noexcept {
      return model_;
    }
    /// This lease created the entry: its holder must fill it (read every segment).
    [[nodiscard]] bool created() const noexcept { return created_; }
    /// The model was ready when the lease was taken: its bytes come from memory.
    [[nodiscard]] bool was_ready() const noexcept { return was_ready_; }
    /// Unpins now. The last lease of a model still loading abandons it (fails it `cancelled`).
    void reset() noexcept;

  private:
    friend class dram_tier;
    dram_tier* tier_ = nullptr;
    std::shared_ptr<cached_model> model_;
    bool created_ = false;
    bool was_ready_ = false;
  };

  explicit dram_tier(chunk_pool& pool) : pool_(pool) {}
  /// Every lease must have been released and every read finished.
  ~dram_tier();
  dram_tier(const dram_tier&) = delete;
  dram_tier& operator=(const dram_tier&) = delete;

  /// `resource_exhausted` naming the model, its size and the pool's when the model could never
  /// fit, even in an empty pool (or a chunk is larger than the pool can hold).
  [[nodiscard]] status check_fits(const checkpoint& ckpt) const;

  /// Pins the model's entry if present (loading or ready). Otherwise reserves its chunks,
  /// evicting unpinned ready models least recently used first, and creates an entry in
  /// `loading` state (`created()`). When the pinned models leave too little room, evicts
  /// nothing and returns `resource_exhausted` ("in use").
  [[nodiscard]] expected<lease> try_acquire(const checkpoint& ckpt);
  /// As try_acquire, but waits while pinned models leave too little room; `cancelled` when
  /// `stop` is requested first. A model too big for the pool fails at once. With a `deadline`,
  /// the wait ends there with try_acquire's `resource_exhausted` (saying how long it waited).
  [[nodiscard]] expected<lease>
  acquire(const checkpoint& ckpt, std::stop_token stop,
          std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt);

  // The filling side, used by whoever reads a created entry.
  /// Registers a read about to write into `m`; false when `m` is no longer loading (failed or
  /// abandoned), in which case nothing may be written.
  [[nodiscard]] bool begin_read(cached_model& m);
  /// Ends a read begun with begin_read: success marks the segment ready (the model is ready
  /// when all are); an error fails the model, removes it from the tier and wakes its waiters.
  void end_read(cached_model& m, std::size_t segment, status result);
  /// Fails a model still loading (e.g. its files cannot be opened): removes it from the tier and
  /// wakes its waiters with `e`.
  void fail(cached_model& m, error e);

  // The waiting side.
  /// Blocks until segment `i` of a pinned model is ready (success), the model has failed (its
  /// error) or `stop` is requested (`cancelled`).
  [[nodiscard]] status wait_segment(cached_model& m, std::size_t i, std::stop_token stop);
  /// After a failure: blocks until `m`'s chunks are back in the pool, or another lease holder
  /// remains (who will see them returned).
  void wait_released(cached_model& m);

  // Using a model in place (a host device, whose memory the pool already is).
  /// Pins the model if the tier holds it ready and pinning it leaves at least `keep_unpinned`
  /// chunks of the pool neither pinned nor free-for-nothing (so that other models can still be
  /// loaded through the tier); else nullopt and nothing changes.
  [[nodiscard]] std::optional<lease> try_pin_ready(const checkpoint& ckpt,
                                                   std::size_t keep_unpinned);
  /// Where each of ckpt's data files lies whole in the pool (file f's byte o at files[f] + o),
  /// when the model's chunks happen to make that so: consecutive pool chunks (the pool hands
  /// them out so when it can), each checkpoint chunk at the start of the pool chunk its offset
  /// in the file falls in. Empty otherwise. The layout is fixed once `m` is acquired, so this
  /// may be asked while it loads; its bytes are valid once it is ready, while it stays pinned.
  [[nodiscard]] std::vector<const std::byte*> file_bytes(const cached_model& m,
                                                         const checkpoint& ckpt) const;
  /// Pool chunks held by pinned models.
  [[nodiscard]] std::size_t pinned_chunks() const;

  /// The model's state, or nullopt if the tier does not hold it.
  [[nodiscard]] std::optional<dram_state> state_of(const std::string& content_id) const;
  /// Content ids held (loading or ready), least recently used first.
  [[nodiscard]] std::vector<std::string> lru_order() const;
  /// Evicts every ready model without a lease; returns how many.
  std::size_t evict_unpinned();
  /// Models evicted to make room so far.
  [[nodiscard]] std::uint64_t evictions() const;
  [[nodiscard]] chunk_pool& pool() noexcept { return pool_; }

private:
  expected<lease> acquire_impl(const checkpoint& ckpt, const std::stop_token* stop,
                               std::optional<std::chrono::steady_clock::time_point> deadline);
  void release(const std::shared_ptr<cached_model>& m) noexcept;
  void fail_locked(cached_model& m, error e);
  void maybe_free_locked(cached_model& m);
  bool make_room_locked(std::size_t need);
  std::size_t pinned_chunks_locked() const;

  chunk_pool& pool_;
  mutable std::mutex mutex_;
  std::condition_variable_any cv_;
  std::map<std::string, std::shared_ptr<cached_model>> models_;
  std::uint64_t clock_ = 0;
  std::uint64_t generation_ = 0; ///< bumped whenever room may have appeared or state changed
  std::uint64_t evictions_ = 0;
};

} // namespace thaw
