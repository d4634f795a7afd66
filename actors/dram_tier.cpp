#include "actors/dram_tier.hpp"

#include "runtime/loader/remote_tier.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <chrono>
#include <functional>
#include <spdlog/spdlog.h>
#include <thread>
#include <unordered_map>

namespace thaw {
namespace {

/// A model this node pulled from a peer: known by its manifest alone, no data files here.
struct remote_model {
  std::shared_ptr<const checkpoint> ckpt;
  std::string tokenizer_json;
  std::string tokenizer_config;
};

/// A pull this tier serves: the model pinned and published on the data plane until the
/// puller releases it or goes away.
struct served_pull {
  dram_tier::lease lease;
  caf::actor_addr puller;
};

struct dram_tier_state {
  std::shared_ptr<node_context> ctx;
  ssd_tier_actor ssd;
  std::unordered_map<std::string, remote_model> pulled; ///< by checkpoint (spec string)
  std::unordered_map<std::string, served_pull> serving; ///< by data plane key
  std::uint64_t next_pull = 0;

  static inline const char* name = "dram_tier";
};

using dram_tier_ptr = dram_tier_actor::stateful_pointer<dram_tier_state>;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// A one-shot worker's interface: one job, answered with its seconds.
template <class... Job>
using worker_actor = caf::typed_actor<typename caf::replies_to<Job...>::template with<double>>;

using prefetch_worker_actor = worker_actor<prefetch_atom>;

/// A one-shot worker on its own thread (the load blocks): reads `ckpt` into the DRAM tier
/// (load_mode::tier_only: nothing on the device), where the model stays, ready and unpinned.
/// The model's tokenizer is parsed too (the node's copy, see node_context::tokenizer_for), so
/// that the first start after a prefetch does not spend tens of milliseconds on it. Answers
/// the load's seconds.
prefetch_worker_actor::behavior_type prefetch_worker(prefetch_worker_actor::pointer self,
                                                     std::shared_ptr<node_context> ctx,
                                                     std::shared_ptr<const checkpoint> ckpt) {
  return {
      [=](prefetch_atom) -> caf::result<double> {
        self->quit(); // one job; the answer still goes out
        const auto t0 = std::chrono::steady_clock::now();
        auto run = [&]() -> status {
          THAW_ASSIGN(auto handle, ctx->ld->load(*ckpt, load_mode::tier_only));
          THAW_TRY(handle.wait());
          THAW_TRY(ctx->tokenizer_for(ckpt->content_id(), ckpt->dir()));
          return {};
        };
        if (auto s = run(); !s)
          return to_caf(std::move(s).err());
        return seconds_since(t0);
      },
  };
}

using prefetch_done = std::function<void(expected<prefetched>)>;

/// Reads `ck`, opened from `dir` on this node's disk, into the tier and calls `done` with the
/// outcome: at once (seconds 0) when it is there already.
void read_in(dram_tier_ptr self, std::shared_ptr<const checkpoint> ck, const std::string& dir,
             prefetch_done done) {
  auto& st = self->state;
  const auto node = st.ctx->options.name;
  auto failed = [=](error e) { done(with_context(std::move(e), "prefetch on node " + node)); };
  auto& tier = st.ctx->ld->tier();
  if (tier.state_of(ck->content_id()) == dram_state::ready) {
    done(prefetched{ck->total_bytes(), 0});
    return;
  }
  // Refused up front, naming both sizes, when the tier could never hold it.
  if (auto fits = tier.check_fits(*ck); !fits) {
    failed(with_context(std::move(fits).err(), "the DRAM tier is too small"));
    return;
  }
  auto worker = self->system().spawn<caf::detached>(prefetch_worker, st.ctx, ck);
  self->request(worker, caf::infinite, prefetch_atom::value)
      .then(
          [=](double seconds) {
            spdlog::info("node {}: prefetched {} ({} bytes) into DRAM in {:.3f} s", node, dir,
                         ck->total_bytes(), seconds);
            done(prefetched{ck->total_bytes(), seconds});
          },
          [=](caf::error& err) { failed(from_caf(err)); });
}

/// Reads `dir` into the tier (see dram_tier.hpp) and calls `done` with the outcome.
void prefetch(dram_tier_ptr self, const std::string& dir, prefetch_done done) {
  const auto node = self->state.ctx->options.name;
  self->request(self->state.ssd, caf::infinite, open_atom::value, dir, std::string{})
      .then([=](disk_checkpoint& found) { read_in(self, found.ckpt, dir, done); },
            [=](caf::error& err) {
              done(with_context(from_caf(err), "prefetch on node " + node));
            });
}

// --- lending --------------------------------------------------------------------------------

/// Ends a pull this tier serves: withdraws the key and unpins the model once no read of it is
/// in flight. That wait runs on a thread of its own (it is short after a release, which comes
/// after the puller's reads; a puller that hangs mid-read holds it until the data plane gives
/// up on it), so the tier never stalls on it.
void end_serving(dram_tier_ptr self, const std::string& key) {
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
expected<pull_offer> offer_pull(dram_tier_ptr self, const checkpoint& ckpt,
                                std::string tokenizer_json, std::string tokenizer_config,
                                const caf::actor_addr& puller, std::uint64_t puller_chunk) {
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

/// (pull_atom, dir, puller_chunk): see dram_tier.hpp.
caf::result<pull_offer> serve_pull(dram_tier_ptr self, const std::string& dir,
                                   std::uint64_t puller_chunk) {
  auto& st = self->state;
  const auto node = st.ctx->options.name;
  if (!st.ctx->plane)
    return to_caf(make_error(errc::unsupported, "node " + node + " has no data plane to lend " +
                                                    dir + " through (node.data_plane)"));
  const auto puller = caf::actor_cast<caf::actor_addr>(self->current_sender());
  if (auto it = st.pulled.find(dir); it != st.pulled.end()) {
    // Pulled itself: it lends what the tier holds, and has no disk copy to read.
    const auto& m = it->second;
    auto offer = offer_pull(self, *m.ckpt, m.tokenizer_json, m.tokenizer_config, puller,
                            puller_chunk);
    if (!offer)
      return to_caf(offer.err());
    return std::move(*offer);
  }
  auto rp = self->make_response_promise<pull_offer>();
  auto answer = [=](const disk_checkpoint& found) mutable {
    auto offer = offer_pull(self, *found.ckpt, found.tokenizer_json, found.tokenizer_config,
                            puller, puller_chunk);
    if (offer)
      rp.deliver(std::move(*offer));
    else
      rp.deliver(to_caf(offer.err()));
  };
  self->request(st.ssd, caf::infinite, lend_atom::value, dir)
      .then(
          [=](disk_checkpoint& found) mutable {
            // Read in first if it is on this node's SSD only, then lent.
            read_in(self, found.ckpt, dir, [=](expected<prefetched> done) mutable {
              if (done)
                answer(found);
              else
                rp.deliver(to_caf(done.err()));
            });
          },
          [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

// --- pulling --------------------------------------------------------------------------------

/// What a pull worker leaves: the model, pinned in the tier (its tokenizer went into the
/// node's cache).
struct pull_result {
  std::shared_ptr<const checkpoint> ckpt;
  std::shared_ptr<dram_tier::lease> lease;
  double fetch_seconds = 0;
};

/// A one-shot worker on its own thread (the pull blocks): reads the offered model from the
/// peer into this node's DRAM tier over UCX and parses its tokenizer into the node's cache.
/// Answers the pull's seconds; the result is left in `out`.
using pull_worker_actor = worker_actor<pull_atom, pull_offer, std::string, std::string>;

pull_worker_actor::behavior_type pull_worker(pull_worker_actor::pointer self,
                                             std::shared_ptr<node_context> ctx,
                                             std::shared_ptr<pull_result> out) {
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
          THAW_ASSIGN(auto lease, ctx->ld->pull(ck, source, {}, ctx->options.pull_room_wait));
          out->fetch_seconds = seconds_since(f0);
          (void)ctx->add_tokenizer(ck.content_id(), std::move(tok));
          out->ckpt = std::make_shared<const checkpoint>(std::move(ck));
          out->lease = std::make_shared<dram_tier::lease>(std::move(lease));
          return {};
        };
        if (auto s = run(); !s)
          return to_caf(std::move(s).err());
        return seconds_since(t0);
      },
  };
}

/// Asks peers[next], then the ones after it, to lend `spec`'s checkpoint; pulls it from the
/// first that offers it into the tier and answers it pinned.
void pull_from_peers(dram_tier_ptr self, model_spec spec, std::vector<caf::actor> peers,
                     std::size_t next, caf::typed_response_promise<dram_model> rp,
                     std::string failures) {
  auto& st = self->state;
  if (next == peers.size()) {
    rp.deliver(to_caf(make_error(errc::not_found, "model " + spec.name + ": " + spec.checkpoint +
                                                      " is not on node " + st.ctx->options.name +
                                                      "'s disk and no peer lent it (" +
                                                      failures + ")")));
    return;
  }
  auto peer = peers[next];
  auto failed = [=](const std::string& why) {
    pull_from_peers(self, spec, peers, next + 1, rp,
                    failures + (failures.empty() ? "" : "; ") + why);
  };
  // request(): a typed actor may send() only to typed ones, and the peer is a node's handle.
  self->request(peer, caf::infinite, pull_atom::value, spec.checkpoint,
                st.ctx->ld->pool().chunk_bytes())
      .then(
          [=](pull_offer& offer) {
            auto out = std::make_shared<pull_result>();
            auto worker = self->system().spawn<caf::detached>(pull_worker, self->state.ctx, out);
            self->request(worker, caf::infinite, pull_atom::value, offer, spec.checkpoint,
                          spec.content_id)
                .then(
                    [=](double seconds) mutable {
                      caf::anon_send(peer, release_atom::value, offer.key);
                      auto& st2 = self->state;
                      st2.pulled[spec.checkpoint] =
                          remote_model{out->ckpt, offer.tokenizer_json, offer.tokenizer_config};
                      const auto bytes = static_cast<double>(out->ckpt->total_bytes());
                      spdlog::info("node {}: pulled {} ({} bytes) from node {} over UCX in "
                                   "{:.3f} s, the bytes in {:.3f} s ({:.2f} GB/s)",
                                   st2.ctx->options.name, spec.checkpoint,
                                   out->ckpt->total_bytes(), offer.node, seconds,
                                   out->fetch_seconds, bytes / out->fetch_seconds / 1e9);
                      rp.deliver(dram_model{out->ckpt, out->lease, seconds, out->fetch_seconds});
                    },
                    [=](caf::error& err) {
                      caf::anon_send(peer, release_atom::value, offer.key);
                      failed(from_caf(err).message);
                    });
          },
          [=](caf::error& err) { failed(from_caf(err).message); });
}

/// (fetch_atom, spec, peers, why_not_local): see dram_tier.hpp.
caf::result<dram_model> fetch(dram_tier_ptr self, model_spec spec, std::vector<caf::actor> peers,
                              const std::string& why_not_local) {
  auto& st = self->state;
  const auto& node = st.ctx->options.name;
  // Pulled before and still in the tier: from there.
  if (auto it = st.pulled.find(spec.checkpoint);
      it != st.pulled.end() &&
      (spec.content_id.empty() || it->second.ckpt->content_id() == spec.content_id)) {
    if (auto pin = st.ctx->ld->tier().try_pin_ready(*it->second.ckpt, 0))
      return dram_model{it->second.ckpt, std::make_shared<dram_tier::lease>(std::move(*pin)), 0,
                        0};
  }
  if (!st.ctx->plane || peers.empty())
    return to_caf(make_error(errc::not_found,
                             "model " + spec.name + " on node " + node +
                                 (st.ctx->plane ? " (no peer holds it)"
                                                : " (no data plane to pull it with)") +
                                 ": " + why_not_local));
  auto rp = self->make_response_promise<dram_model>();
  pull_from_peers(self, std::move(spec), std::move(peers), 0, rp, {});
  return rp;
}

dram_tier_report report(dram_tier_ptr self) {
  const auto& st = self->state;
  dram_tier_report r;
  auto& tier = st.ctx->ld->tier();
  for (const auto& id : tier.lru_order())
    if (tier.state_of(id) == dram_state::ready)
      r.ready.push_back(id);
  for (const auto& [dir, m] : st.pulled)
    r.pulled[m.ckpt->content_id()] = dir;
  const auto& pool = st.ctx->ld->pool();
  const std::uint64_t chunk = pool.chunk_bytes();
  r.bytes = pool.total_chunks() * chunk;
  r.used_bytes = (pool.total_chunks() - pool.free_chunks()) * chunk;
  return r;
}

dram_tier_actor::behavior_type dram_tier_fn(dram_tier_ptr self, std::shared_ptr<node_context> ctx,
                                            ssd_tier_actor ssd) {
  self->state.ctx = std::move(ctx);
  self->state.ssd = std::move(ssd);
  self->set_down_handler([=](const caf::down_msg& dm) {
    std::vector<std::string> orphaned; // pulls served to a puller that is gone
    for (const auto& [key, pull] : self->state.serving)
      if (pull.puller == dm.source)
        orphaned.push_back(key);
    for (const auto& key : orphaned)
      end_serving(self, key);
  });
  return {
      [=](prefetch_atom, const std::string& dir) {
        auto rp = self->make_response_promise<prefetched>();
        prefetch(self, dir, [=](expected<prefetched> done) mutable {
          if (done)
            rp.deliver(*done);
          else
            rp.deliver(to_caf(done.err()));
        });
        return rp;
      },
      [=](fetch_atom, model_spec& spec, std::vector<caf::actor>& peers,
          const std::string& why_not_local) {
        return fetch(self, std::move(spec), std::move(peers), why_not_local);
      },
      [=](pull_atom, const std::string& dir, std::uint64_t puller_chunk) {
        return serve_pull(self, dir, puller_chunk);
      },
      [=](release_atom, const std::string& key) { end_serving(self, key); },
      [=](status_atom) { return report(self); },
  };
}

} // namespace

dram_tier_actor spawn_dram_tier(caf::actor_system& sys, std::shared_ptr<node_context> ctx,
                                ssd_tier_actor ssd) {
  return sys.spawn(dram_tier_fn, std::move(ctx), std::move(ssd));
}

} // namespace thaw
