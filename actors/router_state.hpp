#pragma once
/// The router's state and the functions its two files share (router.cpp: admission, events,
/// scaling; router_recovery.cpp: failover and live migration). Internal to actors/.

#include "actors/instance.hpp"
#include "actors/messages.hpp"
#include "actors/router.hpp"
#include "actors/scheduler.hpp"
#include "runtime/common/metrics.hpp"

#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>

namespace thaw::router_impl {

using clock_type = std::chrono::steady_clock;

struct instance_entry {
  caf::actor handle;
  std::string node;
  std::int32_t in_flight = 0;
  clock_type::time_point idle_since = clock_type::now();
  bool draining = false; ///< a migration's source: gets no new requests
};

/// One request the router owns, from admission to its last event.
struct request_entry {
  caf::actor sink;
  caf::actor instance;        ///< null while queued
  std::uint32_t next_seq = 0; ///< the client's event numbering
  /// The committed log: the request, the tokens relayed to the client, and the sequence's RNG
  /// and held-back stop text after the last of them. It is the snapshot a failover resumes
  /// from (ARCHITECTURE.md section 3).
  sequence_state log;
  std::map<std::int32_t, token_event> early; ///< events ahead of the next index
  std::int32_t resumes = 0;                  ///< failovers so far
  /// After a migration's handoff: the index of the target's first token, and when the source's
  /// last token was relayed (the client-visible pause ends at that first token).
  std::int32_t handoff_index = -1;
  clock_type::time_point last_event{};
  std::deque<std::pair<std::int32_t, double>> recent_gaps; ///< (index, seconds before it)
};

struct router_state {
  model_spec spec;
  scheduler_actor scheduler;
  std::shared_ptr<metrics::registry> metrics;
  std::vector<instance_entry> instances;
  std::int32_t starting = 0;
  std::deque<std::uint64_t> queue; ///< request ids waiting for an instance
  std::unordered_map<std::uint64_t, request_entry> requests;
  std::uint64_t cold_starts = 0;
  bool stopping = false;
  /// After a failed start, min_instances is not pursued again before this (doubling back-off,
  /// 1 s to 60 s), so a model that cannot load does not retry every tick.
  clock_type::time_point retry_after{};
  std::chrono::seconds backoff{1};
  bool migrating = false;
  /// While a migration runs: its source and target instances. A source on another node may
  /// never hear that the target died (messages between nodes are routed through the head): the
  /// router watches the target and tells the source.
  caf::actor migration_source;
  caf::actor migration_target;
  std::function<void(error)> migration_failed; ///< ends the migration before the source's report
  /// The model's rhythm, to tell when it is expected again (expected_soon): when the last
  /// request came and the mean gap between requests (exponentially weighted; 0 before two).
  clock_type::time_point last_arrival{};
  double arrival_gap_s = 0;
  std::uint64_t arrivals = 0;

  static inline const char* name = "router";
};

using router_ptr = router_actor::stateful_pointer<router_state>;

/// A failover resumes a request at most this many times; then it fails (a request that kills
/// every instance it touches must not take the cluster down with it).
inline constexpr std::int32_t max_resumes = 3;

instance_entry* find_instance(router_state& s, const caf::actor& handle);
/// Sends queued requests to instances while there is room.
void drain(router_ptr self);
/// Records the pause before token `index` if it was committed lately (a handoff notice that
/// came after the target's first token).
void observe_late_pause(router_ptr self, const request_entry& r, std::int32_t index);
/// Ends request `id` with a failed event (and forgets it).
void fail_request(router_ptr self, std::uint64_t id, error e);
/// One less sequence on `handle`'s instance (and the scheduler told).
void release_slot(router_ptr self, const caf::actor& handle);
/// Tells the scheduler how many sequences and tokens `handle`'s instance has (what a move of
/// it would recompute), for its migration decisions.
void report_load(router_ptr self, const caf::actor& handle);
/// A model without instances whose requests came at a mean gap g is expected again until 10 g
/// after the last one (at least 2 gaps seen): the router then keeps it in some node's DRAM tier
/// (the scheduler's prefetch_atom), so that the next cold start need not read the SSD even if
/// other models pushed it out meanwhile.
bool expected_soon(const router_state& s, clock_type::time_point now);
/// Asks the scheduler for one more instance.
void start_instance(router_ptr self);
/// Adds a started instance to the table (monitored).
void adopt_instance(router_ptr self, const instance_started& started);
metrics::registry* metrics_of(router_ptr self);

/// router_recovery.cpp: the instance behind `dm` is gone; its requests resume elsewhere.
void on_instance_down(router_ptr self, const caf::down_msg& dm);
/// router_recovery.cpp: a migration's source handed request h.request_id to h.target.
void on_handoff(router_ptr self, migrate_handoff& h);
/// router_recovery.cpp: clears the migration's state (it is over, either way).
void end_migration(router_ptr self);
/// router_recovery.cpp: moves the instance on node `from` to a new one on node `to`.
void migrate(router_ptr self, caf::typed_response_promise<migration_report> rp, std::string from,
             std::string to, std::int32_t max_gap);

} // namespace thaw::router_impl
