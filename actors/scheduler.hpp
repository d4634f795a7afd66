#pragma once
/// The scheduler actor (head): knows every node's last status and places instances with
/// runtime/sched's policy, trying nodes best first until one starts the instance. It never
/// touches a device (CONVENTIONS.md rule 6): nodes do the work and report back.
///
/// Messages:
///   (node_atom, node_status)        a node registers or reports; the scheduler monitors it and
///                                   forgets it when it goes down
///   (place_atom, model_spec) -> instance_started | error
///       asks the ranked nodes in turn; the error lists why each refused ("no nodes" when none)
///   (status_atom) -> std::vector<node_status>   the last status of every node, by name

#include "actors/messages.hpp"

#include <caf/fwd.hpp>

namespace thaw {

[[nodiscard]] caf::actor spawn_scheduler(caf::actor_system& sys);

} // namespace thaw
