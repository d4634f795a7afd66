#pragma once
/// The scheduler actor (head): knows every node's last status and places instances with
/// runtime/sched's policy, trying nodes best first until one starts the instance. It never
/// touches a device (CONVENTIONS.md rule 6): nodes do the work and report back. The bandwidths
/// nodes report (ssd_bandwidth, dram_bandwidth, after each new load) are folded into the
/// startup estimator the policy ranks by.
///
/// Messages:
///   (node_atom, node_status)        a node registers or reports; the scheduler monitors it and
///                                   forgets it when it goes down
///   (place_atom, model_spec) -> instance_started | error
///       asks the ranked nodes in turn; the error lists why each refused ("no nodes" when none).
///       The instance is the requester's (a router): the scheduler monitors it. With
///       locality-migrate, when the policy would rather move a running instance off the best
///       node, it asks that instance's router to migrate it (migrate_atom) and then places on
///       the node it freed; a failed move falls back to the plain ranking.
///   (place_atom, model_spec, node name) -> instance_started | error   on that node only
///   (load_atom, instance, sequences, tokens)   a router's report of an instance's load
///   (migrate_atom, tokens, seconds)   a completed migration's resume, folded into the
///                                     migration-time estimator (a*tokens + b, least squares)
///   (status_atom) -> std::vector<node_status>   the last status of every node, by name
///   (prefetch_atom, checkpoint dir) -> node name | error
///       the model is expected soon: the name of a node whose DRAM tier holds it, after asking
///       the node with the most free DRAM to read it there when none does;
///       `resource_exhausted` when no node is registered

#include "actors/messages.hpp"
#include "runtime/common/config.hpp"
#include "runtime/sched/policy.hpp"

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace thaw {

/// The scheduler's interface (the messages above), checked by the compiler against its behavior.
using scheduler_actor = caf::typed_actor<
    caf::reacts_to<node_atom, node_status>,
    caf::replies_to<place_atom, model_spec>::with<instance_started>,
    caf::replies_to<place_atom, model_spec, std::string>::with<instance_started>,
    caf::reacts_to<migrate_atom, std::int64_t, double>,
    caf::reacts_to<load_atom, caf::actor, std::int32_t, std::int64_t>,
    caf::replies_to<prefetch_atom, std::string>::with<std::string>,
    caf::replies_to<status_atom>::with<std::vector<node_status>>>;

/// How the scheduler places instances.
///   [placement]
///   policy = "locality"        # random, least-loaded, locality, locality-migrate
///   seed = 1                   # of the random policy
///   dram_gbps = 8.0            # bandwidths assumed until nodes report their own (GB/s)
///   ssd_gbps = 2.0
///   remote_gbps = 1.25
struct scheduler_options {
  sched::policy_kind policy = sched::policy_kind::locality;
  std::uint64_t seed = 1;
  sched::bandwidth_defaults bandwidth;

  /// Reads the keys above; an unknown policy or a bandwidth <= 0 is an error naming its key.
  [[nodiscard]] static expected<scheduler_options> from_config(const config& cfg);
};

/// The handle is untyped for the actors that take it beside others (nodes, routers, the
/// gateway); scheduler_actor is what it answers to.
[[nodiscard]] caf::actor spawn_scheduler(caf::actor_system& sys, scheduler_options options = {});

} // namespace thaw
