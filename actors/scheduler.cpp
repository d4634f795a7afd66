#include "actors/scheduler.hpp"

#include "runtime/sched/placement.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <map>
#include <spdlog/spdlog.h>

namespace thaw {
namespace {

struct scheduler_state {
  std::map<std::string, node_status> nodes; // by name

  static inline const char* name = "scheduler";
};

using scheduler_ptr = caf::stateful_actor<scheduler_state>*;

sched::node_view view_of(const node_status& n) {
  sched::node_view v;
  v.name = n.name;
  v.dram_models = n.dram_models;
  v.local_models = n.local_models;
  for (const auto& s : n.slots)
    v.freest_slot_bytes = std::max(v.freest_slot_bytes, s.memory_bytes - s.used_bytes);
  v.instances = static_cast<std::int32_t>(n.instances.size());
  return v;
}

/// Asks candidates[i..] in turn; delivers the first success or every refusal.
void try_place(scheduler_ptr self, caf::typed_response_promise<instance_started> rp,
               model_spec spec, std::vector<caf::actor> candidates, std::size_t i,
               std::string refusals) {
  if (i == candidates.size()) {
    rp.deliver(to_caf(make_error(errc::resource_exhausted,
                                 "no node can start " + spec.name + ": " + refusals)));
    return;
  }
  auto node = candidates[i];
  self->request(node, caf::infinite, start_atom::value, spec)
      .then([=](instance_started& started) mutable { rp.deliver(std::move(started)); },
            [=](caf::error& err) mutable {
              auto e = from_caf(err);
              // A node that is gone (CAF's own error: its down message may not have come
              // yet) is skipped like a full one. A model that cannot load (bad checkpoint)
              // fails the same way everywhere.
              const bool node_lost = err.category() != caf::atom("thaw");
              if (e.code != errc::resource_exhausted && !node_lost) {
                rp.deliver(std::move(err));
                return;
              }
              try_place(self, rp, spec, candidates, i + 1,
                        refusals + (refusals.empty() ? "" : "; ") + e.message);
            });
}

caf::behavior scheduler_fn(scheduler_ptr self) {
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& nodes = self->state.nodes;
    for (auto it = nodes.begin(); it != nodes.end(); ++it) {
      if (it->second.handle.address() == dm.source) {
        spdlog::warn("scheduler: node {} is gone: {}", it->first, self->system().render(dm.reason));
        nodes.erase(it);
        break;
      }
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
        nodes[st.name] = std::move(st);
      },
      [=](place_atom, model_spec& spec) -> caf::result<instance_started> {
        auto& nodes = self->state.nodes;
        if (nodes.empty())
          return to_caf(make_error(errc::resource_exhausted,
                                   "no node is registered to start " + spec.name));
        std::vector<sched::node_view> views;
        std::vector<caf::actor> handles;
        for (const auto& [name, n] : nodes) {
          views.push_back(view_of(n));
          handles.push_back(n.handle);
        }
        // The slot estimate is the node's to make; rank by room for at least the weights.
        std::vector<caf::actor> ordered;
        for (auto i : sched::rank_nodes(views, spec.checkpoint, 0))
          ordered.push_back(handles[i]);
        auto rp = self->make_response_promise<instance_started>();
        try_place(self, rp, std::move(spec), std::move(ordered), 0, {});
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

caf::actor spawn_scheduler(caf::actor_system& sys) {
  return sys.spawn(scheduler_fn);
}

} // namespace thaw
