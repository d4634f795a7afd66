#include "actors/node.hpp"

#include "actors/instance.hpp"
#include "gpu/host/host_device.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <chrono>
#include <spdlog/spdlog.h>
#include <unordered_map>
#include <unordered_set>

namespace thaw {
namespace {

struct slot_state {
  std::uint64_t memory_bytes = 0;
  std::uint64_t used_bytes = 0;
};

struct placed_instance {
  std::string model;
  std::size_t slot = 0;
  std::uint64_t bytes = 0;
};

struct node_state {
  std::shared_ptr<node_context> ctx;
  caf::actor scheduler;
  std::vector<slot_state> slots;
  std::unordered_map<caf::actor_addr, placed_instance> instances;
  /// Linked instances whose exit message has not come yet (it may come after their down
  /// message, which already removed them from `instances`).
  std::unordered_set<caf::actor_addr> linked;
  std::unordered_map<std::string, std::string> checkpoint_of_content; // content id -> dir
  double ssd_bandwidth = 0;
  double dram_bandwidth = 0;
  std::uint64_t loads_ssd = 0;
  std::uint64_t loads_dram = 0;
  std::uint64_t starts_in_place = 0; ///< instances run on the DRAM tier's bytes (map, in place)

  static inline const char* name = "node";
};

using node_ptr = caf::stateful_actor<node_state>*;

node_status make_status(node_ptr self) {
  auto& s = self->state;
  node_status st;
  st.name = s.ctx->options.name;
  st.handle = caf::actor_cast<caf::actor>(self);
  auto& tier = s.ctx->ld->tier();
  for (const auto& id : tier.lru_order()) {
    auto it = s.checkpoint_of_content.find(id);
    if (it != s.checkpoint_of_content.end() && tier.state_of(id) == dram_state::ready)
      st.dram_models.push_back(it->second);
  }
  for (const auto& [id, dir] : s.checkpoint_of_content)
    st.local_models.push_back(dir);
  const auto& pool = s.ctx->ld->pool();
  const std::uint64_t chunk = s.ctx->options.loader.chunk_bytes;
  st.dram_bytes = pool.total_chunks() * chunk;
  st.dram_used_bytes = (pool.total_chunks() - pool.free_chunks()) * chunk;
  for (std::size_t i = 0; i < s.slots.size(); ++i) {
    slot_info si;
    si.index = static_cast<std::int32_t>(i);
    si.kind = "cpu";
    si.memory_bytes = s.slots[i].memory_bytes;
    si.used_bytes = s.slots[i].used_bytes;
    for (const auto& [addr, inst] : s.instances)
      if (inst.slot == i)
        si.models.push_back(inst.model);
    st.slots.push_back(std::move(si));
  }
  for (const auto& [addr, inst] : s.instances) {
    instance_info ii;
    ii.model = inst.model;
    ii.handle = caf::actor_cast<caf::actor>(addr);
    st.instances.push_back(std::move(ii));
  }
  st.ssd_bandwidth = s.ssd_bandwidth;
  st.dram_bandwidth = s.dram_bandwidth;
  st.loads_ssd = s.loads_ssd;
  st.loads_dram = s.loads_dram;
  st.starts_in_place = s.starts_in_place;
  const auto queue = s.ctx->ld->queued();
  st.queued_ssd_bytes = queue.ssd_bytes;
  st.queued_dram_bytes = queue.dram_bytes;
  return st;
}

void report(node_ptr self) {
  if (self->state.scheduler)
    self->send(self->state.scheduler, node_atom::value, make_status(self));
}

void release(node_ptr self, const caf::actor_addr& addr) {
  auto& s = self->state;
  auto it = s.instances.find(addr);
  if (it == s.instances.end())
    return;
  s.slots[it->second.slot].used_bytes -= it->second.bytes;
  s.instances.erase(it);
  report(self);
}

/// The slot with the most free memory that fits `bytes`, or an error that says how much is free.
expected<std::size_t> pick_slot(const node_state& s, std::uint64_t bytes, const std::string& model) {
  std::optional<std::size_t> best;
  std::uint64_t best_free = 0;
  for (std::size_t i = 0; i < s.slots.size(); ++i) {
    const auto free = s.slots[i].memory_bytes - s.slots[i].used_bytes;
    if (free >= bytes && (!best || free > best_free)) {
      best = i;
      best_free = free;
    }
  }
  if (!best) {
    std::uint64_t most = 0;
    for (const auto& sl : s.slots)
      most = std::max(most, sl.memory_bytes - sl.used_bytes);
    return make_error(errc::resource_exhausted,
                      "node " + s.ctx->options.name + ": an instance of " + model + " needs " +
                          std::to_string(bytes) + " bytes, the freest slot has " +
                          std::to_string(most));
  }
  return *best;
}

/// A one-shot worker on its own thread (the load blocks): reads `ckpt` (opened by the node, at
/// `dir`) into the DRAM tier (load_mode::tier_only: nothing on the device), where the model
/// stays, ready and unpinned. The model's tokenizer is parsed too (the node's copy, see
/// node_context::tokenizer_for), so that the first start after a prefetch does not spend tens
/// of milliseconds on it. Answers the load's seconds.
caf::behavior prefetch_worker(caf::event_based_actor* self, std::shared_ptr<node_context> ctx,
                             std::shared_ptr<const checkpoint> ckpt) {
  return {
      [=](prefetch_atom, const std::string& dir) -> caf::result<double> {
        self->quit(); // one job; the answer still goes out
        const auto t0 = std::chrono::steady_clock::now();
        auto run = [&]() -> status {
          THAW_ASSIGN(auto handle, ctx->ld->load(*ckpt, load_mode::tier_only));
          THAW_TRY(handle.wait());
          THAW_TRY(ctx->tokenizer_for(ckpt->content_id(), ckpt->dir()));
          return {};
        };
        if (auto s = run(); !s)
          return to_caf(with_context(std::move(s).err(), "prefetch of " + dir));
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      },
  };
}

/// (prefetch_atom, dir): see node.hpp.
caf::result<bool> prefetch(node_ptr self, const std::string& dir) {
  auto& st = self->state;
  const auto& node = st.ctx->options.name;
  auto ck = checkpoint::open(dir);
  if (!ck)
    return to_caf(with_context(std::move(ck).err(), "prefetch on node " + node));
  auto& tier = st.ctx->ld->tier();
  const auto id = ck->content_id();
  if (tier.state_of(id) == dram_state::ready) {
    st.checkpoint_of_content[id] = dir;
    return true;
  }
  // Refused up front, naming both sizes, when the tier could never hold it.
  if (auto fits = tier.check_fits(*ck); !fits)
    return to_caf(with_context(std::move(fits).err(),
                               "prefetch on node " + node + ": the DRAM tier is too small"));
  const auto bytes = ck->total_bytes();
  auto rp = self->make_response_promise<bool>();
  auto worker = self->system().spawn<caf::detached>(
      prefetch_worker, st.ctx, std::make_shared<const checkpoint>(std::move(*ck)));
  self->request(worker, caf::infinite, prefetch_atom::value, dir)
      .then(
          [=](double seconds) mutable {
            auto& st2 = self->state;
            st2.checkpoint_of_content[id] = dir;
            // A plain SSD read (or a share of one): its bandwidth is as good as a start's.
            if (seconds > 0)
              st2.ssd_bandwidth = static_cast<double>(bytes) / seconds;
            spdlog::info("node {}: prefetched {} ({} bytes) into DRAM in {:.3f} s", node, dir,
                         bytes, seconds);
            report(self);
            rp.deliver(true);
          },
          [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

caf::behavior node_fn(node_ptr self, std::shared_ptr<node_context> ctx, caf::actor scheduler) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  s.scheduler = std::move(scheduler);
  s.slots.assign(static_cast<std::size_t>(std::max(1, s.ctx->options.cpu_slots)),
                 slot_state{s.ctx->options.slot_memory_bytes, 0});
  self->set_down_handler([=](const caf::down_msg& dm) {
    if (self->state.instances.count(dm.source) != 0) {
      if (dm.reason && dm.reason != caf::exit_reason::user_shutdown)
        spdlog::warn("node: instance of {} exited: {}", self->state.instances[dm.source].model,
                     self->system().render(dm.reason));
      release(self, dm.source);
    }
  });
  self->set_exit_handler([=](caf::exit_msg& msg) {
    if (self->state.linked.erase(msg.source) != 0)
      return; // an instance of ours: its down message cleans up
    self->quit(msg.reason);
  });
  report(self);
  return {
      [=](start_atom, model_spec& spec) -> caf::result<instance_started> {
        auto& st = self->state;
        auto ck = checkpoint::open(spec.checkpoint);
        if (!ck)
          return to_caf(with_context(std::move(ck).err(), "model " + spec.name));
        const auto weight_bytes = ck->total_bytes();
        const auto bytes = instance_bytes(weight_bytes, ck->config(), spec.kv_blocks);
        auto slot = pick_slot(st, bytes, spec.name);
        if (!slot)
          return to_caf(slot.err());
        st.slots[*slot].used_bytes += bytes;
        st.checkpoint_of_content[ck->content_id()] = spec.checkpoint;
        auto inst = spawn_instance(self->system(), st.ctx, spec, std::move(*ck), *slot);
        // Linked, so that the instances go when the node goes; monitored, so that an
        // instance that goes alone frees its slot (the exit handler keeps the node alive).
        self->link_to(inst);
        st.linked.insert(inst.address());
        self->monitor(inst);
        st.instances[inst.address()] = placed_instance{spec.name, *slot, bytes};
        auto rp = self->make_response_promise<instance_started>();
        self->request(inst, caf::infinite, ready_atom::value)
            .then(
                [=](instance_started& started) mutable {
                  auto& st2 = self->state;
                  // Bandwidth of this load's transfer (not of the whole start: building the
                  // runner and the tokenizer is no tier's speed), for the scheduler's estimates.
                  if (started.mapped)
                    ++st2.starts_in_place;
                  // A mapping of a model already in DRAM moved nothing: no tier's bandwidth to
                  // learn. One read from the SSD in place did move the SSD's bytes.
                  const bool moved = !(started.mapped && started.source == "dram");
                  if (started.transfer_seconds > 0 && moved) {
                    const double bw = static_cast<double>(weight_bytes) / started.transfer_seconds;
                    if (started.source == "dram") {
                      st2.dram_bandwidth = bw;
                      ++st2.loads_dram;
                    } else {
                      st2.ssd_bandwidth = bw;
                      ++st2.loads_ssd;
                    }
                  }
                  report(self);
                  rp.deliver(std::move(started));
                },
                [=](caf::error& err) mutable {
                  release(self, inst.address());
                  rp.deliver(std::move(err));
                });
        return rp;
      },
      [=](stop_atom, const caf::actor& inst) {
        if (self->state.instances.count(inst.address()) != 0)
          self->send_exit(inst, caf::exit_reason::user_shutdown);
      },
      [=](status_atom) -> node_status { return make_status(self); },
      [=](prefetch_atom, const std::string& dir) { return prefetch(self, dir); },
  };
}

} // namespace

caf::actor spawn_node(caf::actor_system& sys, std::shared_ptr<node_context> ctx,
                      caf::actor scheduler) {
  return sys.spawn(node_fn, std::move(ctx), std::move(scheduler));
}

expected<std::shared_ptr<node_context>> node_context::create(node_options options,
                                                            std::shared_ptr<metrics::registry> m) {
  if (options.cpu_slots < 1)
    return make_error(errc::invalid_argument, "node.cpu_slots: must be at least 1");
  if (options.threads < 1)
    return make_error(errc::invalid_argument, "node.threads: must be at least 1");
  THAW_TRY(options.loader.validate());
  auto ctx = std::make_shared<node_context>();
  ctx->options = std::move(options);
  ctx->metrics = std::move(m);
  ctx->dev = std::make_unique<host_device>();
  for (std::int32_t i = 0; i < ctx->options.cpu_slots; ++i)
    ctx->slot_pools.push_back(std::make_shared<host::thread_pool>(ctx->options.threads));
  THAW_ASSIGN(ctx->ld, loader::create(ctx->options.loader, *ctx->dev));
  return ctx;
}

expected<std::shared_ptr<const tokenizer>>
node_context::tokenizer_for(const std::string& content_id, const std::filesystem::path& dir) {
  {
    std::lock_guard lock(tokenizers_mutex_);
    if (auto it = tokenizers_.find(content_id); it != tokenizers_.end())
      return it->second;
  }
  // Loaded outside the lock: two first instances of a model may both parse it; one copy stays.
  THAW_ASSIGN(auto tok, tokenizer::load(dir / "tokenizer.json"));
  auto shared = std::make_shared<const tokenizer>(std::move(tok));
  std::lock_guard lock(tokenizers_mutex_);
  return tokenizers_.emplace(content_id, std::move(shared)).first->second;
}

} // namespace thaw
