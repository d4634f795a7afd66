#pragma once
/// A node's DRAM or SSD tier as the simulator models it: whole checkpoints, bounded in bytes,
/// least recently used out first; pinned copies (a checkpoint's home on a node's SSD) stay.

#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace thaw::sched {

/// A bytes-bounded LRU set of models (a node's DRAM or SSD tier); pinned models never leave.
class lru_tier {
public:
  explicit lru_tier(double capacity = 0) : capacity_(capacity) {}
  [[nodiscard]] bool contains(std::uint32_t m) const { return where_.count(m) != 0; }
  /// Inserts or refreshes `m`; returns the models evicted to make room. When `m` does not fit
  /// beside the pinned copies it is not kept and nothing is evicted.
  std::vector<std::uint32_t> touch(std::uint32_t m, double bytes, bool pinned = false);

private:
  struct entry {
    std::uint32_t model;
    double bytes;
    bool pinned;
  };
  double capacity_, used_ = 0, pinned_ = 0;
  std::list<entry> order_; // most recent first
  std::unordered_map<std::uint32_t, std::list<entry>::iterator> where_;
};

} // namespace thaw::sched
