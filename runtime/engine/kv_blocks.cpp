#include "runtime/engine/kv_blocks.hpp"

#include <algorithm>
#include <string>

namespace thaw {

kv_blocks::kv_blocks(std::int32_t count) : refs_(static_cast<std::size_t>(std::max(count, 0)), 0) {
  free_.reserve(refs_.size());
  // Highest id at the bottom of the stack, so a fresh allocator hands out 0, 1, 2, ...
  for (auto id = static_cast<std::int32_t>(refs_.size()) - 1; id >= 0; --id)
    free_.push_back(id);
}

bool kv_blocks::valid(std::int32_t id) const noexcept {
  return id >= 0 && static_cast<std::size_t>(id) < refs_.size();
}

expected<std::vector<std::int32_t>> kv_blocks::allocate(std::int32_t n) {
  if (n < 0)
    return make_error(errc::invalid_argument, "kv blocks: asked for " + std::to_string(n) + " blocks");
  if (static_cast<std::size_t>(n) > free_.size())
    return make_error(errc::resource_exhausted, "kv blocks: " + std::to_string(n) +
                                                    " needed, " + std::to_string(free_.size()) +
                                                    " free of " + std::to_string(refs_.size()));
  std::vector<std::int32_t> out(free_.end() - n, free_.end());
  std::reverse(out.begin(), out.end());
  free_.resize(free_.size() - static_cast<std::size_t>(n));
  for (auto id : out)
    refs_[static_cast<std::size_t>(id)] = 1;
  return out;
}

status kv_blocks::retain(std::int32_t id) {
  if (!valid(id) || refs_[static_cast<std::size_t>(id)] == 0)
    return make_error(errc::invalid_argument,
                      "kv blocks: retain of block " + std::to_string(id) + ", which is not held");
  ++refs_[static_cast<std::size_t>(id)];
  return {};
}

status kv_blocks::release(std::int32_t id) {
  if (!valid(id) || refs_[static_cast<std::size_t>(id)] == 0)
    return make_error(errc::invalid_argument,
                      "kv blocks: release of block " + std::to_string(id) + ", which is not held");
  if (--refs_[static_cast<std::size_t>(id)] == 0)
    free_.push_back(id);
  return {};
}

std::int32_t kv_blocks::capacity() const noexcept { return static_cast<std::int32_t>(refs_.size()); }
std::int32_t kv_blocks::free_count() const noexcept { return static_cast<std::int32_t>(free_.size()); }

std::int32_t kv_blocks::ref_count(std::int32_t id) const noexcept {
  return valid(id) ? refs_[static_cast<std::size_t>(id)] : 0;
}

double kv_blocks::usage() const noexcept {
  return refs_.empty() ? 0.0
                       : 1.0 - static_cast<double>(free_.size()) / static_cast<double>(refs_.size());
}

} // namespace thaw
