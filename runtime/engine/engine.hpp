#pragma once
/// The step loop (ARCHITECTURE.md section 6): continuous batching over one model runner.
///
/// Each step() decodes every running sequence (one token each) and spends what is left of the
/// token budget on prefill: the rest of a partly prefilled prompt, then new sequences, admitted
/// in arrival order with chunked prefill. A new sequence first takes the longest prefix of its
/// tokens that the radix cache holds. When the KV cache runs out, unreferenced cached prefixes
/// are evicted first, then the youngest running sequence is preempted: its blocks are freed and
/// it waits again, to be recomputed by prefill (its tokens, RNG and stop state are kept, so its
/// output does not change).
///
///   add() --> waiting --admit (prefix lookup, blocks for a chunk)--> running --finish--> gone
///                ^                                                     |
///                +------------------ preempt (youngest) ---------------+
///   cancel() frees a sequence's blocks at once, wherever it is.
///
/// Sequence state:
///   tokens = prompt + generated; `computed` = positions whose KV is in the cache. A step runs
///   tokens[computed, computed + n): n = 1 when decoding, a chunk when (re)filling. When the run
///   reaches the last token, its logits are sampled and the new token appended.
///
/// Not thread-safe: one owner (the model instance actor, `thaw generate`) drives it.

#include "runtime/common/error.hpp"
#include "runtime/engine/model_runner.hpp"
#include "runtime/engine/sampler.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace thaw {

class tokenizer;

/// What a caller asks of one sequence (OpenAI / vLLM semantics).
struct generation_request {
  std::vector<std::int32_t> prompt; ///< token ids; not empty
  sampling_params sampling;
  std::int32_t max_tokens = 16;            ///< tokens to generate at most, >= 1
  std::vector<std::string> stop;           ///< stop strings; need a tokenizer
  std::vector<std::int32_t> stop_token_ids; ///< besides the model's EOS ids
  bool ignore_eos = false;
};

/// Why a sequence ended. Lifecycle enum (CONVENTIONS.md rule 7).
enum class finish_reason : std::uint8_t {
  none = 0, ///< still running
  length,   ///< max_tokens, or the context (or KV capacity) is full
  stop,     ///< an EOS / stop token id, or a stop string
  error,    ///< the runner failed; the event carries the error
};
[[nodiscard]] std::string_view to_string(finish_reason r) noexcept; ///< "length"

using sequence_id = std::uint64_t;

/// One sequence's output of a step: the token it sampled (if any) and the text that became
/// final, or the end of the sequence.
struct sequence_event {
  sequence_id id = 0;
  std::int32_t token = -1; ///< -1: no token this event (an error)
  float logprob = 0.0f;
  std::vector<token_logprob> top;
  std::string text; ///< new final text (stop strings held back or cut); empty without tokenizer
  finish_reason finish = finish_reason::none;
  std::string stop_reason;        ///< the stop string matched, when finish == stop by string
  std::optional<error> failure;   ///< finish == error
  std::int32_t cached_tokens = 0; ///< prompt tokens taken from the prefix cache (first event)
  /// Where this event's token stands among the sequence's generated tokens (0 for the first),
  /// and the sequence's resume state right after it: with the request and the tokens up to
  /// here, enough to build the sequence_state that continues it (failover from a log of
  /// events). -1 / unset on an event without a token.
  std::int32_t index = -1;
  rng_state rng;
  std::string stop_pending;
};

/// Everything needed to continue a sequence in another engine (live migration, failover):
/// importing it rebuilds the KV cache by prefill, and the continuation is token for token what
/// the uninterrupted sequence would have produced.
struct sequence_state {
  generation_request request;          ///< the original request, prompt included
  std::vector<std::int32_t> generated; ///< tokens sampled so far
  rng_state rng;                       ///< the sampler's stream position
  std::string stop_pending;            ///< text the stop matcher holds back (not yet emitted)
  bool stop_stopped = false;
};

/// How import_state queues a sequence.
enum class import_mode : std::uint8_t {
  run,  ///< rebuild the KV cache and go on decoding
  hold, ///< rebuild the KV cache of all tokens but the last, then wait (a migration target):
        ///< update_held() adds the tokens the source generated meanwhile and releases it
};

struct engine_options {
  /// Tokens run per step: decodes first (one each), prefill chunks with the rest.
  std::int32_t max_batch_tokens = 512;
  /// Sequences running at once (decoding or in prefill).
  std::int32_t max_running = 64;
  /// Keep computed prefixes in the radix cache and reuse them.
  bool prefix_cache = true;
  /// Context limit in tokens; 0: the model's max_position_embeddings. Also capped by the KV
  /// cache's capacity, so that a sequence alone always fits.
  std::int32_t max_context = 0;
};

/// Counters for logs, metrics and tests.
struct engine_stats {
  std::int32_t running = 0;
  std::int32_t waiting = 0;
  std::int32_t kv_blocks_free = 0;
  std::int32_t kv_blocks_total = 0;
  std::int32_t cached_blocks = 0;      ///< blocks in the radix cache
  std::int32_t evictable_blocks = 0;   ///< blocks only the radix cache holds (free on demand)
  std::uint64_t steps = 0;
  std::uint64_t preemptions = 0;
  std::uint64_t prefix_hit_tokens = 0; ///< prompt tokens not recomputed thanks to the cache
  std::uint64_t prefilled_tokens = 0;  ///< tokens run through prefill (recompute included)
  std::uint64_t decoded_tokens = 0;
};

class engine {
public:
  /// `runner` (and `tok`, which may be null: no text, no stop strings) must outlive the engine.
  engine(model_runner& runner, const tokenizer* tok, engine_options options = {});
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// Queues a sequence. Checked first, nothing queued on error (`invalid_argument` naming the
  /// field): an empty prompt, a prompt that leaves no room in the context, a token id outside
  /// the vocabulary, invalid sampling parameters, max_tokens < 1, too many stop strings, stop
  /// strings without a tokenizer.
  [[nodiscard]] expected<sequence_id> add(generation_request request);

  /// Drops a sequence at once, freeing its KV blocks; it emits nothing more. `not_found` for an
  /// id that is not queued or running (finished sequences are gone).
  [[nodiscard]] status cancel(sequence_id id);

  /// Runs one step. Returns the events of this step (one per sequence that sampled a token or
  /// ended). A runner failure ends the sequences of the failed batch with finish == error; the
  /// others carry on.
  [[nodiscard]] std::vector<sequence_event> step();

  /// True while some sequence is waiting, or running with tokens to compute (a held sequence
  /// that has caught up needs no steps).
  [[nodiscard]] bool has_work() const noexcept;

  /// The state of a queued or running sequence (`not_found` otherwise). The sequence keeps
  /// running here; cancel it once the destination has it.
  [[nodiscard]] expected<sequence_state> export_state(sequence_id id) const;
  /// Queues a sequence exported by another engine (same model and tokenizer); it is checked as
  /// add() checks a request, plus the generated tokens.
  [[nodiscard]] expected<sequence_id> import_state(sequence_state state,
                                                   import_mode mode = import_mode::run);
  /// A held sequence (import_mode::hold) catches up with `newer`, a later export of the same
  /// sequence: the tokens generated since are appended (and prefilled in later steps). With
  /// `release`, it takes `newer`'s RNG and stop state and decodes from the next step on, its
  /// first event carrying the token after newer.generated. `invalid_argument` when `newer` is
  /// not a continuation of what is held, `not_found` / `invalid_argument` when `id` is not a
  /// held sequence.
  [[nodiscard]] status update_held(sequence_id id, const sequence_state& newer, bool release);
  /// True when held sequence `id` has the KV of all its tokens but the last: a release now
  /// costs one step of the tokens still missing.
  [[nodiscard]] expected<bool> held_caught_up(sequence_id id) const;

  [[nodiscard]] engine_stats stats() const noexcept;
  /// The context limit in effect (see engine_options::max_context).
  [[nodiscard]] std::int32_t max_context() const noexcept;

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

} // namespace thaw
