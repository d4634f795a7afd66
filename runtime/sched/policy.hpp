#pragma once
/// Placement policies (ARCHITECTURE.md section 7): given the cluster view and a model to start,
/// return a plain decision (CONVENTIONS.md rule 6): the node and slot, the estimated startup, the
/// idle instances to stop for room and the running instances to move elsewhere first. The caller
/// carries it out and folds what it observed back into the estimators.
///
///   random            a uniformly chosen node with a slot (seeded: the same seed, the same picks)
///   least-loaded      the node with a slot and the fewest running sequences
///   locality          ServerlessLLM: the node with a slot and the least estimated startup time
///   locality-migrate  as locality, but when a better node is full, move one of its running
///                     instances to a node with a slot if (move time + startup there) beats the
///                     best node with a slot

#include "runtime/common/error.hpp"
#include "runtime/sched/cluster_view.hpp"
#include "runtime/sched/estimator.hpp"

#include <cstdint>
#include <random>
#include <string_view>
#include <vector>

namespace thaw::sched {

enum class policy_kind : std::uint8_t { random, least_loaded, locality, locality_migrate };
inline constexpr policy_kind all_policies[] = {policy_kind::random, policy_kind::least_loaded,
                                               policy_kind::locality,
                                               policy_kind::locality_migrate};
[[nodiscard]] const char* to_string(policy_kind p) noexcept;
/// "random", "least-loaded", "locality" or "locality-migrate"; anything else is an error.
[[nodiscard]] expected<policy_kind> parse_policy(std::string_view name);

/// A model to start: which one and how many bytes its checkpoint has.
struct placement_request {
  std::uint32_t model = 0;
  double bytes = 0;
};

/// Move a running instance to `to`/`to_slot` before the new instance can have its slot.
struct migration {
  std::uint64_t instance = 0;
  std::uint32_t from = 0;
  std::uint32_t to = 0;
  std::int32_t to_slot = -1;
  tier source = tier::remote;   ///< where `to` loads the moved model from
  double seconds = 0;           ///< estimated: startup at `to` + recomputing its tokens
};

struct decision {
  bool placed = false;          ///< false: no slot anywhere; the caller waits for one
  std::uint32_t node = 0;
  std::int32_t slot = -1;
  tier source = tier::remote;   ///< where the new instance loads from
  double startup_seconds = 0;   ///< estimated time until it is ready, migrations included
  std::vector<std::uint64_t> evictions;  ///< idle instances to stop first (on any node)
  std::vector<migration> migrations;
};

/// The estimators a policy ranks by; owned by the caller, who feeds them observations.
struct estimators {
  startup_estimator startup;
  migration_estimator migration;
};

class placer {
public:
  placer(policy_kind kind, std::uint64_t seed = 1, std::size_t migrate_candidates = 4);

  [[nodiscard]] policy_kind kind() const noexcept { return kind_; }
  /// The decision for starting `req` now. Never modifies the view.
  [[nodiscard]] decision place(const cluster_view& view, const placement_request& req,
                               const estimators& est);
  /// Every up node, best first by this policy, nodes with an available slot before full ones,
  /// ties to the less loaded (for a caller that asks nodes in turn and lets each refuse).
  [[nodiscard]] std::vector<std::uint32_t> rank(const cluster_view& view,
                                                const placement_request& req,
                                                const estimators& est);

private:
  [[nodiscard]] double startup(const cluster_view& view, std::uint32_t node,
                               const placement_request& req, const estimators& est) const;
  void try_migration(const cluster_view& view, const placement_request& req,
                     const estimators& est, decision& best) const;

  policy_kind kind_;
  std::mt19937_64 rng_;
  std::size_t migrate_candidates_;
};

} // namespace thaw::sched
