#pragma once
/// A discrete-event simulation of a serverless cluster driven by the same placement policies and
/// estimators the scheduler actor uses (ARCHITECTURE.md section 7). Virtual clock: events are
/// processed in time order (ties in the order they were scheduled), so a run is a pure function
/// of its configuration, requests and seed.
///
/// What is modelled:
///   nodes     `slots` slots each, one instance per slot; one loader per node that loads one
///             checkpoint at a time (a queue); a DRAM tier (LRU of whole checkpoints, bytes
///             bounded) and an SSD tier (each model's home copies plus what was loaded there,
///             LRU, bytes bounded); true bandwidths per node and tier are the configured ones
///             times a fixed per-node factor (jitter), which the estimators have to learn
///   models    checkpoint bytes, prefill and decode tokens/s, sequences per instance, min and
///             max instances, keep-alive (an idle instance above min stops after it: scale to
///             zero; until then a placement may take its slot at no cost)
///   requests  wait in their model's queue for a free sequence on a ready instance; TTFT =
///             wait + input/prefill; end = TTFT + output/decode (sequences on one instance do
///             not slow each other down: an instance is sized for its concurrency)
///   migration the destination slot is reserved, the destination loads the checkpoint through
///             its own loader, then recomputes every token of the moved sequences at the
///             model's prefill speed; then the sequences continue there after a pause of
///             `handoff_steps` decode steps and the source slot goes to the waiting instance
/// Loads are folded into the startup estimator and resumes into the migration estimator as
/// they complete, exactly as the scheduler actor does with real ones.
///
/// The loop touches only the nodes a decision needs besides the policy's own scan, so a run
/// costs about (requests + cold starts x nodes) operations.

#include "runtime/sched/estimator.hpp"
#include "runtime/sched/policy.hpp"
#include "runtime/sched/sim_workload.hpp"

#include <array>
#include <cstdint>
#include <vector>

namespace thaw::sched {

/// One model's serving parameters.
struct sim_model {
  double bytes = 16e9;
  double prefill_tps = 8000;
  double decode_tps = 40;
  std::int32_t concurrency = 8;   ///< sequences per instance
  std::int32_t min_instances = 0;
  std::int32_t max_instances = 4;
  double keep_alive = 60;         ///< seconds idle before an instance above min stops
};

struct sim_config {
  std::uint32_t nodes = 4;
  std::int32_t slots_per_node = 8;
  double dram_bytes = 256e9;          ///< per node, DRAM tier capacity
  double ssd_bytes = 2e12;            ///< per node, SSD tier capacity
  std::int32_t ssd_replicas = 1;      ///< nodes holding each model's checkpoint on SSD at start
  bandwidth_defaults bandwidth;       ///< true mean bandwidths (bytes/s) per tier
  double bandwidth_jitter = 0.2;      ///< each node's factor is drawn from [1-j, 1+j]
  double setup_seconds = 0.05;        ///< per load, independent of bytes
  std::int32_t handoff_steps = 2;     ///< pause of a migrated sequence, in decode steps
  std::vector<sim_model> models;      ///< per model (index = model id); must cover every request
  policy_kind policy = policy_kind::locality;
  std::uint64_t seed = 1;
  /// What the estimators start from (the scheduler's configuration, not the truth).
  bandwidth_defaults estimator_bandwidth;
  double migration_prior_a = 1.0 / 8000, migration_prior_b = 0.05;
};

struct sim_result {
  policy_kind policy = policy_kind::locality;
  std::vector<double> ttft;   ///< per request, in request order, seconds
  std::vector<double> e2e;
  std::uint64_t requests = 0, completed = 0;
  std::array<std::uint64_t, tier_count> cold_starts{};  ///< instance loads by source tier
  std::uint64_t migrations = 0;
  std::uint64_t migrated_tokens = 0;   ///< tokens recomputed by migrations
  std::uint64_t evictions = 0;         ///< idle instances stopped for another's slot
  std::uint64_t scale_to_zero = 0;     ///< instances stopped by keep-alive
  double slot_seconds = 0;             ///< slots x simulated time
  double occupied_slot_seconds = 0;    ///< with an instance (loading, serving or idle)
  double busy_slot_seconds = 0;        ///< with an instance running at least one sequence
  double simulated_seconds = 0;
  std::uint64_t events = 0;
  double learned_migration_a = 0, learned_migration_b = 0;
};

/// Runs the requests (sorted by arrival) through a cluster configured by `cfg` until every
/// request has finished. Errors: a request for a model `cfg.models` does not cover, or a
/// configuration that cannot serve anything (no nodes or slots).
[[nodiscard]] expected<sim_result> simulate(const sim_config& cfg,
                                            const std::vector<sim_request>& requests);

/// Summary of one run (what `thaw sim` prints).
struct sim_summary {
  double ttft_p50 = 0, ttft_p90 = 0, ttft_p99 = 0;
  double e2e_p50 = 0, e2e_p90 = 0, e2e_p99 = 0;
  double slo_attainment = 0;      ///< fraction of requests with TTFT <= slo_ttft
  double slot_utilisation = 0;    ///< busy slot-seconds / slot-seconds
  double slot_occupancy = 0;      ///< occupied slot-seconds / slot-seconds
};
[[nodiscard]] sim_summary summarize(const sim_result& r, double slo_ttft);
/// The q-quantile (0..1) of `v` by the nearest-rank rule; 0 for an empty `v`.
[[nodiscard]] double quantile(std::vector<double> v, double q);

} // namespace thaw::sched
