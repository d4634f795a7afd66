#include "runtime/sched/lru_tier.hpp"

namespace thaw::sched {

std::vector<std::uint32_t> lru_tier::touch(std::uint32_t m, double bytes, bool pinned) {
  std::vector<std::uint32_t> evicted;
  if (auto it = where_.find(m); it != where_.end()) {
    if (pinned && !it->second->pinned) {
      it->second->pinned = true;
      pinned_ += it->second->bytes;
    }
    order_.splice(order_.begin(), order_, it->second);
    return evicted;
  }
  // Evicting is pointless when the pinned copies alone leave no room.
  if (pinned_ + bytes > capacity_)
    return evicted;
  // Least recently used first, skipping pinned copies.
  for (auto it = order_.end(); used_ + bytes > capacity_ && it != order_.begin();) {
    --it;
    if (it->pinned)
      continue;
    used_ -= it->bytes;
    evicted.push_back(it->model);
    where_.erase(it->model);
    it = order_.erase(it);
  }
  order_.push_front({m, bytes, pinned});
  where_[m] = order_.begin();
  used_ += bytes;
  if (pinned)
    pinned_ += bytes;
  return evicted;
}

} // namespace thaw::sched
