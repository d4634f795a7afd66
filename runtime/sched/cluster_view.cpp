#include "runtime/sched/cluster_view.hpp"

namespace thaw::sched {

std::int32_t cluster_node::available_slot(std::uint64_t* evict) const noexcept {
  if (evict)
    *evict = 0;
  if (!free_slots.empty())
    return free_slots.front();
  // An idle instance only holds its slot while nobody else needs it (keep-alive is a cache).
  for (const auto& i : instances) {
    if (i.sequences == 0 && i.movable) {
      if (evict)
        *evict = i.id;
      return i.slot;
    }
  }
  return -1;
}

tier cluster_view::tier_of(std::uint32_t node, std::uint32_t model) const noexcept {
  auto it = tiers_.find(key(node, model));
  return it == tiers_.end() ? tier::remote : it->second;
}

void cluster_view::set_tier(std::uint32_t node, std::uint32_t model, tier t) {
  if (t == tier::remote)
    tiers_.erase(key(node, model));
  else
    tiers_[key(node, model)] = t;
}

} // namespace thaw::sched
