#pragma once
/// `thaw bench coldstart`: a model's cold-start time to first token against issue 5's target,
///
///     TTFT(cold start from the DRAM tier) <= 1.2 x (model bytes / DRAM-to-device bandwidth)
///                                            + prefill time,
///
/// every term measured in the same run on this machine, in paired rounds so that a slow spell
/// of a shared machine hits all three alike. Each round:
///   - the DRAM-to-device bandwidth: a loader of the server's settings, outside the server, loads
///     the checkpoint from its DRAM tier (after one load from SSD, O_DIRECT), timed from load()
///     until the buffer is whole;
///   - the cold-start TTFT from DRAM: in-process embedded servers (one CPU node each) serve the
///     model with keep_alive 0, so each instance stops once idle; the round waits until the
///     model has no instance, then times a streamed request. One server runs a cold instance on
///     the DRAM tier's own bytes (loader::map, a CPU node's default), the other copies them into
///     a buffer of the instance's (loader.map_weights off, as a GPU node must); the target is
///     judged on the first, the second is reported beside it;
///   - the prefill time: the same request's TTFT on a second deployment, kept running in the
///     copying server on bytes of its own (it includes the serving path: HTTP, gateway, router;
///     the target then allows for it too).
/// Prompts differ between rounds in their first tokens, so no prefix cache shortens a prefill.
/// The medians are compared; the median of the rounds' (cold - warm) / load is reported beside.
/// The first start of the model in the server reads it from SSD: its TTFT is reported too.
/// The loader reads with O_DIRECT, so that read bypasses the page cache (dropping the cache
/// itself needs root, which the bench does not assume); a file system that refuses O_DIRECT
/// is read through the page cache, and the loader logs it.

#include "runtime/common/error.hpp"

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace thaw::bench {

struct coldstart_options {
  std::string checkpoint;  ///< a thaw checkpoint directory
  int repetitions = 5;     ///< rounds: a DRAM load, a cold start from DRAM, a warm request
  int prompt_words = 48;   ///< the bench prompt: this many words of a fixed sentence
  int max_tokens = 4;      ///< tokens asked of each request (TTFT is the first)
  int threads = 2;         ///< compute threads of the server's node (node.threads)
  /// Progress lines; may be empty.
  std::function<void(const std::string&)> log;
};

/// Runs the bench. Errors: the checkpoint's, the server's, or a request that failed (naming
/// which). The JSON holds every figure (seconds, bytes, bytes/s) and `ratio`, TTFT over
/// (bytes / bandwidth + prefill), against `target_ratio` 1.2.
[[nodiscard]] expected<nlohmann::json> run_coldstart_bench(const coldstart_options& options);

/// The result as a few lines of text.
[[nodiscard]] std::string format_coldstart_bench(const nlohmann::json& result);

} // namespace thaw::bench
