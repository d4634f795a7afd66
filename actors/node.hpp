#pragma once
/// The node actor: one per machine. It owns the node's shared context (device, loader, data
/// plane, metrics) and supervises the node's parts, each an actor of its own and linked to it:
/// the SSD tier (ssd_tier.hpp: the checkpoints on this disk), the DRAM tier (dram_tier.hpp:
/// prefetches, pulls from peers, lends to them) and the slots (slot.hpp: one per device, CPU
/// slots where there is no GPU; each runs and supervises its instances, so a crashed instance
/// frees its slot's memory and never takes the node down). The node places starts on slots,
/// learns the tiers' bandwidths from them, and reports its status (gathered from its parts) to
/// the scheduler on start and after every change.
///
/// Messages:
///   (start_atom, model_spec, std::vector<caf::actor> peers) -> instance_started | error
///       opens the checkpoint through the SSD tier and starts it on the slot with the most room
///       (resource_exhausted when none fits), answering once the instance is loaded (or failed:
///       the slot's memory is released). A checkpoint that is not on this node's disk (a
///       relative path is looked up from the node's working directory) comes from the DRAM
///       tier, which asks the `peers` (the scheduler lists those holding it in DRAM, then on
///       SSD) in turn to lend it and pulls it from the first that does over UCX (source
///       "remote"); not_found when none can. A model pulled before and still in the tier starts
///       from it without asking.
///   (pull_atom, std::string checkpoint, std::uint64_t pool_chunk_bytes) -> pull_offer | error
///       a peer's DRAM tier asks to pull a checkpoint: delegated to this node's DRAM tier, which
///       reads it in first if it is only on disk, pins it and publishes it on the data plane in
///       the pieces the peer's pool chunks take, until (release_atom, key) or the peer goes
///       down. unsupported without a data plane.
///   (release_atom, std::string key) -> void      ends a pull this node served
///   (stop_atom, caf::actor instance) -> void     stops it; its slot is released when it exits
///   (status_atom) -> node_status
///   (prefetch_atom, std::string checkpoint_dir) -> bool | error
///       reads the checkpoint into the DRAM tier without starting an instance (evicting least
///       recently used unpinned models if need be), so that the next start loads it from memory;
///       the status then lists it in dram_models. true at once when it is there already. Errors:
///       the checkpoint's (not_found, corrupt, ...), resource_exhausted when the DRAM tier could
///       never hold it. While loads in progress pin the room it needs, it waits for them.
///   (changed_atom) -> void                       from its parts: report the status again

#include "actors/messages.hpp"
#include "actors/node_context.hpp"

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace thaw {

/// The node's interface (the messages above), checked by the compiler against its behavior.
using node_actor = caf::typed_actor<
    caf::replies_to<start_atom, model_spec, std::vector<caf::actor>>::with<instance_started>,
    caf::reacts_to<stop_atom, caf::actor>,
    caf::replies_to<status_atom>::with<node_status>,
    caf::replies_to<prefetch_atom, std::string>::with<bool>,
    caf::replies_to<pull_atom, std::string, std::uint64_t>::with<pull_offer>,
    caf::reacts_to<release_atom, std::string>, caf::reacts_to<changed_atom>>;

/// Spawns the node; it sends (node_atom, node_status) to `scheduler` (if valid) at once and
/// after every change. The handle is untyped because it travels in node_status to actors that
/// also take other handles; node_actor is what it answers to.
[[nodiscard]] caf::actor spawn_node(caf::actor_system& sys, std::shared_ptr<node_context> ctx,
                                    caf::actor scheduler);

} // namespace thaw
