#pragma once
/// `thaw bench coldstart`: a model's cold-start time to first token against issue 5's target,
///
///     TTFT(cold start from the DRAM tier) <= 1.2 x (model bytes / DRAM-to-device bandwidth)
///                                            + prefill time,
///
/// every term measured in the same run on this machine:
///   - the DRAM-to-device bandwidth: a loader of the server's settings loads the checkpoint once
///     from SSD (O_DIRECT), then again `repetitions` times from its DRAM tier; the median of
///     those plain loads, bytes over the time the load handle took (the loader's own figure);
///   - the prefill time: TTFT of the bench prompt on an instance that is already running (it
///     includes the serving path: HTTP, gateway, router; the target then allows for it too);
///   - the cold-start TTFT from DRAM: an in-process embedded server (one CPU node) serves the
///     model with keep_alive 0, so each instance stops once idle; each repetition waits until
///     the model has no instance, then times a streamed request. The median is compared.
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
  int repetitions = 5;     ///< cold starts from DRAM (and DRAM loads, warm requests) timed
  int prompt_words = 48;   ///< the bench prompt: this many words of a fixed sentence
  int max_tokens = 4;      ///< tokens asked of each request (TTFT is the first)
  int threads = 2;         ///< compute threads per instance (node.threads)
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
