#pragma once
/// The node actor: one per machine. It owns the node's shared context (device, loader = SSD and
/// DRAM tiers, metrics), its slots (one per device; CPU slots, as many and as large as
/// configured, where there is no GPU), and supervises the instances it starts: it monitors each,
/// so a crashed instance frees its slot and never takes the node down. It reports its status to
/// the scheduler on start and after every change.
///
/// Slots are plain accounting in the node (memory reserved per instance), not actors of their
/// own: a CPU slot has no device state to own. A CUDA slot will own its device context.
///
/// Messages:
///   (start_atom, model_spec, std::vector<caf::actor> peers) -> instance_started | error
///       reserves memory on the slot with the most room (resource_exhausted when none fits),
///       spawns the instance and answers once it is loaded (or failed: the slot is released).
///       A checkpoint that is not on this node's disk (a relative path is looked up from the
///       node's working directory) comes from the remote tier: the node asks the `peers` (the
///       scheduler lists those holding it in DRAM, then on SSD) in turn to lend it, pulls it
///       from the first that does into its DRAM tier over UCX, and starts from there (source
///       "remote"); not_found when none can. A model pulled before and still in the tier starts
///       from it without asking.
///   (pull_atom, std::string checkpoint, std::uint64_t pool_chunk_bytes) -> pull_offer | error
///       a peer asks to pull a checkpoint: it is read into the DRAM tier first if it is only on
///       disk, pinned, and published on the data plane in the pieces the peer's pool chunks
///       take, until (release_atom, key) or the peer goes down. unsupported without a data plane.
///   (release_atom, std::string key) -> void      ends a pull this node served
///   (stop_atom, caf::actor instance) -> void     stops it; its slot is released when it exits
///   (status_atom) -> node_status
///   (prefetch_atom, std::string checkpoint_dir) -> bool | error
///       reads the checkpoint into the DRAM tier without starting an instance (evicting least
///       recently used unpinned models if need be), so that the next start loads it from memory;
///       the status then lists it in dram_models. true at once when it is there already. Errors:
///       the checkpoint's (not_found, corrupt, ...), resource_exhausted when the DRAM tier could
///       never hold it. While loads in progress pin the room it needs, it waits for them.

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
    caf::reacts_to<release_atom, std::string>>;

/// Spawns the node; it sends (node_atom, node_status) to `scheduler` (if valid) at once and
/// after every change. The handle is untyped because it travels in node_status to actors that
/// also take other handles; node_actor is what it answers to.
[[nodiscard]] caf::actor spawn_node(caf::actor_system& sys, std::shared_ptr<node_context> ctx,
                                    caf::actor scheduler);

} // namespace thaw
