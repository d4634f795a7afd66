#pragma once
/// Token sampling (ARCHITECTURE.md section 6): greedy, temperature, top-k, top-p, min-p, with a
/// per-sequence counter-based random stream, and the log-probabilities a caller asks for.
///
/// The stream is counter based (the n-th uniform is a hash of (seed, n)), so a seeded sequence
/// draws the same numbers whatever else is batched with it, and its whole state is two integers
/// that sequence export/import carry to another engine.

#include "runtime/common/error.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace thaw {

/// Per-request sampling parameters (OpenAI / vLLM semantics).
struct sampling_params {
  float temperature = 1.0f;   ///< 0: greedy (argmax; ties go to the lowest id)
  std::int32_t top_k = 0;     ///< 0 or -1: off; else keep the k most likely
  float top_p = 1.0f;         ///< (0, 1]: keep the smallest head whose mass reaches top_p
  float min_p = 0.0f;         ///< [0, 1]: drop tokens with p < min_p * p_max; 0: off
  std::uint64_t seed = 0;     ///< the random stream of this request
  std::int32_t logprobs = -1; ///< -1: none; 0: the chosen token's; n > 0: plus the top n (<= 20)

  static constexpr std::int32_t max_logprobs = 20;

  /// `invalid_argument` naming the field: temperature negative or not finite, top_p outside
  /// (0, 1], top_k < -1, min_p outside [0, 1], logprobs outside [-1, 20].
  [[nodiscard]] status validate() const;
};

/// A counter-based random stream: draw n depends only on (seed, n).
struct rng_state {
  std::uint64_t seed = 0;
  std::uint64_t counter = 0; ///< draws made so far

  /// The next uniform in [0, 1) with 53 random bits; advances the counter by one.
  [[nodiscard]] double next_uniform() noexcept;
  bool operator==(const rng_state&) const = default;
};

struct token_logprob {
  std::int32_t id = -1;
  float logprob = 0.0f;
  bool operator==(const token_logprob&) const = default;
};

struct sample_result {
  std::int32_t token = -1;
  /// log softmax of the raw logits (temperature 1, nothing filtered), as vLLM reports by
  /// default; computed only when params.logprobs >= 0, else 0.
  float logprob = 0.0f;
  /// The params.logprobs most likely tokens by raw logprob, descending; empty when logprobs <= 0.
  std::vector<token_logprob> top;
};

/// Samples one token from `logits` (vocab_size floats). Exactly one draw from `rng` when
/// temperature > 0, none when greedy, so the counter is a function of the tokens sampled.
/// `invalid_argument` for empty logits, invalid params, or a NaN logit (naming its index: a
/// broken model must not silently produce garbage); +/-inf logits are allowed.
[[nodiscard]] expected<sample_result> sample(std::span<const float> logits,
                                             const sampling_params& params, rng_state& rng);

} // namespace thaw
