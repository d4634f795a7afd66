#include "runtime/loader/dram_tier.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

namespace thaw {
namespace {

std::string model_name(const checkpoint& ckpt) {
  auto dir = ckpt.dir();
  if (!dir.has_filename())
    dir = dir.parent_path();
  return dir.filename().string();
}

/// Pool chunks the model needs: each checkpoint chunk starts in a fresh pool chunk, so that a
/// chunk is one read into (usually) one buffer.
std::size_t chunks_needed(const checkpoint& ckpt, const chunk_pool& pool) {
  std::size_t n = 0;
  for (const auto& c : ckpt.chunks())
    n += pool.chunks_for(c.bytes);
  return n;
}

} // namespace

const char* to_string(dram_state s) noexcept {
  switch (s) {
    case dram_state::loading: return "loading";
    case dram_state::ready: return "ready";
    case dram_state::failed: return "failed";
  }
  return "?";
}

std::vector<std::span<std::byte>> cached_model::segment_buffers(std::size_t i) const {
  const std::size_t first = first_chunk_.at(i);
  const std::size_t end = i + 1 < first_chunk_.size() ? first_chunk_[i + 1] : chunks_.size();
  std::vector<std::span<std::byte>> out;
  out.reserve(end - first);
  for (std::size_t c = first; c < end; ++c)
    out.push_back(chunks_[c].bytes());
  return out;
}

dram_tier::lease::lease(lease&& other) noexcept
    : tier_(std::exchange(other.tier_, nullptr)), model_(std::move(other.model_)),
      created_(other.created_), was_ready_(other.was_ready_) {}

dram_tier::lease& dram_tier::lease::operator=(lease&& other) noexcept {
  if (this != &other) {
    reset();
    tier_ = std::exchange(other.tier_, nullptr);
    model_ = std::move(other.model_);
    created_ = other.created_;
    was_ready_ = other.was_ready_;
  }
  return *this;
}

void dram_tier::lease::reset() noexcept {
  if (tier_ != nullptr) {
    std::exchange(tier_, nullptr)->release(model_);
    model_.reset();
  }
}

dram_tier::~dram_tier() {
  std::lock_guard lock{mutex_};
  for (auto& [id, m] : models_)
    if (m->pins_ > 0 || m->reads_in_flight_ > 0)
      spdlog::error("DRAM tier destroyed while model {} is still in use", m->name_);
  models_.clear();
}

status dram_tier::check_fits(const checkpoint& ckpt) const {
  const std::size_t need = chunks_needed(ckpt, pool_);
  if (need <= pool_.total_chunks())
    return {};
  return make_error(errc::resource_exhausted,
                    "model " + model_name(ckpt) + " needs " + std::to_string(ckpt.total_bytes()) +
                        " bytes (" + std::to_string(need) + " chunks of " +
                        std::to_string(pool_.chunk_bytes()) + ") but the chunk pool holds only " +
                        std::to_string(pool_.capacity_bytes()) + " bytes");
}

expected<dram_tier::lease> dram_tier::try_acquire(const checkpoint& ckpt) {
  return acquire_impl(ckpt, nullptr, std::nullopt);
}

expected<dram_tier::lease>
dram_tier::acquire(const checkpoint& ckpt, std::stop_token stop,
                   std::optional<std::chrono::steady_clock::time_point> deadline) {
  return acquire_impl(ckpt, &stop, deadline);
}

expected<dram_tier::lease>
dram_tier::acquire_impl(const checkpoint& ckpt, const std::stop_token* stop,
                        std::optional<std::chrono::steady_clock::time_point> deadline) {
  THAW_TRY(check_fits(ckpt));
  const auto waiting_since = std::chrono::steady_clock::now();
  const std::size_t need = chunks_needed(ckpt, pool_);
  std::unique_lock lock{mutex_};
  for (;;) {
    if (stop != nullptr && stop->stop_requested())
      return make_error(errc::cancelled, "model " + model_name(ckpt) + ": cancelled while waiting "
                                                                        "for room in the chunk pool");
    lease l;
    if (auto it = models_.find(ckpt.content_id()); it != models_.end()) {
      l.model_ = it->second;
    } else if (make_room_locked(need)) {
      auto chunks = pool_.try_acquire(need);
      if (!chunks)
        return make_error(errc::internal, "chunk pool changed under the DRAM tier");
      auto m = std::make_shared<cached_model>();
      m->content_id_ = ckpt.content_id();
      m->name_ = model_name(ckpt);
      m->bytes_ = ckpt.total_bytes();
      m->chunks_ = std::move(*chunks);
      std::size_t next = 0;
      for (const auto& c : ckpt.chunks()) {
        m->segment_bytes_.push_back(c.bytes);
        m->first_chunk_.push_back(next);
        next += pool_.chunks_for(c.bytes);
      }
      m->segment_ready_.assign(ckpt.chunks().size(), false);
      if (m->segment_ready_.empty())
        m->state_ = dram_state::ready; // an empty model is trivially complete
      models_.emplace(m->content_id_, m);
      l.model_ = std::move(m);
      l.created_ = true;
    } else if (stop != nullptr && (!deadline || std::chrono::steady_clock::now() < *deadline)) {
      // Any release, finished read or eviction may have made room: wake on the next one.
      const std::uint64_t seen = generation_;
      auto changed = [&] { return generation_ != seen; };
      if (deadline)
        cv_.wait_until(lock, *stop, *deadline, changed);
      else
        cv_.wait(lock, *stop, changed);
      continue;
    } else {
      std::string waited;
      if (deadline) {
        const auto s = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                     waiting_since).count();
        waited = " (still so after waiting " + std::to_string(static_cast<int>(s + 0.5)) + " s)";
      }
      return make_error(errc::resource_exhausted,
                        "model " + model_name(ckpt) + " needs " + std::to_string(need) +
                            " chunks; only " + std::to_string(pool_.free_chunks()) +
                            " are free and the rest hold models in use" + waited);
    }
    l.tier_ = this;
    l.was_ready_ = l.model_->state_ == dram_state::ready;
    ++l.model_->pins_;
    l.model_->last_used_ = ++clock_;
    return l;
  }
}

bool dram_tier::make_room_locked(std::size_t need) {
  std::size_t free = pool_.free_chunks();
  if (free >= need)
    return true;
  std::vector<cached_model*> victims;
  for (auto& [id, m] : models_)
    if (m->state_ == dram_state::ready && m->pins_ == 0)
      victims.push_back(m.get());
  std::sort(victims.begin(), victims.end(),
            [](const cached_model* a, const cached_model* b) { return a->last_used_ < b->last_used_; });
  std::size_t take = 0;
  std::size_t gain = 0;
  while (free + gain < need && take < victims.size())
    gain += victims[take++]->chunks_.size();
  if (free + gain < need)
    return false; // not even evicting every idle model helps: disturb nothing
  for (std::size_t i = 0; i < take; ++i) {
    spdlog::debug("DRAM tier: evicting {} ({} bytes)", victims[i]->name_, victims[i]->bytes_);
    victims[i]->chunks_.clear();
    models_.erase(victims[i]->content_id_);
    ++evictions_;
  }
  return true;
}

void dram_tier::release(const std::shared_ptr<cached_model>& m) noexcept {
  {
    std::lock_guard lock{mutex_};
    --m->pins_;
    m->last_used_ = ++clock_;
    if (m->pins_ == 0 && m->state_ == dram_state::loading)
      fail_locked(*m, make_error(errc::cancelled, "model " + m->name_ + ": abandoned while loading"));
    maybe_free_locked(*m);
    ++generation_;
  }
  cv_.notify_all();
}

bool dram_tier::begin_read(cached_model& m) {
  std::lock_guard lock{mutex_};
  if (m.state_ != dram_state::loading)
    return false;
  ++m.reads_in_flight_;
  return true;
}

void dram_tier::end_read(cached_model& m, std::size_t segment, status result) {
  {
    std::lock_guard lock{mutex_};
    --m.reads_in_flight_;
    if (m.state_ == dram_state::loading) {
      if (!result) {
        fail_locked(m, std::move(result).err());
      } else if (!m.segment_ready_.at(segment)) {
        m.segment_ready_[segment] = true;
        if (++m.ready_segments_ == m.segment_ready_.size())
          m.state_ = dram_state::ready;
      }
    }
    maybe_free_locked(m);
    ++generation_;
  }
  cv_.notify_all();
}

void dram_tier::fail(cached_model& m, error e) {
  {
    std::lock_guard lock{mutex_};
    if (m.state_ == dram_state::loading)
      fail_locked(m, std::move(e));
    maybe_free_locked(m);
    ++generation_;
  }
  cv_.notify_all();
}

void dram_tier::fail_locked(cached_model& m, error e) {
  m.abandon_.request_stop();
  m.state_ = dram_state::failed;
  m.failure_ = std::move(e);
  if (auto it = models_.find(m.content_id_); it != models_.end() && it->second.get() == &m)
    models_.erase(it);
}

void dram_tier::maybe_free_locked(cached_model& m) {
  if (m.state_ == dram_state::failed && m.pins_ == 0 && m.reads_in_flight_ == 0 && !m.released_) {
    m.chunks_.clear();
    m.released_ = true;
  }
}

status dram_tier::wait_segment(cached_model& m, std::size_t i, std::stop_token stop) {
  std::unique_lock lock{mutex_};
  cv_.wait(lock, stop, [&] { return m.state_ == dram_state::failed || m.segment_ready_.at(i); });
  if (m.state_ == dram_state::failed)
    return *m.failure_;
  if (!m.segment_ready_[i])
    return make_error(errc::cancelled, "model " + m.name_ + ": cancelled");
  return {};
}

void dram_tier::wait_released(cached_model& m) {
  std::unique_lock lock{mutex_};
  cv_.wait(lock, [&] { return m.state_ != dram_state::failed || m.released_ || m.pins_ > 0; });
}

std::optional<dram_tier::lease> dram_tier::try_pin_ready(const checkpoint& ckpt,
                                                         std::size_t keep_unpinned) {
  std::lock_guard lock{mutex_};
  auto it = models_.find(ckpt.content_id());
  if (it == models_.end() || it->second->state_ != dram_state::ready)
    return std::nullopt;
  auto& m = it->second;
  if (m->pins_ == 0 &&
      pinned_chunks_locked() + m->chunks_.size() + keep_unpinned > pool_.total_chunks())
    return std::nullopt;
  lease l;
  l.tier_ = this;
  l.model_ = m;
  l.was_ready_ = true;
  ++m->pins_;
  m->last_used_ = ++clock_;
  return l;
}

std::vector<const std::byte*> dram_tier::file_bytes(const cached_model& m,
                                                    const checkpoint& ckpt) const {
  const auto& chunks = ckpt.chunks();
  if (m.chunks_.empty() || m.first_chunk_.size() != chunks.size())
    return {};
  for (std::size_t k = 1; k < m.chunks_.size(); ++k)
    if (m.chunks_[k].index() != m.chunks_[0].index() + k)
      return {};
  const std::uint64_t size = pool_.chunk_bytes();
  std::vector<const std::byte*> files(ckpt.info().files.size(), nullptr);
  std::vector<std::size_t> file_first(files.size(), 0); // index into m.chunks_ of offset 0
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const auto f = chunks[i].file;
    if (f >= files.size() || chunks[i].file_offset % size != 0)
      return {};
    const std::size_t want = chunks[i].file_offset / size;
    if (files[f] == nullptr) {
      if (want > m.first_chunk_[i])
        return {};
      file_first[f] = m.first_chunk_[i] - want;
      files[f] = m.chunks_[file_first[f]].data();
    }
    if (m.first_chunk_[i] != file_first[f] + want)
      return {};
  }
  for (const auto* p : files)
    if (p == nullptr)
      return {}; // a file without chunks: nothing to point at
  return files;
}

std::size_t dram_tier::pinned_chunks() const {
  std::lock_guard lock{mutex_};
  return pinned_chunks_locked();
}

std::size_t dram_tier::pinned_chunks_locked() const {
  std::size_t n = 0;
  for (const auto& [id, m] : models_)
    if (m->pins_ > 0)
      n += m->chunks_.size();
  return n;
}

std::optional<dram_state> dram_tier::state_of(const std::string& content_id) const {
  std::lock_guard lock{mutex_};
  auto it = models_.find(content_id);
  if (it == models_.end())
    return std::nullopt;
  return it->second->state_;
}

std::vector<std::string> dram_tier::lru_order() const {
  std::lock_guard lock{mutex_};
  std::vector<const cached_model*> all;
  for (const auto& [id, m] : models_)
    all.push_back(m.get());
  std::sort(all.begin(), all.end(),
            [](const cached_model* a, const cached_model* b) { return a->last_used_ < b->last_used_; });
  std::vector<std::string> out;
  for (const auto* m : all)
    out.push_back(m->content_id_);
  return out;
}

std::size_t dram_tier::evict_unpinned() {
  std::size_t n = 0;
  {
    std::lock_guard lock{mutex_};
    for (auto it = models_.begin(); it != models_.end();) {
      if (it->second->state_ == dram_state::ready && it->second->pins_ == 0) {
        it->second->chunks_.clear();
        it = models_.erase(it);
        ++n;
      } else {
        ++it;
      }
    }
    ++generation_;
  }
  cv_.notify_all();
  return n;
}

std::uint64_t dram_tier::evictions() const {
  std::lock_guard lock{mutex_};
  return evictions_;
}

} // namespace thaw
