#pragma once
/// Placement: which node should start an instance of a model (ARCHITECTURE.md section 7). Pure
/// logic, no actors and no clocks: the scheduler actor feeds it node views and tries the nodes
/// in the order it returns.
///
/// The first policy is ServerlessLLM's locality rule in its simplest form: a node that holds
/// the checkpoint in its DRAM tier, then one that has read it from its own SSD before, then any
/// other; within a class, the node whose freest slot has the most room, then the fewest
/// instances. Nodes whose freest slot cannot hold the instance come last (they may free memory
/// by the time they are asked, and the caller learns why each refused).

#include <cstdint>
#include <string>
#include <vector>

namespace thaw::sched {

struct node_view {
  std::string name;
  std::vector<std::string> dram_models;  ///< checkpoints in the DRAM tier
  std::vector<std::string> local_models; ///< checkpoints read from this node's SSD before
  std::uint64_t freest_slot_bytes = 0;   ///< free memory of its freest slot
  std::int32_t instances = 0;
};

/// Where a checkpoint would be loaded from on a node.
enum class locality : std::uint8_t { dram = 0, ssd = 1, remote = 2 };
[[nodiscard]] const char* to_string(locality l) noexcept;
[[nodiscard]] locality locality_of(const node_view& n, const std::string& checkpoint);

/// Indices of `nodes`, best first, for an instance of `checkpoint` needing `bytes` in a slot.
[[nodiscard]] std::vector<std::size_t> rank_nodes(const std::vector<node_view>& nodes,
                                                  const std::string& checkpoint,
                                                  std::uint64_t bytes);

} // namespace thaw::sched
