#pragma once
/// The load pipeline (ARCHITECTURE.md section 5), the loader's public entry point: brings a
/// checkpoint's bytes into a device buffer laid out like the concatenated data files, from the
/// fastest tier that holds them.
///
///   SSD --O_DIRECT reads, N threads, checksums--> chunk pool (= DRAM tier) --copy lanes--> device
///
/// Chunks are read into pool chunks while earlier chunks are copied to the device, so the disk
/// and the copies overlap; a model already in the DRAM tier is copied from memory without a read;
/// loads of one model that overlap share a single read of each chunk. Because tensors are stored
/// in layer order, the contiguous prefix already on the device grows from the embeddings to the
/// lm_head, and `wait_for_layer` lets the engine start a layer as soon as its bytes are there.
///
/// A load's lifecycle:
///
///     waiting (for room in the pool) --> loading --> done
///                |                         |
///                +-------------------------+--> failed | cancelled
///
/// `waiting` lasts only while models that are being loaded hold the chunks this one needs.

#include "gpu/device.hpp"
#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/common/config.hpp"
#include "runtime/common/error.hpp"
#include "runtime/loader/chunk_pool.hpp"
#include "runtime/loader/dram_tier.hpp"
#include "runtime/loader/ssd_reader.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <mutex>
#include <thread>
#include <vector>

namespace thaw {

/// The checksum verifiers a machine with `cores` cores gets by default: one per four cores, 1
/// to 4 (0 cores, unknown: 1). One verifier checks about 13 GB/s (XXH3 over chunks in memory,
/// measured on a 2-core Zen 3), enough for any single SSD; on a small machine a second one takes
/// a core from the reads (`thaw bench load` of a 1.93 GiB model on 2 cores: in-place cold load
/// 0.98-1.01x of the raw O_DIRECT read into memory with one verifier, 0.91-0.99x with two).
[[nodiscard]] int default_verify_threads(unsigned cores = std::thread::hardware_concurrency());

struct loader_options {
  std::uint64_t pool_bytes = 2ull << 30;   ///< loader.pool_bytes: the chunk pool = DRAM tier
  std::uint64_t chunk_bytes = 16ull << 20; ///< loader.chunk_bytes: pool chunk, multiple of 4096
  /// loader.read_threads: reads in flight (checksums are verified on other threads).
  int read_threads = 3;
  /// loader.verify_threads: threads verifying checksums of chunks read (default: see
  /// default_verify_threads).
  int verify_threads = default_verify_threads();
  int copy_lanes = 2;                      ///< loader.copy_lanes: concurrent device copies
  bool verify_checksums = true;            ///< loader.verify_checksums: XXH3 of every chunk read
  /// loader.map_weights: on a host device, run a model that is ready in the DRAM tier from the
  /// tier's own bytes (map()) instead of copying them into another buffer of the same memory.
  bool map_weights = true;

  /// Reads the `loader.*` keys, defaults above; a bad value is an error naming its key.
  [[nodiscard]] static expected<loader_options> from_config(const config& cfg);
  /// Checks the values (`invalid_argument` naming the key).
  [[nodiscard]] status validate() const;
};

/// The remote tier (ARCHITECTURE.md section 5): a peer that holds a checkpoint's chunks in its
/// DRAM tier and hands them over. The transport implements it (a UCX data plane fetch); the
/// loader only says where bytes go.
///
/// Both ends keep a chunk in pool chunks, of their own sizes, so neither holds it in one run:
/// the bytes move in pieces cut at both ends' pool-chunk boundaries (pull_pieces), each piece
/// one run on either side. The peer publishes its pieces in that order and the puller fetches
/// into its own.
class remote_source {
public:
  /// Called as each piece lands: its index in the destinations, offset in it, bytes. Every
  /// byte is reported exactly once, in any order, on the thread that called fetch().
  using piece_callback =
      std::function<void(std::size_t piece, std::size_t offset, std::size_t bytes)>;

  virtual ~remote_source() = default;
  /// The peer, for messages.
  [[nodiscard]] virtual std::string name() const = 0;
  /// The peer's pool chunk size: where its runs of a checkpoint chunk break.
  [[nodiscard]] virtual std::uint64_t chunk_bytes() const = 0;
  /// Reads every piece of the checkpoint (pull_pieces of each chunk in order, both ends' pool
  /// chunk sizes) into destinations, one per piece, blocking until all have landed, an error,
  /// or `stop` (`cancelled`).
  [[nodiscard]] virtual status fetch(std::span<const std::span<std::byte>> destinations,
                                     const piece_callback& on_piece, std::stop_token stop) = 0;
};

/// A piece of a checkpoint chunk: `bytes` at `offset` in the chunk.
struct chunk_piece {
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
};

/// A chunk of `chunk_bytes` cut at every multiple of `a` and of `b` (two pool chunk sizes): the
/// pieces a pull moves, the same list at both ends.
[[nodiscard]] std::vector<chunk_piece> pull_pieces(std::uint64_t chunk_bytes, std::uint64_t a,
                                                   std::uint64_t b);

/// Where each piece of `model`'s segment `i` lies in the pool (its pool chunks of size
/// `pool_chunk`), cut by pull_pieces against a peer's `peer_chunk`.
[[nodiscard]] std::vector<std::span<std::byte>>
pull_destinations(const cached_model& model, std::size_t i, std::uint64_t pool_chunk,
                  std::uint64_t peer_chunk);

/// Where a load's bytes came from: the DRAM tier, or the SSD (read by this load or by an
/// overlapping load of the same model whose read it shares). Decided when loading starts.
enum class load_source : std::uint8_t { ssd = 0, dram = 1 };
[[nodiscard]] const char* to_string(load_source s) noexcept;

/// What a load delivers.
enum class load_mode : std::uint8_t {
  /// A device buffer of the load's own, filled by copies from the DRAM tier (take_buffer).
  copy = 0,
  /// On a host device with loader.map_weights: the DRAM tier's own bytes, as map() gives them
  /// (take_mapped), read from the data files first when the tier does not hold the model. A
  /// cold start then reads and verifies each byte once and copies none. Where map() would
  /// decline (the model's chunks are not one run per file, or keeping it pinned would leave
  /// less than a quarter of the pool unpinned) and on other devices, the load copies instead.
  in_place = 1,
  /// Into the DRAM tier only, where the model stays, ready and unpinned, once the load ends:
  /// nothing is allocated on the device (prefetch).
  tier_only = 2,
};
[[nodiscard]] const char* to_string(load_mode m) noexcept;

enum class load_phase : std::uint8_t { waiting = 0, loading = 1, done = 2, failed = 3, cancelled = 4 };
[[nodiscard]] const char* to_string(load_phase p) noexcept;

struct load_progress {
  std::uint64_t bytes_done = 0;  ///< bytes copied to the device (not necessarily contiguous)
  std::uint64_t total_bytes = 0; ///< the checkpoint's total_bytes()
  load_source source = load_source::ssd;
  load_phase phase = load_phase::waiting;
};

/// Bytes the loader still has to move for the loads under way, by where they come from (a load
/// still waiting for room counts as SSD: the tier does not hold its model). What a scheduler
/// turns into the wait a new load on this node would see.
struct loader_queue {
  std::uint64_t ssd_bytes = 0;
  std::uint64_t dram_bytes = 0;
  std::uint32_t loads = 0;
};

/// Counters since the loader was created.
struct loader_stats {
  std::uint64_t bytes_read_ssd = 0;  ///< bytes read from data files
  std::uint64_t bytes_from_dram = 0; ///< bytes copied for loads of a model already in DRAM
  std::uint64_t ssd_reads = 0;       ///< reads issued, one per checkpoint chunk
  std::uint64_t evictions = 0;       ///< models evicted from the DRAM tier to make room
  std::uint64_t loads = 0;           ///< loads started
  std::uint64_t maps = 0;            ///< starts served in place by map(): no bytes moved
  std::uint64_t loads_in_place = 0;  ///< load_mode::in_place loads that ended mapped
  std::uint64_t pulls = 0;           ///< models read into the tier from a peer (pull)
  std::uint64_t bytes_pulled = 0;    ///< their bytes
};

/// A model run in place from the DRAM tier (loader::map): where each data file's bytes are.
/// Holds the model pinned in the tier while it lives.
class mapped_model {
public:
  mapped_model(dram_tier::lease lease, std::vector<const std::byte*> files)
      : lease_(std::move(lease)), files_(std::move(files)) {}
  /// files()[f]: data file f's first byte; the file's bytes follow contiguously.
  [[nodiscard]] const std::vector<const std::byte*>& files() const noexcept { return files_; }

private:
  dram_tier::lease lease_;
  std::vector<const std::byte*> files_;
};

namespace detail {
struct load_state;
}

/// One asynchronous load. Copyable (copies observe the same load). Destroying every handle does
/// not stop the load; `cancel` does.
class load_handle {
public:
  /// Blocks until the load ends; its result (`cancelled` after cancel). May be called again.
  [[nodiscard]] status wait() const;
  /// Asks the load to stop: reading and copying for it stop promptly, and if no other load
  /// shares the model's read, the incomplete model's chunks go back to the pool before wait()
  /// returns. No effect on a load that has ended.
  void cancel() const;
  [[nodiscard]] load_progress progress() const;
  /// Bytes from offset 0 of the buffer that are on the device; only grows.
  [[nodiscard]] std::uint64_t loaded_prefix() const;
  /// Blocks until loaded_prefix() >= the checkpoint's layer_end(layer), then succeeds; or until
  /// the load fails (its error). `layer` runs from -1 (embeddings) to num_layers (final norm,
  /// lm_head); others are `invalid_argument`.
  [[nodiscard]] status wait_for_layer(std::int32_t layer) const;
  /// The destination buffer of a copy (valid while a handle or the loader holds the load).
  /// Bytes beyond loaded_prefix() are unspecified until the load is done. Only for loads that
  /// copy: see mode().
  [[nodiscard]] device_buffer& buffer() const;
  /// What the load delivers: the mode asked for, or copy where an in-place load fell back (known
  /// once the load has started: after wait(), or once loaded_prefix() is above 0).
  [[nodiscard]] load_mode mode() const;
  /// Waits for an in-place load; on success hands its mapping to the caller (once), else the
  /// error (`invalid_argument` when the load copied instead: take_buffer()). The mapping must
  /// not outlive the loader. Untaken, it goes with the last copy of the handle.
  [[nodiscard]] expected<std::unique_ptr<mapped_model>> take_mapped() const;
  /// Waits for the load; on success hands the buffer to the caller (once), else the error.
  [[nodiscard]] expected<std::unique_ptr<device_buffer>> take_buffer() const;

private:
  friend class loader;
  explicit load_handle(std::shared_ptr<detail::load_state> s);
  std::shared_ptr<detail::load_state> state_;
  /// Shared by the copies of one handle; when the last goes, a mapping nobody took is dropped
  /// (and the model unpinned) instead of waiting for the loader to forget the load.
  std::shared_ptr<void> keeper_;
};

class loader {
public:
  /// Allocates the chunk pool (registered with `dev`), starts the reader threads and the copy
  /// lanes. `dev` must outlive the loader and every buffer it hands out.
  /// `pool_memory`, when given, provides the pool's memory (see chunk_pool::memory_source).
  [[nodiscard]] static expected<std::unique_ptr<loader>>
  create(const loader_options& options, device& dev,
         const chunk_pool::memory_source& pool_memory = {});
  /// Cancels loads still running and waits for them.
  ~loader();
  loader(const loader&) = delete;
  loader& operator=(const loader&) = delete;

  /// Starts loading `ckpt`: by default into a new device buffer of ckpt.total_bytes(); see
  /// load_mode for the others. Fails at once, with nothing disturbed, when the device cannot
  /// hold the buffer or the model can never fit in the chunk pool (`resource_exhausted` naming
  /// the model, its size and the pool's). Errors met later (missing or corrupt data files) are
  /// reported by the handle and name the file.
  /// `target`: another device added with add_device (a node's GPU) to load into instead of the
  /// loader's own; its loads copy (invalid_argument for a device not added).
  [[nodiscard]] expected<load_handle> load(const checkpoint& ckpt,
                                          load_mode mode = load_mode::copy,
                                          device* target = nullptr);

  /// Makes `dev` a further target of load(): the chunk pool is registered with it (pinned, for
  /// a GPU) and it gets copy lanes of its own (loader.copy_lanes), so that the DRAM tier is
  /// shared by every device of a node: a model read once from SSD loads onto any of them at
  /// memory speed. `dev` must outlive the loader. Not thread-safe with load(): call before.
  [[nodiscard]] status add_device(device& dev);

  /// On a host device, whose memory the chunk pool already is: when `ckpt` is ready in the DRAM
  /// tier with each data file whole in consecutive pool chunks (dram_tier::file_bytes; the pool
  /// hands a model consecutive chunks when it has them), pins it and says where its files are,
  /// without copying a byte. The model stays pinned, never evicted, while the result lives
  /// (which must not outlive the loader); instances of a model share one copy. Null when
  /// loader.map_weights is off, the device is not host memory, the model is not ready in the
  /// tier or not laid out so, or pinning it would leave less than a quarter of the pool to load
  /// other models through: the caller then load()s.
  [[nodiscard]] std::unique_ptr<mapped_model> map(const checkpoint& ckpt);

  /// Reads `ckpt` from a peer into the DRAM tier (the remote tier: no data file is touched, so
  /// `ckpt` may come from checkpoint::from_manifest) and returns a lease that keeps the model
  /// pinned there, ready, until the caller lets it go; load() and map() then find it in memory.
  /// Every chunk is checked against its manifest checksum (loader.verify_checksums) on the
  /// verifier threads as it lands. When the tier already holds or is reading the model, waits
  /// for that instead of fetching. Blocks. Errors, with nothing left in the tier: the tier's
  /// (resource_exhausted, never fits), the source's (named with the peer), corrupt (a chunk's
  /// checksum, naming the peer, file and chunk), cancelled (`stop`).
  /// While models in use leave the tier too little room, waits for it up to `room_wait`
  /// (then resource_exhausted), or until `stop` without one.
  [[nodiscard]] expected<dram_tier::lease>
  pull(const checkpoint& ckpt, remote_source& source, std::stop_token stop = {},
       std::optional<std::chrono::milliseconds> room_wait = std::nullopt);

  [[nodiscard]] loader_stats stats() const;
  [[nodiscard]] loader_queue queued();
  [[nodiscard]] const loader_options& options() const noexcept { return options_; }
  [[nodiscard]] chunk_pool& pool() noexcept { return *pool_; }
  [[nodiscard]] dram_tier& tier() noexcept { return *tier_; }

private:
  loader(const loader_options& options, device& dev) : options_(options), device_(dev) {}
  void run(detail::load_state& s);
  void start_read(detail::load_state& s, const dram_tier::lease& lease);
  /// Pool chunks that models run in place (map, in-place loads) must leave unpinned, so that
  /// other models can still be loaded through the tier: a quarter of the pool.
  [[nodiscard]] std::size_t keep_unpinned() const noexcept { return pool_->total_chunks() / 4; }
  status copy_segments(detail::load_state& s, cached_model& model, std::stop_token stop);
  status await_segments(detail::load_state& s, cached_model& model, std::stop_token stop);
  void reap_finished();

  loader_options options_;
  device& device_;
  std::unique_ptr<chunk_pool> pool_;
  std::unique_ptr<dram_tier> tier_;
  std::unique_ptr<ssd_reader> reader_;
  /// The devices load() copies to, each with its copy lanes: the loader's own first, then
  /// add_device's.
  std::vector<std::pair<device*, std::unique_ptr<copy_engine>>> targets_;
  std::atomic<std::uint64_t> bytes_from_dram_{0};
  std::atomic<std::uint64_t> loads_started_{0};
  std::atomic<std::uint64_t> maps_{0};
  std::atomic<std::uint64_t> loads_in_place_{0};
  std::atomic<std::uint64_t> pulls_{0};
  std::atomic<std::uint64_t> bytes_pulled_{0};
  std::mutex loads_mutex_;
  std::vector<std::shared_ptr<detail::load_state>> loads_; ///< running or not yet joined
};

} // namespace thaw
