#include "runtime/sched/placement.hpp"

#include <algorithm>
#include <numeric>
#include <tuple>

namespace thaw::sched {

const char* to_string(locality l) noexcept {
  switch (l) {
  case locality::dram:
    return "dram";
  case locality::ssd:
    return "ssd";
  case locality::remote:
    return "remote";
  }
  return "unknown";
}

locality locality_of(const node_view& n, const std::string& checkpoint) {
  auto has = [&](const std::vector<std::string>& v) {
    return std::find(v.begin(), v.end(), checkpoint) != v.end();
  };
  if (has(n.dram_models))
    return locality::dram;
  if (has(n.local_models))
    return locality::ssd;
  return locality::remote;
}

std::vector<std::size_t> rank_nodes(const std::vector<node_view>& nodes,
                                    const std::string& checkpoint, std::uint64_t bytes) {
  std::vector<std::size_t> order(nodes.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  auto key = [&](std::size_t i) {
    const auto& n = nodes[i];
    const bool fits = n.freest_slot_bytes >= bytes;
    // Smaller is better: fitting first, then locality, then most room, then fewest instances.
    return std::make_tuple(!fits, static_cast<int>(locality_of(n, checkpoint)),
                           ~n.freest_slot_bytes, n.instances);
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return key(a) < key(b); });
  return order;
}

} // namespace thaw::sched
