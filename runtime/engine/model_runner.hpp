#pragma once
/// The forward pass as the step loop sees it (ARCHITECTURE.md section 6). A model runner owns a
/// model's weights on a device and a paged KV cache of a fixed number of blocks; the step loop
/// owns which block belongs to which sequence (kv_blocks, radix_cache) and hands the runner
/// batches of sequences, each with its block table. The runner never decides anything: it
/// computes (CONVENTIONS.md rule 6).
///
///   step loop --forward(batch of {tokens, start_pos, block_table})--> runner --> logits
///
/// Backends: the host runner (gpu/host kernels, SIMD, threads) and, later, the CUDA runner;
/// both implement this interface, and tests compare each against a plain scalar reference.

#include "runtime/checkpoint/model_config.hpp"
#include "runtime/common/error.hpp"
#include "runtime/engine/sampler.hpp"

#include <cstdint>
#include <span>
#include <string_view>

namespace thaw {

/// Tokens per KV block (ARCHITECTURE.md section 6). Block i of a sequence's block table holds
/// the keys and values of positions [16 i, 16 i + 16).
inline constexpr std::int32_t kv_block_tokens = 16;

/// Blocks needed to hold `tokens` positions.
[[nodiscard]] constexpr std::int32_t kv_blocks_for(std::int64_t tokens) noexcept {
  return static_cast<std::int32_t>((tokens + kv_block_tokens - 1) / kv_block_tokens);
}

/// Bytes of KV cache one block takes for `cfg` (keys and values, every layer) when stored as
/// `bytes_per_element`-byte elements.
[[nodiscard]] std::uint64_t kv_block_bytes(const model_config& cfg,
                                           std::uint64_t bytes_per_element) noexcept;

/// One sequence's share of a forward batch.
struct forward_item {
  /// The tokens to run now: a prefill chunk, or the single token being decoded. Not empty.
  std::span<const std::int32_t> tokens;
  /// Position of tokens[0]. The KV of positions [0, start_pos) is already in the cache (written
  /// by earlier forwards, or shared from another sequence through the prefix cache).
  std::int32_t start_pos = 0;
  /// The sequence's blocks in position order; must cover start_pos + tokens.size() positions.
  /// Blocks holding positions < start_pos may be shared with other items (read only); blocks
  /// written by this item (positions >= start_pos) are not written by any other item.
  std::span<const std::int32_t> block_table;
  /// Produce logits for the last token of `tokens` (the distribution of the next token).
  bool want_logits = false;
};

/// The checks every runner makes before computing anything (forward()'s `invalid_argument`
/// cases, each naming the item): no tokens, a negative start_pos, a token outside the
/// vocabulary, a block table too short or with a block id outside [0, num_blocks), or `logits`
/// smaller than vocab_size floats per item that wants them. Counts the batch's tokens and the
/// items that want logits.
struct forward_shape {
  std::int64_t tokens = 0;
  std::int64_t want_logits = 0;
};
[[nodiscard]] expected<forward_shape> validate_forward(const model_config& cfg,
                                                       std::int32_t num_blocks,
                                                       std::span<const forward_item> batch,
                                                       std::size_t logits_size);

/// The checks every runner makes of a model before building (`invalid_argument`, prefixed by
/// `who`): heads that GQA can map (num_heads a multiple of num_kv_heads, none zero), an even
/// head_dim (RoPE), a positive num_kv_blocks, and RoPE scaling the runners implement (none,
/// "default", "linear", "llama3": host::rope_inv_freq).
[[nodiscard]] status check_runner_config(const model_config& cfg, std::int32_t num_kv_blocks,
                                         std::string_view who);

class model_runner {
public:
  virtual ~model_runner() = default;

  [[nodiscard]] virtual const model_config& config() const noexcept = 0;

  /// Blocks in the KV cache; valid block ids are 0 .. num_kv_blocks() - 1.
  [[nodiscard]] virtual std::int32_t num_kv_blocks() const noexcept = 0;

  /// Runs one step over `batch`: writes the KV of every token of every item at its positions,
  /// attends causally over positions [0, start_pos + i], and for each item with want_logits
  /// writes config().vocab_size floats to `logits`, one row per such item in batch order.
  /// `invalid_argument` (naming the item) for an empty item, a token id outside the vocabulary,
  /// a block id out of range, a block table too short, or `logits` too small; nothing is
  /// computed then. Deterministic: the same batch gives the same logits bit for bit.
  [[nodiscard]] virtual status forward(std::span<const forward_item> batch,
                                       std::span<float> logits) = 0;

  /// Whether forward_sampled is implemented: a runner whose logits live on a device (CUDA)
  /// samples there and sends back tokens instead of vocab_size floats a row.
  [[nodiscard]] virtual bool samples_on_device() const noexcept { return false; }

  /// forward(), then for each item that wants logits, in batch order, the token thaw::sample
  /// would pick from them with params[i] and rngs[i] (the stream before the draw; the caller
  /// advances its own by one draw when temperature > 0), and its logprob when
  /// params[i].logprobs == 0. Top alternatives (logprobs > 0) are not offered: ask forward()
  /// for those. `out[i]` is an error (naming the NaN's index, or every logit -inf) where the
  /// host sampler's would be. `unsupported` unless samples_on_device().
  [[nodiscard]] virtual status forward_sampled(std::span<const forward_item> batch,
                                               std::span<const sampling_params> params,
                                               std::span<const rng_state> rngs,
                                               std::span<expected<sample_result>> out) {
    (void)batch;
    (void)params;
    (void)rngs;
    (void)out;
    return make_error(errc::unsupported, "forward_sampled: this runner samples on the host");
  }
};

} // namespace thaw
