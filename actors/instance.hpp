#pragma once
/// The instance actor: one loaded replica of a model on a slot, running the engine's step loop
/// and streaming sequence-numbered token events.
///
/// It is spawned detached (a thread of its own): loading and each engine step block, and must
/// not stall CAF's shared workers. Loading happens before the first message is handled, so
/// requests that arrive meanwhile wait in the mailbox.
///
///   spawn --load (SSD or DRAM tier -> weights, runner, tokenizer, engine)--> serving --exit-->
///     |                                                                        (KV freed)
///     +--load fails--> answers `ready` with the error, then quits
///
/// Messages (instance_actor below; the sender of a request gets its events, sent with the
/// instance as their sender, which is how a router tells its instances' events apart):
///   (ready_atom)              -> instance_started | error      once loaded
///   (instance_request)        -> token_events to the sender, the last with finish != none;
///                                a request the engine rejects gets one failed event
///   (cancel_request)          -> drops the sequence, frees its KV blocks; no more events
///   (step_atom)               internal: one engine step, then again while there is work
///   (timeout_atom, n)         internal: migration number n's deadline
///   (migrate_atom, migrate_order) -> migration_report
///                             as a migration's source: every sequence goes to the target in
///                             rounds (messages.hpp) until it lags by at most max_gap tokens,
///                             then is handed off; the report comes when none is left, or
///                             early (aborted, sequences kept here) when the target dies or
///                             the timeout passes
///   (migrate_atom, stop_atom, reason)  ends an outgoing migration early (the router saw
///                             the target die; a source on another node may not see it)
///   (migrate_state), (migrate_drop)  as a target: held sequences (prefilled, not decoding)
///                             until the final round, then decoded with events to its sink
///   (migrate_ack)             as a source: the target caught up with a round

#include "actors/messages.hpp"
#include "actors/node_context.hpp"

#include <caf/actor_cast.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <memory>

namespace thaw {

/// The instance's interface (the messages above), checked by the compiler against its
/// behavior. Its handle travels as caf::actor (in instance_started, migrate_order, ...).
using instance_actor = caf::typed_actor<
    caf::replies_to<ready_atom>::with<instance_started>, caf::reacts_to<instance_request>,
    caf::reacts_to<cancel_request>, caf::reacts_to<step_atom>,
    caf::replies_to<migrate_atom, migrate_order>::with<migration_report>,
    caf::reacts_to<timeout_atom, std::uint64_t>,
    caf::reacts_to<migrate_atom, stop_atom, std::string>, caf::reacts_to<migrate_state>,
    caf::reacts_to<migrate_ack>, caf::reacts_to<migrate_drop>>;

/// An instance's handle, as messages carry it, as its interface.
[[nodiscard]] inline instance_actor as_instance(const caf::actor& a) {
  return caf::actor_cast<instance_actor>(a);
}

/// Spawns an instance of `spec`, whose checkpoint the caller has opened as `ckpt`, on `gpu`
/// (one of ctx->gpus: loaded there from the node's DRAM tier, run by the CUDA runner) or, when
/// null, on the CPU (detached). Its weights and KV cache count against the slot that reserved
/// them for it (slot.hpp), and on the CPU it computes on that slot's `pool` (a pool of its own
/// when the spec asks for another thread count).
[[nodiscard]] instance_actor spawn_instance(caf::actor_system& sys,
                                            std::shared_ptr<node_context> ctx, model_spec spec,
                                            checkpoint ckpt,
                                            std::shared_ptr<host::thread_pool> pool,
                                            device* gpu = nullptr);

/// Bytes an instance of this checkpoint needs in a slot: its weights plus its KV cache.
[[nodiscard]] std::uint64_t instance_bytes(std::uint64_t weight_bytes, const model_config& cfg,
                                           std::int32_t kv_blocks);

} // namespace thaw
