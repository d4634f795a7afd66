#include "runtime/engine/model_runner.hpp"

namespace thaw {

std::uint64_t kv_block_bytes(const model_config& cfg, std::uint64_t bytes_per_element) noexcept {
  // Keys and values (2) for each layer, kv head and head dimension, for every token of a block.
  return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim *
         static_cast<std::uint64_t>(kv_block_tokens) * bytes_per_element;
}

} // namespace thaw
