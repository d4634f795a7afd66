#include "actors/slot.hpp"

#include "actors/instance.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <spdlog/spdlog.h>
#include <unordered_map>
#include <unordered_set>

namespace thaw {
namespace {

struct placed_instance {
  std::string model;
  std::uint64_t bytes = 0;
};

struct slot_state {
  std::shared_ptr<node_context> ctx;
  caf::actor_addr node; ///< weak: the node holds the slot
  std::int32_t index = 0;
  std::uint64_t memory_bytes = 0;
  std::uint64_t used_bytes = 0;
  /// The slot's compute threads: the instances placed here share them (their forward passes
  /// take turns), and a cold start creates none.
  std::shared_ptr<host::thread_pool> pool;
  device* gpu = nullptr; ///< a GPU slot's GPU (no pool then)
  std::unordered_map<caf::actor_addr, placed_instance> instances;
  /// The instances' addresses again, for the slot's exit (which outlives the state): they are
  /// stopped when the slot goes.
  std::shared_ptr<std::unordered_set<caf::actor_addr>> running =
      std::make_shared<std::unordered_set<caf::actor_addr>>();

  static inline const char* name = "slot";
};

using slot_ptr = slot_actor::stateful_pointer<slot_state>;

void release(slot_ptr self, const caf::actor_addr& addr) {
  auto& s = self->state;
  auto it = s.instances.find(addr);
  if (it == s.instances.end())
    return;
  s.used_bytes -= it->second.bytes;
  s.instances.erase(it);
  s.running->erase(addr);
}

caf::result<instance_started> start(slot_ptr self, model_spec spec, slot_load load) {
  auto& s = self->state;
  const auto bytes =
      instance_bytes(load.ckpt->total_bytes(), load.ckpt->config(), spec.kv_blocks);
  if (bytes > s.memory_bytes - s.used_bytes)
    return to_caf(make_error(errc::resource_exhausted,
                             "node " + s.ctx->options.name + ": an instance of " + spec.name +
                                 " needs " + std::to_string(bytes) + " bytes, slot " +
                                 std::to_string(s.index) + " has " +
                                 std::to_string(s.memory_bytes - s.used_bytes) + " free"));
  s.used_bytes += bytes;
  auto inst = spawn_instance(self->system(), s.ctx, spec, *load.ckpt, s.pool, s.gpu);
  // Monitored, not linked: an instance that goes, whatever the reason (even a kill, which a
  // link would pass on), frees its bytes and leaves the slot be.
  self->monitor(inst);
  s.instances[inst.address()] = placed_instance{spec.name, bytes};
  s.running->insert(inst.address());
  auto rp = self->make_response_promise<instance_started>();
  self->request(inst, caf::infinite, ready_atom::value)
      .then(
          [=, hold = load.hold](instance_started& started) mutable {
            hold.reset(); // the instance holds the model now
            rp.deliver(std::move(started));
          },
          [=, hold = load.hold](caf::error& err) mutable {
            hold.reset();
            release(self, inst.address());
            rp.deliver(std::move(err));
          });
  return rp;
}

slot_report report(slot_ptr self) {
  const auto& s = self->state;
  slot_report r;
  r.info.index = s.index;
  r.info.kind = s.gpu != nullptr ? "cuda" : "cpu";
  r.info.memory_bytes = s.memory_bytes;
  r.info.used_bytes = s.used_bytes;
  for (const auto& [addr, inst] : s.instances) {
    r.info.models.push_back(inst.model);
    r.instances.push_back(instance_info{inst.model, caf::actor_cast<caf::actor>(addr)});
  }
  return r;
}

slot_actor::behavior_type slot_fn(slot_ptr self, std::shared_ptr<node_context> ctx,
                                  std::int32_t index, std::uint64_t memory_bytes,
                                  caf::actor node, device* gpu) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  s.node = node.address();
  s.index = index;
  s.memory_bytes = memory_bytes;
  s.gpu = gpu;
  if (gpu == nullptr)
    s.pool = std::make_shared<host::thread_pool>(s.ctx->options.threads);
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    auto it = st.instances.find(dm.source);
    if (it == st.instances.end())
      return;
    if (dm.reason && dm.reason != caf::exit_reason::user_shutdown)
      spdlog::warn("node {}: instance of {} on slot {} exited: {}", st.ctx->options.name,
                   it->second.model, st.index, self->system().render(dm.reason));
    release(self, dm.source);
    if (auto node = caf::actor_cast<caf::actor>(st.node))
      caf::anon_send(node, changed_atom::value);
  });
  // The node is linked to the slot: when it goes, the slot goes, and so do its instances.
  self->set_exit_handler([=](caf::exit_msg& msg) { self->quit(msg.reason); });
  self->attach_functor([running = s.running] {
    for (const auto& addr : *running)
      caf::anon_send_exit(addr, caf::exit_reason::user_shutdown);
  });
  return {
      [=](start_atom, model_spec& spec, slot_load& load) {
        return start(self, std::move(spec), std::move(load));
      },
      [=](stop_atom, const caf::actor& inst) {
        if (self->state.instances.count(inst.address()) != 0)
          self->send_exit(inst, caf::exit_reason::user_shutdown);
      },
      [=](status_atom) { return report(self); },
  };
}

} // namespace

slot_actor spawn_slot(caf::actor_system& sys, std::shared_ptr<node_context> ctx,
                      std::int32_t index, std::uint64_t memory_bytes, caf::actor node,
                      device* gpu) {
  return sys.spawn(slot_fn, std::move(ctx), index, memory_bytes, std::move(node), gpu);
}

} // namespace thaw
