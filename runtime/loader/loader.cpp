#include "runtime/loader/loader.hpp"

#include <algorithm>
#include <condition_variable>
#include <limits>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

namespace thaw {
namespace detail {

/// Everything one load shares between its driver thread, the copy lanes' completions and the
/// handles. Kept alive by the loader until the driver thread is joined.
struct load_state {
  checkpoint ckpt;
  std::string name;
  load_mode mode = load_mode::copy; ///< set before the driver starts; it alone may change it
  std::unique_ptr<device_buffer> buffer;
  device* target = nullptr;      ///< where a copy goes: the loader's device or an added one
  copy_engine* engine = nullptr; ///< that device's copy lanes
  std::unique_ptr<mapped_model> mapped;
  bool mapped_taken = false;
  bool handles_gone = false; ///< every load_handle copy is gone: nobody can take a mapping
  std::stop_source stop;
  std::thread driver;

  mutable std::mutex mutex;
  mutable std::condition_variable_any cv;
  load_phase phase = load_phase::waiting;
  load_source source = load_source::ssd;
  status result;
  bool finished = false;
  bool buffer_taken = false;
  std::uint64_t bytes_done = 0;
  std::uint64_t prefix = 0;
  std::size_t prefix_segments = 0;
  std::vector<std::uint32_t> pieces_left; ///< per segment: copies not yet completed
  std::vector<bool> copied;
  std::size_t segments_in_flight = 0;
  std::optional<error> copy_error;

  /// A copy lane finished `len` bytes of segment `i`.
  void on_copied(std::size_t i, std::uint64_t len, status st) {
    std::lock_guard lock{mutex};
    if (st)
      bytes_done += len;
    else if (!copy_error)
      copy_error = with_context(std::move(st).err(), "loading " + name + ": copy to the device");
    if (--pieces_left[i] == 0) {
      copied[i] = !copy_error;
      --segments_in_flight;
      const auto& chunks = ckpt.chunks();
      while (prefix_segments < chunks.size() && copied[prefix_segments]) {
        prefix = chunks[prefix_segments].device_offset + chunks[prefix_segments].bytes;
        ++prefix_segments;
      }
    }
    // Notified under the lock: once the driver sees the last copy done, this state may go.
    cv.notify_all();
  }
};

} // namespace detail

namespace {

/// Reads one model from its data files into its DRAM-tier entry, keeping a few reads queued so
/// the reader threads never idle. Owned by its read completions: it lives as long as reads do.
struct model_read : std::enable_shared_from_this<model_read> {
  dram_tier* tier = nullptr;
  ssd_reader* reader = nullptr;
  std::shared_ptr<cached_model> model;
  std::vector<checkpoint_chunk> chunks;
  std::vector<std::uint64_t> index_in_file;
  std::vector<std::shared_ptr<const source_file>> files;
  std::atomic<std::size_t> next{0};

  void submit_next() {
    const std::size_t i = next.fetch_add(1);
    if (i >= chunks.size() || !tier->begin_read(*model))
      return;
    const auto& c = chunks[i];
    read_request r;
    r.file = files[c.file];
    r.offset = c.file_offset;
    r.bytes = c.bytes;
    r.buffers = model->segment_buffers(i);
    r.checksum = c.checksum;
    r.chunk_index = index_in_file[i];
    r.stop = model->abandoned();
    reader->submit(std::move(r), [self = shared_from_this(), i](status s) {
      self->tier->end_read(*self->model, i, std::move(s));
      self->submit_next(); // does nothing once the model has failed
    });
  }
};

} // namespace

const char* to_string(load_source s) noexcept {
  switch (s) {
    case load_source::ssd: return "ssd";
    case load_source::dram: return "dram";
  }
  return "?";
}

const char* to_string(load_mode m) noexcept {
  switch (m) {
    case load_mode::copy: return "copy";
    case load_mode::in_place: return "in_place";
    case load_mode::tier_only: return "tier_only";
  }
  return "?";
}

const char* to_string(load_phase p) noexcept {
  switch (p) {
    case load_phase::waiting: return "waiting";
    case load_phase::loading: return "loading";
    case load_phase::done: return "done";
    case load_phase::failed: return "failed";
    case load_phase::cancelled: return "cancelled";
  }
  return "?";
}

int default_verify_threads(unsigned cores) {
  return std::clamp(static_cast<int>(cores / 4), 1, 4);
}

expected<loader_options> loader_options::from_config(const config& cfg) {
  loader_options o;
  THAW_ASSIGN(o.pool_bytes, cfg.get_bytes("loader.pool_bytes", o.pool_bytes));
  THAW_ASSIGN(o.chunk_bytes, cfg.get_bytes("loader.chunk_bytes", o.chunk_bytes));
  THAW_ASSIGN(auto threads, cfg.get_int("loader.read_threads", o.read_threads));
  THAW_ASSIGN(auto lanes, cfg.get_int("loader.copy_lanes", o.copy_lanes));
  THAW_ASSIGN(auto verifiers, cfg.get_int("loader.verify_threads", o.verify_threads));
  THAW_ASSIGN(o.verify_checksums, cfg.get_bool("loader.verify_checksums", o.verify_checksums));
  THAW_ASSIGN(o.map_weights, cfg.get_bool("loader.map_weights", o.map_weights));
  constexpr std::int64_t max_threads = 256;
  if (threads < 1 || threads > max_threads)
    return make_error(errc::invalid_argument, "loader.read_threads: " + std::to_string(threads) +
                                                  " is not between 1 and 256");
  if (lanes < 1 || lanes > max_threads)
    return make_error(errc::invalid_argument, "loader.copy_lanes: " + std::to_string(lanes) +
                                                  " is not between 1 and 256");
  if (verifiers < 1 || verifiers > max_threads)
    return make_error(errc::invalid_argument, "loader.verify_threads: " +
                                                  std::to_string(verifiers) +
                                                  " is not between 1 and 256");
  o.read_threads = static_cast<int>(threads);
  o.copy_lanes = static_cast<int>(lanes);
  o.verify_threads = static_cast<int>(verifiers);
  THAW_TRY(o.validate());
  return o;
}

status loader_options::validate() const {
  if (chunk_bytes == 0 || chunk_bytes % 4096 != 0)
    return make_error(errc::invalid_argument, "loader.chunk_bytes: " + std::to_string(chunk_bytes) +
                                                  " is not a positive multiple of 4096");
  if (pool_bytes < chunk_bytes)
    return make_error(errc::invalid_argument, "loader.pool_bytes: " + std::to_string(pool_bytes) +
                                                  " is smaller than one chunk (" +
                                                  std::to_string(chunk_bytes) + " bytes)");
  if (read_threads < 1 || read_threads > 256)
    return make_error(errc::invalid_argument, "loader.read_threads: " +
                                                  std::to_string(read_threads) +
                                                  " is not between 1 and 256");
  if (verify_threads < 1 || verify_threads > 256)
    return make_error(errc::invalid_argument, "loader.verify_threads: " +
                                                  std::to_string(verify_threads) +
                                                  " is not between 1 and 256");
  if (copy_lanes < 1 || copy_lanes > 256)
    return make_error(errc::invalid_argument, "loader.copy_lanes: " + std::to_string(copy_lanes) +
                                                  " is not between 1 and 256");
  return {};
}

// --- load_handle --------------------------------------------------------------------------

load_handle::load_handle(std::shared_ptr<detail::load_state> s)
    : state_(std::move(s)), keeper_(nullptr, [s = state_](void*) {
        std::unique_ptr<mapped_model> untaken;
        {
          std::lock_guard lock{s->mutex};
          s->handles_gone = true;
          untaken = std::move(s->mapped);
        }
        // Released outside the lock: unpinning takes the tier's.
      }) {}

status load_handle::wait() const {
  std::unique_lock lock{state_->mutex};
  state_->cv.wait(lock, [&] { return state_->finished; });
  return state_->result;
}

void load_handle::cancel() const { state_->stop.request_stop(); }

load_progress load_handle::progress() const {
  std::lock_guard lock{state_->mutex};
  return load_progress{state_->bytes_done, state_->ckpt.total_bytes(), state_->source,
                       state_->phase};
}

std::uint64_t load_handle::loaded_prefix() const {
  std::lock_guard lock{state_->mutex};
  return state_->prefix;
}

status load_handle::wait_for_layer(std::int32_t layer) const {
  const auto layers = static_cast<std::int64_t>(state_->ckpt.config().num_layers);
  if (layer < -1 || layer > layers)
    return make_error(errc::invalid_argument, "loading " + state_->name + ": layer " +
                                                  std::to_string(layer) + " is not between -1 and " +
                                                  std::to_string(layers));
  const std::uint64_t end = state_->ckpt.layer_end(layer);
  std::unique_lock lock{state_->mutex};
  state_->cv.wait(lock, [&] { return state_->prefix >= end || state_->finished; });
  if (state_->prefix >= end)
    return {};
  return state_->result;
}

device_buffer& load_handle::buffer() const { return *state_->buffer; }

load_mode load_handle::mode() const {
  std::lock_guard lock{state_->mutex};
  return state_->mode;
}

namespace {

/// Hands `what` (the load's result of mode `made`) over once, after the load succeeded.
template <class T>
expected<std::unique_ptr<T>> take_once(detail::load_state& s, load_mode made, bool& taken,
                                       std::unique_ptr<T>& what, const char* noun) {
  std::lock_guard lock{s.mutex};
  if (s.mode != made)
    return make_error(errc::invalid_argument, "loading " + s.name + ": the load made a " +
                                                  to_string(s.mode) + ", not a " + noun);
  if (taken)
    return make_error(errc::invalid_argument,
                      "loading " + s.name + ": the " + noun + " was already taken");
  taken = true;
  return std::move(what);
}

} // namespace

expected<std::unique_ptr<mapped_model>> load_handle::take_mapped() const {
  THAW_TRY(wait());
  auto& s = *state_;
  return take_once(s, load_mode::in_place, s.mapped_taken, s.mapped, "mapping");
}

expected<std::unique_ptr<device_buffer>> load_handle::take_buffer() const {
  THAW_TRY(wait());
  auto& s = *state_;
  return take_once(s, load_mode::copy, s.buffer_taken, s.buffer, "buffer");
}

// --- loader -------------------------------------------------------------------------------

expected<std::unique_ptr<loader>> loader::create(const loader_options& options, device& dev,
                                                 const chunk_pool::memory_source& pool_memory) {
  THAW_TRY(options.validate());
  std::unique_ptr<loader> l{new loader(options, dev)};
  THAW_ASSIGN(l->pool_,
              chunk_pool::create(options.pool_bytes, options.chunk_bytes, &dev, pool_memory));
  l->tier_ = std::make_unique<dram_tier>(*l->pool_);
  THAW_ASSIGN(l->reader_,
              ssd_reader::create(ssd_reader_options{options.read_threads, options.verify_threads,
                                                    options.verify_checksums}));
  l->targets_.emplace_back(&dev, dev.make_copy_engine(options.copy_lanes));
  return l;
}

loader::~loader() {
  std::vector<std::shared_ptr<detail::load_state>> loads;
  {
    std::lock_guard lock{loads_mutex_};
    loads.swap(loads_);
  }
  for (auto& s : loads)
    s->stop.request_stop();
  for (auto& s : loads)
    s->driver.join();
  // Mappings no one took yet pin chunks of the tier that is about to go.
  for (auto& s : loads) {
    std::lock_guard lock{s->mutex};
    s->mapped.reset();
  }
  // Reads may still be finishing for abandoned models; they touch the tier, which touches the
  // pool: stop in that order. (Members may be null when create() failed part way.)
  for (auto& [dev, engine] : targets_)
    engine->drain();
  reader_.reset();
  targets_.clear();
  tier_.reset();
  pool_.reset();
}

loader_stats loader::stats() const {
  loader_stats s;
  s.bytes_read_ssd = reader_->bytes_read();
  s.bytes_from_dram = bytes_from_dram_.load();
  s.ssd_reads = reader_->reads_issued();
  s.evictions = tier_->evictions();
  s.loads = loads_started_.load();
  s.maps = maps_.load();
  s.loads_in_place = loads_in_place_.load();
  s.pulls = pulls_.load();
  s.bytes_pulled = bytes_pulled_.load();
  return s;
}

std::vector<chunk_piece> pull_pieces(std::uint64_t chunk_bytes, std::uint64_t a,
                                     std::uint64_t b) {
  std::vector<chunk_piece> out;
  for (std::uint64_t off = 0; off < chunk_bytes;) {
    const auto next_a = a > 0 ? (off / a + 1) * a : chunk_bytes;
    const auto next_b = b > 0 ? (off / b + 1) * b : chunk_bytes;
    const auto end = std::min({next_a, next_b, chunk_bytes});
    out.push_back(chunk_piece{off, end - off});
    off = end;
  }
  return out;
}

std::vector<std::span<std::byte>> pull_destinations(const cached_model& model, std::size_t i,
                                                    std::uint64_t pool_chunk,
                                                    std::uint64_t peer_chunk) {
  const auto buffers = model.segment_buffers(i);
  std::vector<std::span<std::byte>> out;
  for (const auto& p : pull_pieces(model.segment_bytes(i), pool_chunk, peer_chunk))
    out.push_back(buffers.at(p.offset / pool_chunk).subspan(p.offset % pool_chunk, p.bytes));
  return out;
}

expected<dram_tier::lease> loader::pull(const checkpoint& ckpt, remote_source& source,
                                        std::stop_token stop,
                                        std::optional<std::chrono::milliseconds> room_wait) {
  const auto& chunks = ckpt.chunks();
  const std::string from = "pulling " + ckpt.dir().string() + " from " + source.name();
  THAW_TRY(tier_->check_fits(ckpt));
  std::optional<std::chrono::steady_clock::time_point> deadline;
  if (room_wait)
    deadline = std::chrono::steady_clock::now() + *room_wait;
  THAW_ASSIGN(auto lease, tier_->acquire(ckpt, stop, deadline));
  auto& model = lease.model();
  auto wait_all = [&]() -> status {
    for (std::size_t i = 0; i < chunks.size(); ++i)
      THAW_TRY(tier_->wait_segment(model, i, stop));
    return {};
  };
  if (!lease.created()) { // in the tier already, or being read by a load or another pull
    THAW_TRY(wait_all());
    return lease;
  }

  // Every chunk is one read in flight from now until it is verified or the fetch fails.
  const std::size_t n = chunks.size();
  std::vector<std::span<std::byte>> destinations; // every piece of every chunk, in order
  std::vector<std::size_t> chunk_of;              // piece -> chunk
  for (std::size_t i = 0; i < n; ++i)
    for (const auto& d : pull_destinations(model, i, pool_->chunk_bytes(), source.chunk_bytes())) {
      destinations.push_back(d);
      chunk_of.push_back(i);
    }
  for (std::size_t i = 0; i < n; ++i)
    if (!tier_->begin_read(model)) { // abandoned meanwhile: end the reads begun
      for (std::size_t k = 0; k < i; ++k)
        tier_->end_read(model, k, make_error(errc::cancelled, from + ": abandoned"));
      return make_error(errc::cancelled, from + ": abandoned");
    }

  struct progress {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<std::uint64_t> landed;
    std::vector<bool> ended;   ///< end_read called (verified, or the fetch failed first)
    std::size_t verifying = 0; ///< handed to the verifiers, not back yet
  } p;
  p.landed.assign(n, 0);
  p.ended.assign(n, false);
  auto verified = [&](std::size_t i, status result) {
    tier_->end_read(model, i, std::move(result));
    std::lock_guard lock{p.mutex};
    --p.verifying;
    p.cv.notify_all();
  };
  const auto& files = ckpt.info().files;
  auto on_piece = [&](std::size_t piece, std::size_t, std::size_t bytes) {
    const std::size_t i = chunk_of.at(piece);
    {
      std::lock_guard lock{p.mutex};
      p.landed.at(i) += bytes;
      if (p.landed[i] != chunks[i].bytes)
        return;
      p.ended[i] = true;
      ++p.verifying;
    }
    const auto& c = chunks[i];
    read_request r;
    r.offset = c.file_offset;
    r.bytes = c.bytes;
    r.buffers = model.segment_buffers(i);
    r.checksum = c.checksum;
    r.chunk_index = c.file_offset / files.at(c.file).chunk_bytes;
    r.origin = source.name() + " (" + files.at(c.file).name + ")";
    reader_->verify_async(std::move(r), [&verified, i](status st) { verified(i, std::move(st)); });
  };
  status fetched = source.fetch(destinations, on_piece, stop);
  {
    std::unique_lock lock{p.mutex};
    p.cv.wait(lock, [&] { return p.verifying == 0; });
    if (fetched && std::find(p.ended.begin(), p.ended.end(), false) != p.ended.end())
      fetched = make_error(errc::internal, "the source reported success with bytes missing");
  }
  if (!fetched) {
    auto e = with_context(std::move(fetched).err(), from);
    for (std::size_t i = 0; i < n; ++i)
      if (!p.ended[i])
        tier_->end_read(model, i, e);
    lease.reset(); // the failed model's chunks go back to the pool
    return e;
  }
  if (auto ready = wait_all(); !ready) {
    lease.reset();
    return with_context(std::move(ready).err(), from);
  }
  pulls_.fetch_add(1);
  bytes_pulled_.fetch_add(ckpt.total_bytes());
  return lease;
}

std::unique_ptr<mapped_model> loader::map(const checkpoint& ckpt) {
  if (!options_.map_weights || device_.kind() != device_kind::host)
    return nullptr;
  auto lease = tier_->try_pin_ready(ckpt, keep_unpinned());
  if (!lease)
    return nullptr;
  auto files = tier_->file_bytes(lease->model(), ckpt);
  if (files.empty())
    return nullptr; // the lease goes, unpinning it
  maps_.fetch_add(1);
  return std::make_unique<mapped_model>(std::move(*lease), std::move(files));
}

loader_queue loader::queued() {
  loader_queue q;
  std::lock_guard lock{loads_mutex_};
  for (const auto& s : loads_) {
    std::lock_guard state_lock{s->mutex};
    if (s->finished)
      continue;
    const auto left = s->ckpt.total_bytes() - std::min(s->bytes_done, s->ckpt.total_bytes());
    const bool dram = s->phase != load_phase::waiting && s->source == load_source::dram;
    (dram ? q.dram_bytes : q.ssd_bytes) += left;
    ++q.loads;
  }
  return q;
}

void loader::reap_finished() {
  std::lock_guard lock{loads_mutex_};
  std::erase_if(loads_, [](const std::shared_ptr<detail::load_state>& s) {
    {
      std::lock_guard state_lock{s->mutex};
      if (!s->finished)
        return false;
    }
    s->driver.join(); // it has set `finished`; only its return is left
    return true;
  });
}

status loader::add_device(device& dev) {
  if (std::any_of(targets_.begin(), targets_.end(), [&](const auto& t) { return t.first == &dev; }))
    return {};
  THAW_TRY(pool_->register_with(dev));
  targets_.emplace_back(&dev, dev.make_copy_engine(options_.copy_lanes));
  return {};
}

expected<load_handle> loader::load(const checkpoint& ckpt, load_mode mode, device* target) {
  reap_finished();
  if (target == nullptr)
    target = &device_;
  auto it = std::find_if(targets_.begin(), targets_.end(),
                         [&](const auto& t) { return t.first == target; });
  if (it == targets_.end())
    return make_error(errc::invalid_argument,
                      "loader: " + target->name() + " is not one of its devices (add_device)");
  if (target != &device_)
    mode = load_mode::copy; // only the loader's own (host) device can run from the tier
  THAW_TRY(tier_->check_fits(ckpt));
  auto s = std::make_shared<detail::load_state>();
  s->target = target;
  s->engine = it->second.get();
  s->ckpt = ckpt;
  s->name = ckpt.dir().has_filename() ? ckpt.dir().filename().string()
                                      : ckpt.dir().parent_path().filename().string();
  if (mode == load_mode::in_place &&
      (!options_.map_weights || device_.kind() != device_kind::host))
    mode = load_mode::copy;
  s->mode = mode;
  if (mode == load_mode::copy) {
    auto buffer = target->allocate(ckpt.total_bytes());
    if (!buffer)
      return with_context(std::move(buffer).err(), "loading " + s->name);
    s->buffer = std::move(*buffer);
  }
  s->pieces_left.assign(ckpt.chunks().size(), 0);
  s->copied.assign(ckpt.chunks().size(), false);
  loads_started_.fetch_add(1);
  s->driver = std::thread([this, raw = s.get()] { run(*raw); });
  {
    std::lock_guard lock{loads_mutex_};
    loads_.push_back(s);
  }
  return load_handle{std::move(s)};
}

void loader::start_read(detail::load_state& s, const dram_tier::lease& lease) {
  auto read = std::make_shared<model_read>();
  read->tier = tier_.get();
  read->reader = reader_.get();
  read->model = lease.shared_model();
  read->chunks = s.ckpt.chunks();
  for (const auto& c : read->chunks)
    read->index_in_file.push_back(c.file_offset / s.ckpt.info().files.at(c.file).chunk_bytes);
  // Open every file before reading a byte: a missing file fails the load before any work.
  for (std::uint32_t f = 0; f < s.ckpt.info().files.size(); ++f) {
    auto file = source_file::open(s.ckpt.file_path(f));
    if (!file) {
      tier_->fail(*read->model, std::move(file).err());
      return;
    }
    read->files.push_back(std::move(*file));
  }
  // Two requests per reader thread: when a read completes, the next one is already queued.
  for (int k = 0; k < 2 * options_.read_threads; ++k)
    read->submit_next();
}

status loader::copy_segments(detail::load_state& s, cached_model& model, std::stop_token stop) {
  status result;
  // A few segments in flight per lane keep the lanes busy while keeping cancel prompt.
  const std::size_t limit = 2 * static_cast<std::size_t>(std::max(options_.copy_lanes, 1));
  const std::size_t n = s.ckpt.chunks().size();
  for (std::size_t i = 0; i < n; ++i) {
    {
      std::unique_lock lock{s.mutex};
      s.cv.wait(lock, stop, [&] { return s.segments_in_flight < limit || s.copy_error; });
      if (s.copy_error)
        break;
    }
    if (stop.stop_requested())
      break;
    if (auto ready = tier_->wait_segment(model, i, stop); !ready) {
      if (!stop.stop_requested())
        result = with_context(std::move(ready).err(), "loading " + s.name);
      break;
    }
    auto buffers = model.segment_buffers(i);
    std::uint64_t left = model.segment_bytes(i);
    std::uint64_t dst = s.ckpt.chunks()[i].device_offset;
    std::uint32_t pieces = 0;
    for (std::uint64_t rest = left; rest > 0; ++pieces)
      rest -= std::min<std::uint64_t>(rest, buffers[pieces].size());
    {
      std::lock_guard lock{s.mutex};
      s.pieces_left[i] = pieces;
      ++s.segments_in_flight;
    }
    for (std::uint32_t p = 0; p < pieces; ++p) {
      const auto len = std::min<std::uint64_t>(left, buffers[p].size());
      s.engine->submit(*s.buffer, dst, buffers[p].data(), len,
                      [&s, i, len](status st) { s.on_copied(i, len, std::move(st)); });
      dst += len;
      left -= len;
    }
  }
  // Copies in flight read the model's chunks and write the buffer: let them end, whatever
  // happened, before giving either up.
  std::unique_lock lock{s.mutex};
  s.cv.wait(lock, [&] { return s.segments_in_flight == 0; });
  if (result && s.copy_error)
    result = *s.copy_error;
  if (result && s.prefix_segments != n)
    result = make_error(errc::cancelled, "loading " + s.name + ": cancelled");
  return result;
}

status loader::await_segments(detail::load_state& s, cached_model& model, std::stop_token stop) {
  // Nothing to copy: the prefix is where the tier's verified segments reach, in order.
  const auto& chunks = s.ckpt.chunks();
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    if (auto ready = tier_->wait_segment(model, i, stop); !ready) {
      if (stop.stop_requested())
        return make_error(errc::cancelled, "loading " + s.name + ": cancelled");
      return with_context(std::move(ready).err(), "loading " + s.name);
    }
    std::lock_guard lock{s.mutex};
    s.bytes_done += chunks[i].bytes;
    s.prefix = chunks[i].device_offset + chunks[i].bytes;
    s.prefix_segments = i + 1;
    s.cv.notify_all();
  }
  return {};
}

void loader::run(detail::load_state& s) {
  const std::stop_token stop = s.stop.get_token();
  status result;
  auto lease = tier_->acquire(s.ckpt, stop);
  if (!lease) {
    result = std::move(lease).err();
  } else {
    auto model = lease->shared_model();
    {
      std::lock_guard lock{s.mutex};
      s.phase = load_phase::loading;
      s.source = lease->was_ready() ? load_source::dram : load_source::ssd;
    }
    if (lease->created())
      start_read(s, *lease);

    std::vector<const std::byte*> files;
    if (s.mode == load_mode::in_place) {
      // As map(): one run of pool chunks per file, and pinned for its life the model must leave
      // a quarter of the pool to load others through (the lease pins it already).
      files = tier_->file_bytes(lease->model(), s.ckpt);
      if (files.empty() || tier_->pinned_chunks() + keep_unpinned() > pool_->total_chunks()) {
        files.clear();
        auto buffer = s.target->allocate(s.ckpt.total_bytes());
        std::lock_guard lock{s.mutex};
        s.mode = load_mode::copy;
        if (buffer)
          s.buffer = std::move(*buffer);
        else
          result = with_context(std::move(buffer).err(), "loading " + s.name);
      }
    }
    if (result)
      result = s.mode == load_mode::copy ? copy_segments(s, *model, stop)
                                         : await_segments(s, *model, stop);
    if (result && s.mode == load_mode::copy && lease->was_ready())
      bytes_from_dram_.fetch_add(s.ckpt.total_bytes());
    if (result && s.mode == load_mode::in_place) {
      auto mapped = std::make_unique<mapped_model>(std::move(*lease), std::move(files));
      loads_in_place_.fetch_add(1);
      std::lock_guard lock{s.mutex};
      if (!s.handles_gone) // else nobody can take it: it goes now, unpinning the model
        s.mapped = std::move(mapped);
    }
    lease->reset(); // a no-op once the mapping holds it
    // A failed or abandoned model's chunks return once its last reads end; wait, so that a
    // caller of wait() sees the pool whole again.
    if (!result)
      tier_->wait_released(*model);
  }
  std::lock_guard lock{s.mutex};
  s.result = std::move(result);
  if (s.result)
    s.phase = load_phase::done;
  else
    s.phase = s.result.err().code == errc::cancelled ? load_phase::cancelled : load_phase::failed;
  s.finished = true;
  s.cv.notify_all();
}

} // namespace thaw
