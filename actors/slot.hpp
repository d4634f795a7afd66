#pragma once
/// The slot actor: one per device of a node: CPU slots (as many and as large as node.cpu_slots
/// and node.slot_memory_bytes say) and a GPU slot per GPU of node.gpus (as large as the GPU's
/// memory). It owns the slot's memory account and, on the CPU, its compute threads, and
/// supervises the instances it runs: it monitors each (one that exits, stopped, crashed or
/// killed, frees its memory and never takes the slot or the node down) and stops those left
/// when it goes itself (it goes with its node, which is linked to it).
///
///   (start_atom, model_spec, slot_load) -> instance_started | error
///       reserves the instance's bytes (weights plus KV cache; resource_exhausted naming both
///       sizes when they do not fit), spawns it and answers once it is loaded. A failed load
///       frees the bytes. slot_load::hold, when set, is released once the instance is loaded.
///   (stop_atom, caf::actor instance) -> void     stops it if it runs here
///   (status_atom) -> slot_report
///
/// When an instance exits, the slot sends (changed_atom) to its node, which reports again.

#include "actors/messages.hpp"
#include "actors/node_context.hpp"
#include "runtime/loader/dram_tier.hpp"

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <memory>
#include <vector>

namespace thaw {

/// What a slot starts an instance from: the opened checkpoint and, for a model that has no
/// data files on this node (pulled from a peer), the pin that keeps it in the DRAM tier until
/// the instance holds it. Local to a node (shared pointers), never sent over the network.
struct slot_load {
  std::shared_ptr<const checkpoint> ckpt;
  std::shared_ptr<dram_tier::lease> hold;
};

/// A slot's account and the instances on it.
struct slot_report {
  slot_info info;
  std::vector<instance_info> instances;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, slot_report& x) {
  return f(caf::meta::type_name("slot_report"), x.info, x.instances);
}

using slot_actor =
    caf::typed_actor<caf::replies_to<start_atom, model_spec, slot_load>::with<instance_started>,
                     caf::reacts_to<stop_atom, caf::actor>,
                     caf::replies_to<status_atom>::with<slot_report>>;

/// Spawns slot `index` of `memory_bytes`: on `gpu` (one of ctx->gpus), or, when null, on the
/// CPU with a pool of ctx->options.threads compute threads (shared by the instances placed
/// here; one whose spec asks for another count gets its own).
/// `node` (may be invalid) gets (changed_atom) whenever an instance here exits.
[[nodiscard]] slot_actor spawn_slot(caf::actor_system& sys, std::shared_ptr<node_context> ctx,
                                    std::int32_t index, std::uint64_t memory_bytes,
                                    caf::actor node, device* gpu = nullptr);

} // namespace thaw

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(thaw::slot_load)
