#include "runtime/engine/model_runner.hpp"

#include <string>

namespace thaw {

std::uint64_t kv_block_bytes(const model_config& cfg, std::uint64_t bytes_per_element) noexcept {
  // Keys and values (2) for each layer, kv head and head dimension, for every token of a block.
  return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim *
         static_cast<std::uint64_t>(kv_block_tokens) * bytes_per_element;
}

status check_runner_config(const model_config& c, std::int32_t num_kv_blocks,
                           std::string_view who) {
  const std::string prefix = std::string(who) + ": ";
  if (c.num_heads == 0 || c.num_kv_heads == 0 || c.num_heads % c.num_kv_heads != 0 ||
      c.head_dim == 0 || c.head_dim % 2 != 0)
    return make_error(errc::invalid_argument, prefix + "unsupported head configuration");
  if (num_kv_blocks <= 0)
    return make_error(errc::invalid_argument, prefix + "num_kv_blocks must be positive");
  const auto& rs = c.rope_scaling.type;
  if (!rs.empty() && rs != "default" && rs != "linear" && rs != "llama3")
    return make_error(errc::invalid_argument,
                      prefix + "RoPE scaling '" + rs + "' is not supported (linear, llama3)");
  return {};
}

expected<forward_shape> validate_forward(const model_config& cfg, std::int32_t num_blocks,
                                         std::span<const forward_item> batch,
                                         std::size_t logits_size) {
  const auto vocab = static_cast<std::int64_t>(cfg.vocab_size);
  forward_shape shape;
  for (std::size_t b = 0; b < batch.size(); ++b) {
    const auto& it = batch[b];
    const std::string who = "forward: item " + std::to_string(b) + ": ";
    if (it.tokens.empty())
      return make_error(errc::invalid_argument, who + "no tokens");
    if (it.start_pos < 0)
      return make_error(errc::invalid_argument, who + "negative start_pos");
    for (auto t : it.tokens)
      if (t < 0 || t >= vocab)
        return make_error(errc::invalid_argument,
                          who + "token " + std::to_string(t) + " outside the vocabulary");
    const std::int64_t end = std::int64_t{it.start_pos} + static_cast<std::int64_t>(it.tokens.size());
    if (static_cast<std::int64_t>(it.block_table.size()) < kv_blocks_for(end))
      return make_error(errc::invalid_argument,
                        who + "block table of " + std::to_string(it.block_table.size()) +
                            " blocks does not cover " + std::to_string(end) + " positions");
    for (auto id : it.block_table)
      if (id < 0 || id >= num_blocks)
        return make_error(errc::invalid_argument,
                          who + "block id " + std::to_string(id) + " out of range");
    shape.tokens += static_cast<std::int64_t>(it.tokens.size());
    shape.want_logits += it.want_logits ? 1 : 0;
  }
  if (static_cast<std::int64_t>(logits_size) < shape.want_logits * vocab)
    return make_error(errc::invalid_argument, "forward: logits span holds " +
                                                  std::to_string(logits_size) + " floats, " +
                                                  std::to_string(shape.want_logits * vocab) +
                                                  " needed");
  return shape;
}

} // namespace thaw
