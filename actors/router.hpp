#pragma once
/// The router actor (head, one per model): admits requests, picks an instance, buffers requests
/// while instances start (as Knative's activator does), scales out up to max_instances when
/// every instance has target_concurrency sequences, scales in after keep-alive, and relays each
/// request's token events to its sink, renumbering them so a request's stream stays gapless
/// when it moves between instances (migration and failover build on this).
///
///   request --admit--> queued (no instance yet; a start was asked for)
///                  \-> dispatched (instance chosen) --token events--> sink --last--> done
///   queue limit reached: one failed event (resource_exhausted -> 429)
///   instance lost: its requests end with a failed event naming the instance and the reason
///
/// Messages:
///   (submit_request)             events go to submit_request::sink
///   (cancel_request)             drops a queued or running request; frees its KV blocks
///   (token_event)                from instances
///   (status_atom) -> model_status
///   (stop_atom)                  stops every instance, fails what is left, quits
///   (tick_atom)                  internal: keep-alive and min_instances, once a second

#include "actors/messages.hpp"
#include "runtime/common/metrics.hpp"

#include <caf/fwd.hpp>

#include <memory>

namespace thaw {

[[nodiscard]] caf::actor spawn_router(caf::actor_system& sys, model_spec spec,
                                      caf::actor scheduler,
                                      std::shared_ptr<metrics::registry> metrics);

} // namespace thaw
