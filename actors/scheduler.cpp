#include "actors/scheduler.hpp"

#include "runtime/sched/cluster_view.hpp"
#include "runtime/sched/estimator.hpp"
#include "runtime/sched/policy.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <map>
#include <spdlog/spdlog.h>

namespace thaw {
namespace {

// The scheduler does not read checkpoints (nodes do), so it ranks by a nominal size: with no
// loader queue known, the order only depends on the tiers and bandwidths, not on the bytes.
constexpr double nominal_bytes = 1e9;

/// A placement under way: the nodes to ask, best first, and how far it got.
struct placement {
  caf::typed_response_promise<instance_started> rp;
  model_spec spec;
  std::vector<caf::actor> candidates;
  std::size_t next = 0;     ///< the candidate asked now is candidates[next - 1]
  std::string refusals;
};

struct scheduler_state {
  std::map<std::string, node_status> nodes; // by name
  /// Placements waiting for a node's answer. CAF never answers a request whose remote receiver's
  /// node died, so a node's down message moves its placements on to their next candidate.
  std::map<std::uint64_t, placement> placing;
  std::uint64_t next_placement = 1;
  // runtime/sched works on dense indices: nodes and checkpoints get one on first sight and
  // keep it (a node that left and came back is the same node to the estimator).
  std::map<std::string, std::uint32_t> node_index;
  std::map<std::string, std::uint32_t> model_index;
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> loads_seen; // ssd, dram
  sched::placer placer{sched::policy_kind::locality};
  sched::estimators est;

  std::uint32_t intern(std::map<std::string, std::uint32_t>& m, const std::string& key) {
    return m.emplace(key, static_cast<std::uint32_t>(m.size())).first->second;
  }

  /// Folds in the bandwidths a node measured, once per new load of each kind.
  void learn(const node_status& st) {
    const auto idx = intern(node_index, st.name);
    auto& [ssd, dram] = loads_seen[st.name];
    if (st.loads_ssd > ssd)
      est.startup.bandwidths().observe_bandwidth(idx, sched::tier::ssd, st.ssd_bandwidth);
    if (st.loads_dram > dram)
      est.startup.bandwidths().observe_bandwidth(idx, sched::tier::dram, st.dram_bandwidth);
    ssd = st.loads_ssd;
    dram = st.loads_dram;
  }

  /// The cluster as runtime/sched sees it. A slot with no model is free; a slot holding models
  /// counts as busy (the node still decides whether another instance fits beside them).
  sched::cluster_view view() {
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
      for (const auto& s : st.slots) {
        if (s.models.empty()) {
          n.free_slots.push_back(s.index);
          continue;
        }
        sched::instance_view i;
        i.model = intern(model_index, s.models.front());
        i.slot = s.index;
        i.bytes = nominal_bytes;
        i.sequences = 1;   // unknown here: never taken for an idle one
        i.movable = false; // moving instances is the router's, not wired to placement yet
        n.instances.push_back(i);
      }
      for (const auto& m : st.local_models)
        v.set_tier(idx, intern(model_index, m), sched::tier::ssd);
      for (const auto& m : st.dram_models)
        v.set_tier(idx, intern(model_index, m), sched::tier::dram);
    }
    return v;
  }

  static inline const char* name = "scheduler";
};

using scheduler_ptr = caf::stateful_actor<scheduler_state>*;

/// Asks placement `id`'s next candidate; delivers the first success or every refusal.
void try_next(scheduler_ptr self, std::uint64_t id) {
  auto& st = self->state;
  auto it = st.placing.find(id);
  if (it == st.placing.end())
    return;
  auto& p = it->second;
  if (p.next == p.candidates.size()) {
    p.rp.deliver(to_caf(make_error(errc::resource_exhausted,
                                   "no node can start " + p.spec.name + ": " + p.refusals)));
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
  self->request(node, caf::infinite, start_atom::value, p.spec)
      .then(
          [=](instance_started& started) {
            if (auto* q = current()) {
              q->rp.deliver(std::move(started));
              self->state.placing.erase(id);
            } else { // nobody waits for it any more
              self->send_exit(started.handle, caf::exit_reason::user_shutdown);
            }
          },
          [=](caf::error& err) {
            auto* q = current();
            if (q == nullptr)
              return;
            auto e = from_caf(err);
            // A node that is gone (CAF's own error) is skipped like a full one. A model that
            // cannot load (bad checkpoint) fails the same way everywhere.
            const bool node_lost = err.category() != caf::atom("thaw");
            if (e.code != errc::resource_exhausted && !node_lost) {
              q->rp.deliver(std::move(err));
              self->state.placing.erase(id);
              return;
            }
            q->refusals += (q->refusals.empty() ? "" : "; ") + e.message;
            try_next(self, id);
          });
}

/// Places `spec` on the first of `candidates` that starts it.
caf::typed_response_promise<instance_started> place(scheduler_ptr self, model_spec spec,
                                                    std::vector<caf::actor> candidates) {
  auto& st = self->state;
  const auto id = st.next_placement++;
  auto rp = self->make_response_promise<instance_started>();
  st.placing.emplace(id, placement{rp, std::move(spec), std::move(candidates), 0, {}});
  try_next(self, id);
  return rp;
}

caf::behavior scheduler_fn(scheduler_ptr self, scheduler_options options) {
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
        const auto view = st.view();
        const sched::placement_request req{st.intern(st.model_index, spec.checkpoint),
                                            nominal_bytes};
        // Every node, best first; each may still refuse (the slot estimate is the node's).
        std::vector<caf::actor> ordered;
        for (auto i : st.placer.rank(view, req, st.est))
          ordered.push_back(nodes.at(view.nodes[i].name).handle);
        return place(self, std::move(spec), std::move(ordered));
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
  return sys.spawn(scheduler_fn, std::move(options));
}

} // namespace thaw
