#include "actors/node.hpp"

#include "actors/instance.hpp"
#include "gpu/host/host_device.hpp"
#include "runtime/common/posix.hpp"
#include "runtime/loader/remote_tier.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <chrono>
#include <spdlog/spdlog.h>
#include <thread>
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

/// A model this node pulled from a peer: known by its manifest alone, no data files here.
struct remote_model {
  std::shared_ptr<const checkpoint> ckpt;
  std::string tokenizer_json;
  std::string tokenizer_config;
};

/// A pull this node serves: the model pinned in the DRAM tier and published on the data plane
/// until the puller releases it or goes away.
struct served_pull {
  dram_tier::lease lease;
  caf::actor_addr puller;
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
  double remote_bandwidth = 0;
  std::uint64_t loads_ssd = 0;
  std::uint64_t loads_dram = 0;
  std::uint64_t loads_remote = 0;
  std::uint64_t starts_in_place = 0; ///< instances run on the DRAM tier's bytes (map, in place)
  std::unordered_map<std::string, remote_model> remote_models; ///< by checkpoint (spec string)
  std::unordered_map<std::string, served_pull> serving;        ///< by data plane key
  std::uint64_t next_pull = 0;

  static inline const char* name = "node";
};

using node_ptr = node_actor::stateful_pointer<node_state>;

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
    if (s.remote_models.count(dir) == 0) // pulled models are in DRAM only, not on this disk
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

void report(node_ptr self) {
  if (self->state.scheduler)
    // anon_send: a typed actor may send() only to typed ones; the scheduler needs no sender.
    caf::anon_send(self->state.scheduler, node_atom::value, make_status(self));
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

/// Spawns an instance of `spec` from `ckpt` on the freest slot that fits and delivers its
/// instance_started (or the error) through `rp`. `hold` (may be empty) keeps the model pinned
/// in the DRAM tier until the instance is loaded: a pulled model has no data files to fall back
/// on. `pull_seconds` > 0: the weights were pulled from a peer first, which took that long,
/// their bytes `fetch_seconds` of it.
void start_instance(node_ptr self, const model_spec& spec, std::shared_ptr<const checkpoint> ckpt,
                    std::shared_ptr<dram_tier::lease> hold,
                    caf::typed_response_promise<instance_started> rp, double pull_seconds = 0,
                    double fetch_seconds = 0) {
  auto& st = self->state;
  const auto weight_bytes = ckpt->total_bytes();
  const auto bytes = instance_bytes(weight_bytes, ckpt->config(), spec.kv_blocks);
  auto slot = pick_slot(st, bytes, spec.name);
  if (!slot) {
    rp.deliver(to_caf(slot.err()));
    return;
  }
  st.slots[*slot].used_bytes += bytes;
  st.checkpoint_of_content[ckpt->content_id()] = spec.checkpoint;
  auto inst = spawn_instance(self->system(), st.ctx, spec, *ckpt, *slot);
  // Linked, so that the instances go when the node goes; monitored, so that an
  // instance that goes alone frees its slot (the exit handler keeps the node alive).
  self->link_to(inst);
  st.linked.insert(inst.address());
  self->monitor(inst);
  st.instances[inst.address()] = placed_instance{spec.name, *slot, bytes};
  self->request(inst, caf::infinite, ready_atom::value)
      .then(
          [=](instance_started& started) mutable {
            hold.reset(); // the instance holds the model now
            auto& st2 = self->state;
            if (started.mapped)
              ++st2.starts_in_place;
            if (pull_seconds > 0) {
              // The bytes came from a peer's DRAM: that is the start's tier and most of its time.
              started.source = "remote";
              started.load_seconds += pull_seconds;
              started.transfer_seconds += pull_seconds;
              ++st2.loads_remote;
              if (fetch_seconds > 0) // the link's speed, without the pull's fixed costs
                st2.remote_bandwidth = static_cast<double>(weight_bytes) / fetch_seconds;
            } else if (started.transfer_seconds > 0 &&
                       !(started.mapped && started.source == "dram")) {
              // Bandwidth of this load's transfer (not of the whole start: building the runner
              // and the tokenizer is no tier's speed), for the scheduler's estimates. A mapping
              // of a model already in DRAM moved nothing: no tier's bandwidth to learn. One
              // read from the SSD in place did move the SSD's bytes.
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
            hold.reset();
            release(self, inst.address());
            rp.deliver(std::move(err));
          });
}

/// What a pull worker leaves for the node: the model, pinned in the tier (its tokenizer went
/// into the node's cache).
struct pulled_model {
  std::shared_ptr<const checkpoint> ckpt;
  std::shared_ptr<dram_tier::lease> lease;
  double fetch_seconds = 0; ///< the bytes' move alone (loader::pull)
};

/// A one-shot worker on its own thread (the pull blocks): reads the offered model from the
/// peer into this node's DRAM tier over UCX and parses its tokenizer into the node's cache.
/// Answers the pull's seconds; the result is left in `out`.
caf::behavior pull_worker(caf::event_based_actor* self, std::shared_ptr<node_context> ctx,
                          std::shared_ptr<pulled_model> out) {
  return {
      [=](pull_atom, const pull_offer& offer, const std::string& dir,
          const std::string& content_id) -> caf::result<double> {
        self->quit(); // one job; the answer still goes out
        const auto t0 = std::chrono::steady_clock::now();
        auto run = [&]() -> status {
          THAW_ASSIGN(auto ck, checkpoint::from_manifest(dir, offer.manifest));
          if (!content_id.empty() && ck.content_id() != content_id)
            return make_error(errc::not_found, "node " + offer.node + "'s " + dir +
                                                   " is not the deployed checkpoint (content " +
                                                   ck.content_id() + ", deployed " +
                                                   content_id + ")");
          THAW_ASSIGN(auto tok, tokenizer::parse(offer.tokenizer_json, offer.tokenizer_config,
                                                 "tokenizer.json from node " + offer.node));
          data_plane_source source{*ctx->plane, remote_location{offer.node, offer.host,
                                                                offer.port, offer.key,
                                                                offer.chunk_bytes}};
          const auto f0 = std::chrono::steady_clock::now();
          THAW_ASSIGN(auto lease, ctx->ld->pull(ck, source));
          out->fetch_seconds =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - f0).count();
          (void)ctx->add_tokenizer(ck.content_id(), std::move(tok));
          out->ckpt = std::make_shared<const checkpoint>(std::move(ck));
          out->lease = std::make_shared<dram_tier::lease>(std::move(lease));
          return {};
        };
        if (auto s = run(); !s)
          return to_caf(std::move(s).err());
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      },
  };
}

/// Asks peers[next], then the ones after it, to lend `spec`'s checkpoint; pulls it from the
/// first that offers it and starts the instance from the pulled bytes.
void pull_then_start(node_ptr self, model_spec spec, std::vector<caf::actor> peers,
                     std::size_t next, caf::typed_response_promise<instance_started> rp,
                     std::string failures) {
  auto& st = self->state;
  const auto& node = st.ctx->options.name;
  if (next == peers.size()) {
    rp.deliver(to_caf(make_error(errc::not_found, "model " + spec.name + ": " + spec.checkpoint +
                                                      " is not on node " + node +
                                                      "'s disk and no peer lent it (" +
                                                      failures + ")")));
    return;
  }
  auto peer = peers[next];
  auto failed = [=](const std::string& why) {
    pull_then_start(self, spec, peers, next + 1, rp,
                    failures + (failures.empty() ? "" : "; ") + why);
  };
  self->request(peer, caf::infinite, pull_atom::value, spec.checkpoint,
                st.ctx->ld->pool().chunk_bytes())
      .then(
          [=](pull_offer& offer) {
            auto out = std::make_shared<pulled_model>();
            auto worker = self->system().spawn<caf::detached>(pull_worker, self->state.ctx, out);
            self->request(worker, caf::infinite, pull_atom::value, offer, spec.checkpoint,
                          spec.content_id)
                .then(
                    [=](double seconds) {
                      caf::anon_send(peer, release_atom::value, offer.key);
                      auto& st2 = self->state;
                      st2.remote_models[spec.checkpoint] =
                          remote_model{out->ckpt, offer.tokenizer_json, offer.tokenizer_config};
                      const auto bytes = static_cast<double>(out->ckpt->total_bytes());
                      spdlog::info("node {}: pulled {} ({} bytes) from node {} over UCX in "
                                   "{:.3f} s, the bytes in {:.3f} s ({:.2f} GB/s)",
                                   st2.ctx->options.name, spec.checkpoint,
                                   out->ckpt->total_bytes(), offer.node, seconds,
                                   out->fetch_seconds, bytes / out->fetch_seconds / 1e9);
                      start_instance(self, spec, out->ckpt, out->lease, rp, seconds,
                                     out->fetch_seconds);
                    },
                    [=](caf::error& err) {
                      caf::anon_send(peer, release_atom::value, offer.key);
                      failed(from_caf(err).message);
                    });
          },
          [=](caf::error& err) { failed(from_caf(err).message); });
}

/// (start_atom, spec, peers): see node.hpp.
caf::result<instance_started> start(node_ptr self, model_spec spec,
                                    std::vector<caf::actor> peers) {
  auto& st = self->state;
  auto rp = self->make_response_promise<instance_started>();
  auto deployed = [&](const checkpoint& c) {
    return spec.content_id.empty() || c.content_id() == spec.content_id;
  };
  auto ck = checkpoint::open(spec.checkpoint);
  if (ck && !deployed(*ck)) {
    // Another model at the same path on this disk: not this one.
    spdlog::warn("node {}: {} here is not the checkpoint deployed as {} (content {}, deployed "
                 "{}); pulling the deployed one",
                 st.ctx->options.name, spec.checkpoint, spec.name, ck->content_id(),
                 spec.content_id);
    ck = make_error(errc::not_found, spec.checkpoint + " on node " + st.ctx->options.name +
                                         " has other content than the deployed checkpoint");
  }
  if (ck) {
    start_instance(self, spec, std::make_shared<const checkpoint>(std::move(*ck)), nullptr, rp);
    return rp;
  }
  // Errors go through the promise: once made, it holds the request's sender.
  if (ck.err().code != errc::not_found) {
    rp.deliver(to_caf(with_context(std::move(ck).err(), "model " + spec.name)));
    return rp;
  }
  // Not on this node's disk. Pulled before and still in the DRAM tier: start from there.
  if (auto it = st.remote_models.find(spec.checkpoint);
      it != st.remote_models.end() && deployed(*it->second.ckpt)) {
    if (auto pin = st.ctx->ld->tier().try_pin_ready(*it->second.ckpt, 0)) {
      start_instance(self, spec, it->second.ckpt,
                     std::make_shared<dram_tier::lease>(std::move(*pin)), rp);
      return rp;
    }
  }
  std::erase(peers, caf::actor_cast<caf::actor>(self));
  if (!st.ctx->plane || peers.empty()) {
    rp.deliver(to_caf(with_context(std::move(ck).err(),
                                   "model " + spec.name + " on node " + st.ctx->options.name +
                                       (st.ctx->plane ? " (no peer holds it)"
                                                      : " (no data plane to pull it with)"))));
    return rp;
  }
  pull_then_start(self, std::move(spec), std::move(peers), 0, rp, {});
  return rp;
}

/// Ends a pull this node serves: withdraws the key and unpins the model once no read of it is
/// in flight. That wait runs on a thread of its own (it is short after a release, which comes
/// after the puller's reads; a puller that hangs mid-read holds it until the data plane gives
/// up on it), so the node never stalls on it.
void end_serving(node_ptr self, const std::string& key) {
  auto& st = self->state;
  auto it = st.serving.find(key);
  if (it == st.serving.end())
    return;
  std::thread{[ctx = st.ctx, key, pin = std::move(it->second.lease)]() mutable {
    ctx->plane->unpublish(key);
    pin.reset(); // before ctx, which may be the last owner of the tier
  }}.detach();
  st.serving.erase(it);
}

/// Pins `ckpt`, ready in the tier, and publishes its chunks for `puller`, cut into the pieces
/// that its pool chunks of `puller_chunk` bytes take (pull_pieces).
expected<pull_offer> offer_pull(node_ptr self, const checkpoint& ckpt, std::string tokenizer_json,
                                std::string tokenizer_config, const caf::actor_addr& puller,
                                std::uint64_t puller_chunk) {
  auto& st = self->state;
  const auto& node = st.ctx->options.name;
  auto pin = st.ctx->ld->tier().try_pin_ready(ckpt, 0);
  if (!pin)
    return make_error(errc::not_found, "node " + node + " no longer holds " +
                                           ckpt.dir().string() + " in its DRAM tier");
  auto key = ckpt.content_id() + "#" + std::to_string(++st.next_pull);
  THAW_TRY(publish_for_pull(*st.ctx->plane, key, pin->model(), st.ctx->ld->pool(), puller_chunk));
  st.serving.emplace(key, served_pull{std::move(*pin), puller});
  self->monitor(caf::actor_cast<caf::actor>(puller));
  pull_offer offer;
  offer.node = node;
  offer.host = st.ctx->options.data_address;
  offer.port = st.ctx->plane->port();
  offer.key = std::move(key);
  offer.chunk_bytes = st.ctx->ld->pool().chunk_bytes();
  offer.manifest = ckpt.manifest_bytes();
  offer.tokenizer_json = std::move(tokenizer_json);
  offer.tokenizer_config = std::move(tokenizer_config);
  return offer;
}

/// (pull_atom, checkpoint, puller_chunk): see node.hpp.
caf::result<pull_offer> serve_pull(node_ptr self, const std::string& dir,
                                   std::uint64_t puller_chunk) {
  auto& st = self->state;
  const auto& node = st.ctx->options.name;
  if (!st.ctx->plane)
    return to_caf(make_error(errc::unsupported, "node " + node + " has no data plane to lend " +
                                                    dir + " through (node.data_plane)"));
  const auto puller = caf::actor_cast<caf::actor_addr>(self->current_sender());
  if (auto it = st.remote_models.find(dir); it != st.remote_models.end()) {
    // Pulled itself: it lends what its DRAM tier holds, and has no disk copy to read.
    const auto& m = it->second;
    auto offer = offer_pull(self, *m.ckpt, m.tokenizer_json, m.tokenizer_config, puller,
                            puller_chunk);
    if (!offer)
      return to_caf(offer.err());
    return std::move(*offer);
  }
  auto opened = checkpoint::open(dir);
  if (!opened)
    return to_caf(with_context(std::move(opened).err(), "node " + node + " cannot lend " + dir));
  auto ck = std::make_shared<const checkpoint>(std::move(*opened));
  auto tok = read_text_file(ck->dir() / "tokenizer.json");
  if (!tok)
    return to_caf(with_context(std::move(tok).err(), "node " + node + " cannot lend " + dir));
  std::string tok_config;
  if (auto c = read_text_file(ck->dir() / "tokenizer_config.json"))
    tok_config = std::move(*c);
  if (st.ctx->ld->tier().state_of(ck->content_id()) == dram_state::ready) {
    auto offer = offer_pull(self, *ck, std::move(*tok), std::move(tok_config), puller,
                            puller_chunk);
    if (!offer)
      return to_caf(offer.err());
    return std::move(*offer);
  }
  // On this node's SSD only: read it into the DRAM tier first (a prefetch), then lend it.
  auto rp = self->make_response_promise<pull_offer>();
  self->request(caf::actor_cast<caf::actor>(self), caf::infinite, prefetch_atom::value, dir)
      .then(
          [=](bool) mutable {
            auto offer = offer_pull(self, *ck, *tok, tok_config, puller, puller_chunk);
            if (offer)
              rp.deliver(std::move(*offer));
            else
              rp.deliver(to_caf(offer.err()));
          },
          [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

node_actor::behavior_type node_fn(node_ptr self, std::shared_ptr<node_context> ctx,
                                  caf::actor scheduler) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  s.scheduler = std::move(scheduler);
  s.slots.assign(static_cast<std::size_t>(std::max(1, s.ctx->options.cpu_slots)),
                 slot_state{s.ctx->options.slot_memory_bytes, 0});
  self->set_down_handler([=](const caf::down_msg& dm) {
    std::vector<std::string> orphaned; // pulls served to a puller that is gone
    for (const auto& [key, pull] : self->state.serving)
      if (pull.puller == dm.source)
        orphaned.push_back(key);
    for (const auto& key : orphaned)
      end_serving(self, key);
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
      [=](start_atom, model_spec& spec,
          std::vector<caf::actor>& peers) -> caf::result<instance_started> {
        return start(self, std::move(spec), std::move(peers));
      },
      [=](stop_atom, const caf::actor& inst) {
        if (self->state.instances.count(inst.address()) != 0)
          self->send_exit(inst, caf::exit_reason::user_shutdown);
      },
      [=](status_atom) -> node_status { return make_status(self); },
      [=](prefetch_atom, const std::string& dir) { return prefetch(self, dir); },
      [=](pull_atom, const std::string& dir, std::uint64_t puller_chunk) {
        return serve_pull(self, dir, puller_chunk);
      },
      [=](release_atom, const std::string& key) { end_serving(self, key); },
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
  THAW_TRY(options.loader.validate());
  auto ctx = std::make_shared<node_context>();
  ctx->options = std::move(options);
  ctx->metrics = std::move(m);
  ctx->dev = std::make_unique<host_device>();
  for (std::int32_t i = 0; i < ctx->options.cpu_slots; ++i)
    ctx->slot_pools.push_back(std::make_shared<host::thread_pool>(ctx->options.threads));
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
