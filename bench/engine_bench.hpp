#pragma once
/// `thaw bench engine`: the host forward pass against the machine's own limit, in one run
/// (BENCHMARKS.md). Decoding is bound by memory bandwidth: every step reads all weights once
/// (the embedding table only a row a token, unless the lm_head is tied to it), whatever the
/// batch, so the limit of a decode step is those bytes / read bandwidth, and the bandwidth is
/// measured in the same run by a plain multi-threaded read of the same weight
/// buffer. Reports, per batch size: prefill tokens/s (every sequence's prompt in one forward),
/// decode tokens/s (greedy, one token per sequence per step), and decode steps/s as a fraction
/// of the bandwidth limit. Each figure is the median of `repeats` runs. With a prefix length, also
/// the time to first token with and without a cached prefix (through the step loop). On a GPU
/// (`device` = "cuda") the same figures, against the GPU's own limits.

#include "runtime/common/error.hpp"

#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace thaw::bench {

struct engine_bench_options {
  std::filesystem::path checkpoint;
  int prompt_len = 128;          ///< prompt tokens per sequence
  int gen = 32;                  ///< decode steps
  std::vector<int> batches{1};   ///< batch sizes to measure
  int threads = 2;               ///< compute threads (and readers of the bandwidth reference)
  int repeats = 3;               ///< median over this many runs of each measurement
  /// Prefix reuse through the step loop's radix cache: time to first token of a request whose
  /// prompt is `prefix_len` tokens plus 16 of its own, first with an empty cache, then after
  /// another request with the same prefix finished. 0: not measured.
  int prefix_len = 0;
  /// "host", or "cuda" (GPU 0): then the limit is the GPU's memory bandwidth, measured by a
  /// device-to-device copy of the weights' size, and prefill is also reported in TFLOP/s
  /// against a plain cuBLAS GEMM (`gemm_size` cubed, in the weights' type) measured in the run.
  std::string device = "host";
  int gemm_size = 8192;
  /// Host kernel path (host::kernel_path_name): empty for the default (the best this CPU runs),
  /// or scalar, avx2, avx512, w16_emulated. A path the CPU lacks falls back as set_kernel_path
  /// does; the result names the one used.
  std::string kernels;
};

/// Runs the benchmark; the result is the JSON document `thaw bench engine --json` prints.
[[nodiscard]] expected<nlohmann::json> run_engine_bench(const engine_bench_options& options);

/// A readable table of a result.
[[nodiscard]] std::string format_engine_bench(const nlohmann::json& result);

} // namespace thaw::bench
