#include "actors/scheduler.hpp"

#include "runtime/sched/cluster_view.hpp"
#include "runtime/sched/estimator.hpp"
#include "runtime/sched/policy.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <map>
#include <spdlog/spdlog.h>
#include <unordered_map>

namespace thaw {
namespace {

// The size assumed for a model whose spec does not carry one (the registry sets weight_bytes
// when it validates a deployment; a spec built by hand may not have it).
constexpr double nominal_bytes = 1e9;

double bytes_of(const model_spec& spec) {
  return spec.weight_bytes > 0 ? static_cast<double>(spec.weight_bytes) : nominal_bytes;
}

/// Whether the node last reported checkpoint `dir` in its DRAM tier.
bool in_dram(const node_status& n, const std::string& dir) {
  return std::find(n.dram_models.begin(), n.dram_models.end(), dir) != n.dram_models.end();
}

/// Nodes a node that lacks checkpoint `dir` on its disk may pull it from, most likely first:
/// those holding it in DRAM, then those that have read it from their SSD, then the rest (whose
/// disks may have it although they never read it; a node without it says so at once).
template <class State>
std::vector<caf::actor> peers_holding(const State& st, const std::string& dir,
                                      const caf::actor& target) {
  auto on_ssd = [&](const node_status& n) {
    return std::find(n.local_models.begin(), n.local_models.end(), dir) != n.local_models.end();
  };
  std::vector<caf::actor> out;
  for (int rank = 0; rank < 3; ++rank)
    for (const auto& [name, n] : st.nodes) {
      const int r = in_dram(n, dir) ? 0 : on_ssd(n) ? 1 : 2;
      if (r == rank && n.handle != target)
        out.push_back(n.handle);
    }
  return out;
}

/// Bytes a node's loader has to move, by the tier they come from.
struct queued_bytes {
  std::uint64_t ssd = 0;
  std::uint64_t dram = 0;
};

/// A placement under way: the nodes to ask, best first, and how far it got.
struct placement {
  caf::typed_response_promise<instance_started> rp;
  model_spec spec;
  std::vector<caf::actor> candidates;
  std::size_t next = 0;     ///< the candidate asked now is candidates[next - 1]
  std::string refusals;
  caf::actor router;        ///< who asked: the instance will be its
  bool only_missing = true; ///< every refusal so far said not_found: the checkpoint is nowhere
};

/// An instance this scheduler placed, for migration decisions: whose it is and how busy.
struct placed_instance {
  caf::actor handle;
  caf::actor router;
  std::string node;
  std::string checkpoint;
  double bytes = 0;           ///< the checkpoint's size (what a move reloads)
  std::int32_t sequences = 0; ///< from the router's load reports
  std::int64_t tokens = 0;    ///< prompt + generated tokens of those sequences
  bool moving = false;        ///< a migration of it was asked for
};

struct scheduler_state {
  std::map<std::string, node_status> nodes; // by name
  /// Placements waiting for a node's answer. CAF never answers a request whose remote receiver's
  /// node died, so a node's down message moves its placements on to their next candidate.
  std::map<std::uint64_t, placement> placing;
  std::uint64_t next_placement = 1;
  std::map<caf::actor_addr, placed_instance> placed;
  // runtime/sched works on dense indices: nodes and checkpoints get one on first sight and
  // keep it (a node that left and came back is the same node to the estimator).
  std::map<std::string, std::uint32_t> node_index;
  std::map<std::string, std::uint32_t> model_index;
  /// Loads each node had reported by tier, to learn a bandwidth only from a new load.
  struct loads_count {
    std::uint64_t ssd = 0, dram = 0, remote = 0;
  };
  std::map<std::string, loads_count> loads_seen;
  sched::placer placer{sched::policy_kind::locality};
  sched::estimators est;

  std::uint32_t intern(std::map<std::string, std::uint32_t>& m, const std::string& key) {
    return m.emplace(key, static_cast<std::uint32_t>(m.size())).first->second;
  }

  /// Folds in the bandwidths a node measured, once per new load of each kind.
  void learn(const node_status& st) {
    const auto idx = intern(node_index, st.name);
    auto& seen = loads_seen[st.name];
    if (st.loads_ssd > seen.ssd)
      est.startup.bandwidths().observe_bandwidth(idx, sched::tier::ssd, st.ssd_bandwidth);
    if (st.loads_dram > seen.dram)
      est.startup.bandwidths().observe_bandwidth(idx, sched::tier::dram, st.dram_bandwidth);
    if (st.loads_remote > seen.remote && st.remote_bandwidth > 0)
      est.startup.bandwidths().observe_bandwidth(idx, sched::tier::remote, st.remote_bandwidth);
    seen = {st.loads_ssd, st.loads_dram, st.loads_remote};
  }

  /// The cluster as runtime/sched sees it: each instance placed here takes a slot of its node
  /// (the node still decides whether another fits beside it). `handles[id - 1]` is instance id.
  sched::cluster_view view(std::vector<caf::actor>& handles) {
    // Starts asked of each node and not answered yet, by the tier they will load from.
    std::unordered_map<std::string, queued_bytes> starting;
    for (const auto& [id, p] : placing) {
      if (p.next == 0)
        continue;
      const auto& asked = p.candidates[p.next - 1];
      for (const auto& [name, n] : nodes) {
        if (n.handle != asked)
          continue;
        (in_dram(n, p.spec.checkpoint) ? starting[name].dram : starting[name].ssd) +=
            static_cast<std::uint64_t>(bytes_of(p.spec));
        break;
      }
    }
    sched::cluster_view v;
    v.nodes.resize(node_index.size());
    for (auto& n : v.nodes)
      n.up = false;
    for (const auto& [name, st] : nodes) {
      const auto idx = node_index.at(name);
      auto& n = v.nodes[idx];
      n.name = name;
      n.up = true;
      n.slots = static_cast<std::int32_t>(st.slots.size());
      n.load = static_cast<std::int32_t>(st.instances.size());
      // The instances this scheduler placed there, one slot each; the other slots are free.
      for (const auto& [addr, p] : placed) {
        if (p.node != name)
          continue;
        sched::instance_view i;
        i.id = handles.size() + 1;
        handles.push_back(p.handle);
        i.model = intern(model_index, p.checkpoint);
        i.slot = static_cast<std::int32_t>(n.instances.size());
        i.bytes = p.bytes;
        i.tokens = p.tokens;
        i.sequences = p.sequences;
        // Only a running instance moves; an idle one is the router's to stop (keep-alive).
        i.movable = p.sequences > 0 && !p.moving;
        n.instances.push_back(i);
      }
      for (auto k = static_cast<std::int32_t>(n.instances.size()); k < n.slots; ++k)
        n.free_slots.push_back(k);
      // The node's loader queue: what it reported (its loads then, prefetches included), or the
      // starts this scheduler has asked of it since and not heard back about, whichever is more.
      const auto& asked = starting.count(name) != 0 ? starting.at(name) : queued_bytes{};
      n.loader_wait = est.startup.queue_wait(
          idx, static_cast<double>(std::max(st.queued_ssd_bytes, asked.ssd)),
          static_cast<double>(std::max(st.queued_dram_bytes, asked.dram)));
      for (const auto& m : st.local_models)
        v.set_tier(idx, intern(model_index, m), sched::tier::ssd);
      for (const auto& m : st.dram_models)
        v.set_tier(idx, intern(model_index, m), sched::tier::dram);
    }
    return v;
  }

  static inline const char* name = "scheduler";
};

using scheduler_ptr = scheduler_actor::stateful_pointer<scheduler_state>;

/// Asks placement `id`'s next candidate; delivers the first success or every refusal.
void try_next(scheduler_ptr self, std::uint64_t id) {
  auto& st = self->state;
  auto it = st.placing.find(id);
  if (it == st.placing.end())
    return;
  auto& p = it->second;
  if (p.next == p.candidates.size()) {
    const auto code =
        p.only_missing && !p.refusals.empty() ? errc::not_found : errc::resource_exhausted;
    p.rp.deliver(to_caf(make_error(code, "no node can start " + p.spec.name + ": " + p.refusals)));
    st.placing.erase(it);
    return;
  }
  auto node = p.candidates[p.next++];
  const auto asked = p.next;
  // An answer counts only while this placement still waits for this node (a down message may
  // have moved it on).
  auto current = [self, id, asked]() -> placement* {
    auto f = self->state.placing.find(id);
    return f != self->state.placing.end() && f->second.next == asked ? &f->second : nullptr;
  };
  self->request(node, caf::infinite, start_atom::value, p.spec,
                peers_holding(st, p.spec.checkpoint, node))
      .then(
          [=](instance_started& started) {
            if (auto* q = current()) {
              auto& st2 = self->state;
              self->monitor(started.handle);
              st2.placed[started.handle.address()] =
                  placed_instance{started.handle, q->router, started.node, q->spec.checkpoint,
                                  bytes_of(q->spec)};
              q->rp.deliver(std::move(started));
              st2.placing.erase(id);
            } else { // nobody waits for it any more
              self->send_exit(started.handle, caf::exit_reason::user_shutdown);
            }
          },
          [=](caf::error& err) {
            auto* q = current();
            if (q == nullptr)
              return;
            auto e = from_caf(err);
            // A node that is gone (CAF's own error) is skipped like a full one, and so is one
            // that lacks the checkpoint and could not pull it. A model that cannot load (bad
            // checkpoint) fails the same way everywhere.
            const bool node_lost = err.category() != caf::atom("thaw");
            const bool skip = e.code == errc::resource_exhausted || e.code == errc::not_found;
            if (!skip && !node_lost) {
              q->rp.deliver(std::move(err));
              self->state.placing.erase(id);
              return;
            }
            q->refusals += (q->refusals.empty() ? "" : "; ") + e.message;
            q->only_missing = q->only_missing && e.code == errc::not_found && !node_lost;
            try_next(self, id);
          });
}

/// Places `spec` for `router` on the first of `candidates` that starts it.
void place(scheduler_ptr self, caf::typed_response_promise<instance_started> rp, model_spec spec,
           std::vector<caf::actor> candidates, caf::actor router) {
  auto& st = self->state;
  const auto id = st.next_placement++;
  st.placing.emplace(id, placement{rp, std::move(spec), std::move(candidates), 0, {},
                                   std::move(router)});
  try_next(self, id);
}

/// locality-migrate: asks the owner of a running instance to move it (live migration), then
/// places `spec` on the node it freed; if the move fails, places as if none was planned.
void migrate_then_place(scheduler_ptr self, caf::typed_response_promise<instance_started> rp,
                        model_spec spec, std::vector<caf::actor> ordered, caf::actor router,
                        caf::actor instance, std::string from, std::string to) {
  auto& st = self->state;
  auto it = st.placed.find(instance.address());
  auto home = st.nodes.find(from);
  if (it == st.placed.end() || home == st.nodes.end())
    return place(self, rp, std::move(spec), std::move(ordered), std::move(router));
  it->second.moving = true;
  spdlog::info("scheduler: moving the running instance of {} from {} to {} to start {} on {}",
               it->second.checkpoint, from, to, spec.name, from);
  const auto freed = home->second.handle;
  self->request(it->second.router, caf::infinite, migrate_atom::value, from, to,
                migrate_order{}.max_gap)
      .then(
          [=](migration_report& rep) mutable {
            if (rep.aborted)
              spdlog::warn("scheduler: the move from {} was aborted ({}); placing {} anyway",
                           from, rep.reason, spec.name);
            // The freed node first (its slot is empty once the move is done), then the rest.
            std::vector<caf::actor> order{freed};
            for (auto& n : ordered)
              if (n != freed)
                order.push_back(n);
            place(self, rp, std::move(spec), std::move(order), std::move(router));
          },
          [=](caf::error& err) mutable {
            spdlog::warn("scheduler: moving an instance from {} failed ({}); placing {} anyway",
                         from, from_caf(err).to_string(), spec.name);
            if (auto p = self->state.placed.find(instance.address()); p != self->state.placed.end())
              p->second.moving = false;
            place(self, rp, std::move(spec), std::move(ordered), std::move(router));
          });
}

scheduler_actor::behavior_type scheduler_fn(scheduler_ptr self, scheduler_options options) {
  self->state.placer = sched::placer{options.policy, options.seed};
  self->state.est.startup = sched::startup_estimator{options.bandwidth};
  spdlog::info("scheduler: placement policy {}", sched::to_string(options.policy));
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& nodes = self->state.nodes;
    for (auto it = nodes.begin(); it != nodes.end(); ++it) {
      if (it->second.handle.address() == dm.source) {
        spdlog::warn("scheduler: node {} is gone: {}", it->first, self->system().render(dm.reason));
        nodes.erase(it);
        break;
      }
    }
    self->state.placed.erase(dm.source);
    // Placements waiting on the dead node go on to their next candidate.
    std::vector<std::uint64_t> stuck;
    for (auto& [id, p] : self->state.placing)
      if (p.next > 0 && p.candidates[p.next - 1].address() == dm.source)
        stuck.push_back(id);
    for (auto id : stuck) {
      auto& p = self->state.placing.at(id);
      p.refusals += (p.refusals.empty() ? "" : "; ") + std::string{"a node was lost while it "
                                                                   "started the instance"};
      try_next(self, id);
    }
  });
  return {
      [=](node_atom, node_status& st) {
        auto& nodes = self->state.nodes;
        auto it = nodes.find(st.name);
        if (it == nodes.end() || it->second.handle != st.handle) {
          self->monitor(st.handle);
          spdlog::info("scheduler: node {} registered", st.name);
        }
        self->state.learn(st);
        nodes[st.name] = std::move(st);
      },
      [=](place_atom, model_spec& spec) -> caf::result<instance_started> {
        auto& nodes = self->state.nodes;
        if (nodes.empty())
          return to_caf(make_error(errc::resource_exhausted,
                                   "no node is registered to start " + spec.name));
        auto& st = self->state;
        // Before the promise: making it takes the sender out of the current message.
        auto router = caf::actor_cast<caf::actor>(self->current_sender());
        std::vector<caf::actor> handles;
        const auto view = st.view(handles);
        const sched::placement_request req{st.intern(st.model_index, spec.checkpoint),
                                            bytes_of(spec)};
        // Every node, best first; each may still refuse (the slot estimate is the node's).
        std::vector<caf::actor> ordered;
        for (auto i : st.placer.rank(view, req, st.est))
          ordered.push_back(nodes.at(view.nodes[i].name).handle);
        auto rp = self->make_response_promise<instance_started>();
        if (st.placer.kind() == sched::policy_kind::locality_migrate) {
          const auto d = st.placer.place(view, req, st.est);
          if (d.placed && !d.migrations.empty()) {
            const auto& m = d.migrations.front();
            migrate_then_place(self, rp, std::move(spec), std::move(ordered), std::move(router),
                               handles.at(m.instance - 1), view.nodes[m.from].name,
                               view.nodes[m.to].name);
            return rp;
          }
        }
        place(self, rp, std::move(spec), std::move(ordered), std::move(router));
        return rp;
      },
      [=](place_atom, model_spec& spec, std::string& node) -> caf::result<instance_started> {
        auto it = self->state.nodes.find(node);
        if (it == self->state.nodes.end())
          return to_caf(make_error(errc::not_found, "no node named " + node));
        // Before the promise: making it takes the sender out of the current message.
        auto router = caf::actor_cast<caf::actor>(self->current_sender());
        auto rp = self->make_response_promise<instance_started>();
        place(self, rp, std::move(spec), {it->second.handle}, std::move(router));
        return rp;
      },
      [=](migrate_atom, std::int64_t tokens, double seconds) {
        self->state.est.migration.observe(static_cast<double>(tokens), seconds);
      },
      [=](load_atom, caf::actor& instance, std::int32_t sequences, std::int64_t tokens) {
        auto it = self->state.placed.find(instance.address());
        if (it == self->state.placed.end())
          return;
        it->second.sequences = sequences;
        it->second.tokens = tokens;
        if (sequences == 0)
          it->second.moving = false;
      },
      [=](prefetch_atom, const std::string& dir) -> caf::result<std::string> {
        const auto& nodes = self->state.nodes;
        if (nodes.empty())
          return to_caf(
              make_error(errc::resource_exhausted, "no node is registered to prefetch " + dir));
        const node_status* best = nullptr;
        for (const auto& [name, n] : nodes) {
          if (in_dram(n, dir))
            return name; // in DRAM already
          const auto free = n.dram_bytes - std::min(n.dram_bytes, n.dram_used_bytes);
          if (best == nullptr ||
              free > best->dram_bytes - std::min(best->dram_bytes, best->dram_used_bytes))
            best = &n;
        }
        auto rp = self->make_response_promise<std::string>();
        const auto node = best->name;
        self->request(best->handle, caf::infinite, prefetch_atom::value, dir)
            .then([=](bool) mutable { rp.deliver(node); },
                  [=](caf::error& e) mutable { rp.deliver(std::move(e)); });
        return rp;
      },
      [=](status_atom) -> std::vector<node_status> {
        std::vector<node_status> out;
        for (const auto& [name, n] : self->state.nodes)
          out.push_back(n);
        return out;
      },
  };
}

} // namespace

expected<scheduler_options> scheduler_options::from_config(const config& cfg) {
  scheduler_options o;
  THAW_ASSIGN(auto policy, cfg.get_string("placement.policy", sched::to_string(o.policy)));
  auto p = sched::parse_policy(policy);
  if (!p)
    return make_error(errc::invalid_argument, "config key 'placement.policy': " + p.err().message);
  o.policy = *p;
  THAW_ASSIGN(auto seed, cfg.get_int("placement.seed", 1));
  o.seed = static_cast<std::uint64_t>(seed);
  struct key {
    const char* name;
    double& value;
  };
  for (auto k : {key{"placement.dram_gbps", o.bandwidth.dram},
                 key{"placement.ssd_gbps", o.bandwidth.ssd},
                 key{"placement.remote_gbps", o.bandwidth.remote}}) {
    THAW_ASSIGN(auto gbps, cfg.get_double(k.name, k.value / 1e9));
    if (!(gbps > 0))
      return make_error(errc::invalid_argument,
                        std::string{"config key '"} + k.name + "' must be above 0");
    k.value = gbps * 1e9;
  }
  return o;
}

caf::actor spawn_scheduler(caf::actor_system& sys, scheduler_options options) {
  return caf::actor_cast<caf::actor>(sys.spawn(scheduler_fn, std::move(options)));
}

} // namespace thaw
