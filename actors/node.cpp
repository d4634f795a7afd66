#include "actors/node.hpp"

#include "actors/dram_tier.hpp"
#include "actors/instance.hpp"
#include "actors/slot.hpp"
#include "actors/ssd_tier.hpp"
#include "gpu/host/host_device.hpp"
#if THAW_HAVE_CUDA
#include "gpu/cuda/cuda_device.hpp"
#endif

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <deque>
#include <functional>
#include <optional>

namespace thaw {
namespace {

struct node_state {
  std::shared_ptr<node_context> ctx;
  caf::actor scheduler;
  ssd_tier_actor ssd;
  dram_tier_actor dram;
  std::vector<slot_actor> slots;
  /// Starts waiting for a slot: one is placed at a time, from slot reports asked for after the
  /// previous one's start was sent (and so reserved), so two never count the same free bytes.
  std::deque<std::function<void()>> placements;
  bool placing = false;
  double ssd_bandwidth = 0;
  double dram_bandwidth = 0;
  double remote_bandwidth = 0;
  std::uint64_t loads_ssd = 0;
  std::uint64_t loads_dram = 0;
  std::uint64_t loads_remote = 0;
  std::uint64_t starts_in_place = 0; ///< instances run on the DRAM tier's bytes (map, in place)

  static inline const char* name = "node";
};

using node_ptr = node_actor::stateful_pointer<node_state>;

/// Asks every slot for its report and calls `f` with them (in slot order) once all answered; a
/// slot that fails to answer leaves an empty report.
template <class F>
void with_slots(node_ptr self, F f) {
  const auto n = self->state.slots.size();
  auto reports = std::make_shared<std::vector<slot_report>>(n);
  auto left = std::make_shared<std::size_t>(n);
  auto one_done = [=]() mutable {
    if (--*left == 0)
      f(std::move(*reports));
  };
  for (std::size_t i = 0; i < n; ++i)
    self->request(self->state.slots[i], caf::infinite, status_atom::value)
        .then(
            [=](slot_report& r) mutable {
              (*reports)[i] = std::move(r);
              one_done();
            },
            [=](caf::error&) mutable { one_done(); });
}

/// The node's status from its parts' reports.
node_status compose(node_ptr self, std::vector<slot_report> slots, const ssd_tier_report& disk,
                    const dram_tier_report& mem) {
  const auto& s = self->state;
  node_status st;
  st.name = s.ctx->options.name;
  st.handle = caf::actor_cast<caf::actor>(self);
  for (const auto& id : mem.ready) {
    if (auto it = mem.pulled.find(id); it != mem.pulled.end())
      st.dram_models.push_back(it->second);
    else if (auto d = disk.dirs.find(id); d != disk.dirs.end())
      st.dram_models.push_back(d->second);
  }
  for (const auto& [id, dir] : disk.dirs)
    st.local_models.push_back(dir);
  st.dram_bytes = mem.bytes;
  st.dram_used_bytes = mem.used_bytes;
  for (auto& r : slots) {
    st.slots.push_back(std::move(r.info));
    for (auto& inst : r.instances)
      st.instances.push_back(std::move(inst));
  }
  st.ssd_bandwidth = s.ssd_bandwidth;
  st.dram_bandwidth = s.dram_bandwidth;
  st.remote_bandwidth = s.remote_bandwidth;
  st.loads_ssd = s.loads_ssd;
  st.loads_dram = s.loads_dram;
  st.loads_remote = s.loads_remote;
  st.starts_in_place = s.starts_in_place;
  const auto queue = s.ctx->ld->queued();
  st.queued_ssd_bytes = queue.ssd_bytes;
  st.queued_dram_bytes = queue.dram_bytes;
  return st;
}

/// Gathers the node's status from its slots and tiers and calls `f` with it (a part that
/// fails to answer is left out). Gathers started in turn end in turn (each part answers in the
/// order it was asked).
template <class F>
void with_status(node_ptr self, F f) {
  with_slots(self, [=](std::vector<slot_report> slots) mutable {
    auto with_disk = [=](ssd_tier_report disk) mutable {
      self->request(self->state.dram, caf::infinite, status_atom::value)
          .then([=](dram_tier_report& mem) mutable { f(compose(self, slots, disk, mem)); },
                [=](caf::error&) mutable { f(compose(self, slots, disk, {})); });
    };
    self->request(self->state.ssd, caf::infinite, status_atom::value)
        .then([=](ssd_tier_report& disk) mutable { with_disk(std::move(disk)); },
              [=](caf::error&) mutable { with_disk({}); });
  });
}

/// Sends the scheduler the node's status, then calls `then` (if any): an answer sent from
/// there reaches the scheduler after the status it reflects (one mailbox, in order), so that
/// whoever it goes on to sees the node as it is.
void report(node_ptr self, std::function<void()> then = {}) {
  if (!self->state.scheduler) {
    if (then)
      then();
    return;
  }
  with_status(self, [=](node_status st) {
    // anon_send: a typed actor may send() only to typed ones; the scheduler needs no sender.
    caf::anon_send(self->state.scheduler, node_atom::value, std::move(st));
    if (then)
      then();
  });
}

/// Learns the tiers' bandwidths from a start (see instance_started), for the scheduler's
/// estimates. `pull_seconds` > 0: the weights were pulled from a peer first, which took that
/// long, their bytes `fetch_seconds` of it.
void learn(node_ptr self, instance_started& started, std::uint64_t weight_bytes,
           double pull_seconds, double fetch_seconds) {
  auto& s = self->state;
  if (started.mapped)
    ++s.starts_in_place;
  if (pull_seconds > 0) {
    // The bytes came from a peer's DRAM: that is the start's tier and most of its time.
    started.source = "remote";
    started.load_seconds += pull_seconds;
    started.transfer_seconds += pull_seconds;
    ++s.loads_remote;
    if (fetch_seconds > 0) // the link's speed, without the pull's fixed costs
      s.remote_bandwidth = static_cast<double>(weight_bytes) / fetch_seconds;
  } else if (started.transfer_seconds > 0 && !(started.mapped && started.source == "dram")) {
    // Bandwidth of this load's transfer (not of the whole start: building the runner and the
    // tokenizer is no tier's speed). A mapping of a model already in DRAM moved nothing: no
    // tier's bandwidth to learn. One read from the SSD in place did move the SSD's bytes.
    const double bw = static_cast<double>(weight_bytes) / started.transfer_seconds;
    if (started.source == "dram") {
      s.dram_bandwidth = bw;
      ++s.loads_dram;
    } else {
      s.ssd_bandwidth = bw;
      ++s.loads_ssd;
    }
  }
}

void next_placement(node_ptr self) {
  auto& s = self->state;
  if (s.placing || s.placements.empty())
    return;
  s.placing = true;
  auto run = std::move(s.placements.front());
  s.placements.pop_front();
  run();
}

/// Starts an instance of `spec` from `load` on a GPU slot that fits it, else the CPU slot with
/// the most free memory that does, and delivers its instance_started (or the error) through
/// `rp`.
void place(node_ptr self, model_spec spec, slot_load load,
           caf::typed_response_promise<instance_started> rp, double pull_seconds = 0,
           double fetch_seconds = 0) {
  self->state.placements.push_back([=]() mutable {
    const auto weight_bytes = load.ckpt->total_bytes();
    const auto bytes = instance_bytes(weight_bytes, load.ckpt->config(), spec.kv_blocks);
    with_slots(self, [=](std::vector<slot_report> reports) mutable {
      auto& s = self->state;
      // A GPU slot where one fits (it decodes many times faster), else a CPU slot; among
      // those, the one with the most free memory.
      std::optional<std::size_t> best;
      std::uint64_t best_free = 0;
      bool best_gpu = false;
      for (std::size_t i = 0; i < reports.size(); ++i) {
        const auto& info = reports[i].info;
        const auto free = info.memory_bytes - info.used_bytes;
        const bool gpu = info.kind == "cuda";
        if (info.memory_bytes > 0 && free >= bytes &&
            (!best || (gpu && !best_gpu) || (gpu == best_gpu && free > best_free))) {
          best = i;
          best_free = free;
          best_gpu = gpu;
        }
      }
      if (!best) {
        std::uint64_t most = 0;
        for (const auto& r : reports)
          most = std::max(most, r.info.memory_bytes - r.info.used_bytes);
        rp.deliver(to_caf(make_error(errc::resource_exhausted,
                                     "node " + s.ctx->options.name + ": an instance of " +
                                         spec.name + " needs " + std::to_string(bytes) +
                                         " bytes, the freest slot has " + std::to_string(most))));
      } else {
        self->request(s.slots[*best], caf::infinite, start_atom::value, spec, load)
            .then(
                [=](instance_started& started) mutable {
                  learn(self, started, weight_bytes, pull_seconds, fetch_seconds);
                  report(self, [=]() mutable { rp.deliver(started); });
                },
                [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
      }
      // The start is in the slot's mailbox: the next placement's reports count it.
      self->state.placing = false;
      next_placement(self);
    });
  });
  next_placement(self);
}

/// (start_atom, spec, peers): see node.hpp.
caf::result<instance_started> start(node_ptr self, model_spec spec,
                                    std::vector<caf::actor> peers) {
  auto rp = self->make_response_promise<instance_started>();
  std::erase(peers, caf::actor_cast<caf::actor>(self));
  self->request(self->state.ssd, caf::infinite, open_atom::value, spec.checkpoint,
                spec.content_id)
      .then([=](disk_checkpoint& found) mutable { place(self, spec, {found.ckpt, nullptr}, rp); },
            [=](caf::error& err) mutable {
              auto why = from_caf(err);
              if (why.code != errc::not_found) {
                rp.deliver(to_caf(with_context(std::move(why), "model " + spec.name)));
                return;
              }
              // Not on this node's disk: from the DRAM tier, which pulls it from a peer.
              self->request(self->state.dram, caf::infinite, fetch_atom::value, spec, peers,
                            why.message)
                  .then(
                      [=](dram_model& m) mutable {
                        place(self, spec, {m.ckpt, m.hold}, rp, m.pull_seconds, m.fetch_seconds);
                      },
                      [=](caf::error& e) mutable { rp.deliver(std::move(e)); });
            });
  return rp;
}

/// (prefetch_atom, dir): see node.hpp.
caf::result<bool> prefetch(node_ptr self, const std::string& dir) {
  auto rp = self->make_response_promise<bool>();
  self->request(self->state.dram, caf::infinite, prefetch_atom::value, dir)
      .then(
          [=](prefetched& done) mutable {
            // A plain SSD read (or a share of one): its bandwidth is as good as a start's.
            if (done.seconds > 0) {
              self->state.ssd_bandwidth = static_cast<double>(done.bytes) / done.seconds;
              report(self, [=]() mutable { rp.deliver(true); });
            } else {
              rp.deliver(true);
            }
          },
          [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

node_actor::behavior_type node_fn(node_ptr self, std::shared_ptr<node_context> ctx,
                                  caf::actor scheduler) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  s.scheduler = std::move(scheduler);
  // The node's parts, linked: one that fails takes the node down (the head then notices), and
  // they go when it goes.
  auto& sys = self->system();
  s.ssd = spawn_ssd_tier(sys, s.ctx);
  self->link_to(s.ssd);
  s.dram = spawn_dram_tier(sys, s.ctx, s.ssd);
  self->link_to(s.dram);
  for (std::int32_t i = 0; i < std::max(1, s.ctx->options.cpu_slots); ++i) {
    s.slots.push_back(spawn_slot(sys, s.ctx, i, s.ctx->options.slot_memory_bytes,
                                 caf::actor_cast<caf::actor>(self)));
    self->link_to(s.slots.back());
  }
  for (auto& gpu : s.ctx->gpus) { // GPU slots follow the CPU slots
    const auto index = static_cast<std::int32_t>(s.slots.size());
    s.slots.push_back(spawn_slot(sys, s.ctx, index, gpu->memory_bytes(),
                                 caf::actor_cast<caf::actor>(self), gpu.get()));
    self->link_to(s.slots.back());
  }
  report(self);
  return {
      [=](start_atom, model_spec& spec,
          std::vector<caf::actor>& peers) -> caf::result<instance_started> {
        return start(self, std::move(spec), std::move(peers));
      },
      [=](stop_atom, const caf::actor& inst) {
        for (const auto& slot : self->state.slots)
          self->send(slot, stop_atom::value, inst); // the one that runs it stops it
      },
      [=](status_atom) {
        auto rp = self->make_response_promise<node_status>();
        with_status(self, [=](node_status st) mutable { rp.deliver(std::move(st)); });
        return rp;
      },
      [=](prefetch_atom, const std::string& dir) { return prefetch(self, dir); },
      [=](pull_atom, const std::string& dir, std::uint64_t puller_chunk) {
        // The DRAM tier lends; the asker stays the sender (it is the puller it monitors).
        return self->delegate(self->state.dram, pull_atom::value, dir, puller_chunk);
      },
      [=](release_atom, const std::string& key) {
        self->send(self->state.dram, release_atom::value, key);
      },
      [=](changed_atom) { report(self); },
  };
}

} // namespace

caf::actor spawn_node(caf::actor_system& sys, std::shared_ptr<node_context> ctx,
                      caf::actor scheduler) {
  return caf::actor_cast<caf::actor>(sys.spawn(node_fn, std::move(ctx), std::move(scheduler)));
}

expected<std::shared_ptr<node_context>> node_context::create(node_options options,
                                                            std::shared_ptr<metrics::registry> m,
                                                            bool with_data_plane) {
  if (options.cpu_slots < 1)
    return make_error(errc::invalid_argument, "node.cpu_slots: must be at least 1");
  if (options.threads < 1)
    return make_error(errc::invalid_argument, "node.threads: must be at least 1");
  if (options.gpus < 0)
    return make_error(errc::invalid_argument, "node.gpus: must be 0 or more");
  THAW_TRY(options.loader.validate());
  auto ctx = std::make_shared<node_context>();
  ctx->options = std::move(options);
  ctx->metrics = std::move(m);
  ctx->dev = std::make_unique<host_device>();
  chunk_pool::memory_source pool_memory;
  if (with_data_plane && ctx->options.data_plane) {
    transport::data_plane_options dp;
    if (ctx->options.data_address.empty())
      ctx->options.data_address = "127.0.0.1";
    dp.address = ctx->options.data_address;
    dp.port = ctx->options.data_port;
    auto plane = transport::data_plane::start(dp);
    if (!plane)
      return with_context(std::move(plane).err(), "node.data_plane on " + dp.address + ":" +
                                                      std::to_string(dp.port));
    ctx->plane = std::move(*plane);
    pool_memory = [plane = ctx->plane.get()](std::uint64_t bytes) {
      return plane->allocate_memory(bytes);
    };
  }
  THAW_ASSIGN(ctx->ld, loader::create(ctx->options.loader, *ctx->dev, pool_memory));
  for (std::int32_t i = 0; i < ctx->options.gpus; ++i) {
#if THAW_HAVE_CUDA
    auto gpu = cuda::make_cuda_device({.ordinal = i});
    if (!gpu)
      return with_context(std::move(gpu).err(), "node.gpus = " + std::to_string(ctx->options.gpus));
    if (auto added = ctx->ld->add_device(**gpu); !added)
      return with_context(std::move(added).err(), "node.gpus: " + (*gpu)->name());
    ctx->gpus.push_back(std::move(*gpu));
#else
    return make_error(errc::unsupported,
                      "node.gpus = " + std::to_string(ctx->options.gpus) +
                          ": this thaw was built without the CUDA backend");
#endif
  }
  return ctx;
}

std::shared_ptr<const tokenizer> node_context::add_tokenizer(const std::string& content_id,
                                                             tokenizer tok) {
  auto shared = std::make_shared<const tokenizer>(std::move(tok));
  std::lock_guard lock(tokenizers_mutex_);
  return tokenizers_.emplace(content_id, std::move(shared)).first->second;
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
  return add_tokenizer(content_id, std::move(tok));
}

} // namespace thaw
