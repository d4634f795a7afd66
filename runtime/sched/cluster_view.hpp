#pragma once
/// What a placement policy sees of the cluster: nodes with their slots and running instances,
/// which tier holds which model on which node, and each node's loader queue. Plain data: the
/// scheduler actor builds one from node reports, the simulator keeps one up to date as its
/// virtual clock advances. Models and nodes are dense indices (the actor interns names).

#include "runtime/sched/estimator.hpp"

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace thaw::sched {

/// One running (or starting) instance. Exactly one instance per slot.
struct instance_view {
  std::uint64_t id = 0;
  std::uint32_t model = 0;
  std::int32_t slot = -1;
  double bytes = 0;          ///< its model's checkpoint size (a migration reloads it elsewhere)
  std::int64_t tokens = 0;   ///< input + output tokens of its running sequences (recomputed on a move)
  std::int32_t sequences = 0;///< running sequences; 0: idle, its slot can be taken at no cost
  bool movable = false;      ///< running and not already moving: may be migrated
};

struct cluster_node {
  std::string name;
  bool up = true;
  std::int32_t slots = 0;
  std::vector<std::int32_t> free_slots;   ///< slots with no instance
  std::vector<instance_view> instances;   ///< instances in the other slots
  double loader_wait = 0;                 ///< seconds of loads queued ahead of a new one
  std::int32_t load = 0;   ///< running sequences, or instances where those are not known

  /// A slot a new instance can have now: a free one, else one whose instance is idle (returned
  /// through `evict`, 0 when none needs to stop). -1 when every slot is busy.
  [[nodiscard]] std::int32_t available_slot(std::uint64_t* evict = nullptr) const noexcept;
};

struct cluster_view {
  std::vector<cluster_node> nodes;

  /// The best tier holding `model` on `node` (remote when no tier there holds it).
  [[nodiscard]] tier tier_of(std::uint32_t node, std::uint32_t model) const noexcept;
  /// Records that `model` is now best held on `node` in `t`; remote forgets it.
  void set_tier(std::uint32_t node, std::uint32_t model, tier t);

private:
  static std::uint64_t key(std::uint32_t node, std::uint32_t model) noexcept {
    return (static_cast<std::uint64_t>(node) << 32) | model;
  }
  std::unordered_map<std::uint64_t, tier> tiers_;
};

} // namespace thaw::sched
