#pragma once
/// The router actor (head, one per model): admits requests, picks an instance, buffers requests
/// while instances start (as Knative's activator does), scales out up to max_instances when
/// every instance has target_concurrency sequences, scales in after keep-alive, and relays each
/// request's token events to its sink. Events are committed in token-index order whichever
/// instance sent them (duplicates dropped, early ones held back), so a request's stream stays
/// gapless when it moves between instances; the committed log (tokens, RNG, held-back stop
/// text) is the snapshot a failover resumes from (ARCHITECTURE.md section 3).
///
///   request --admit--> queued (no instance yet; a start was asked for)
///                  \-> dispatched (instance chosen) --token events--> sink --last--> done
///   queue limit reached: one failed event (resource_exhausted -> 429)
///   instance lost: each of its requests is queued again at the front and resumes on another
///     instance (started if needed) from its log; greedy or seeded output is unchanged. After
///     max_resumes failovers, or when no instance can be started, it fails naming the reason.
///   migration (migrate_atom): a new instance starts on node `to`; the instance on `from`
///     drains (no new requests), hands each sequence over (instance.hpp) and, when all are
///     moved, stops, freeing its slot. If the target fails first, the source keeps serving.
///
/// Messages (router_actor below):
///   (submit_request)             events go to submit_request::sink
///   (cancel_request)             drops a queued or running request; frees its KV blocks
///   (token_event)                from instances
///   (migrate_handoff)            from a migration's source: the request runs on the target now
///   (migrate_atom, from, to, max_gap) -> migration_report | error
///   (status_atom) -> model_status
///   (stop_atom)                  stops every instance, fails what is left, quits
///   (tick_atom)                  internal: keep-alive and min_instances, once a second

#include "actors/messages.hpp"
#include "runtime/common/metrics.hpp"

#include <caf/actor_cast.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace thaw {

/// The router's interface (the messages above), checked by the compiler against its behavior.
/// Its handle travels as caf::actor (the gateway's model table, a request's sink).
using router_actor = caf::typed_actor<
    caf::reacts_to<submit_request>, caf::reacts_to<cancel_request>, caf::reacts_to<token_event>,
    caf::reacts_to<migrate_handoff>, caf::reacts_to<tick_atom>,
    caf::replies_to<status_atom>::with<model_status>,
    caf::replies_to<migrate_atom, std::string, std::string, std::int32_t>::with<
        migration_report>,
    caf::reacts_to<stop_atom>>;

/// A router's handle, as messages and the gateway's model table carry it, as its interface.
[[nodiscard]] inline router_actor as_router(const caf::actor& a) {
  return caf::actor_cast<router_actor>(a);
}

[[nodiscard]] caf::actor spawn_router(caf::actor_system& sys, model_spec spec,
                                      caf::actor scheduler,
                                      std::shared_ptr<metrics::registry> metrics);

} // namespace thaw
