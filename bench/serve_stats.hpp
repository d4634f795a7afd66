#pragma once
/// What `thaw bench serve` measured, request by request, and its summary, with the definitions
/// of vLLM's benchmark_serving.py so the figures compare:
///   TTFT  time from sending the request to the first streamed chunk (an SSE event with choices)
///   TPOT  per request, (e2e - ttft) / (output_tokens - 1); requests with one token are left out
///   ITL   every gap between consecutive chunks, of all requests together
///   E2E   time from sending the request to its last chunk
/// Throughputs divide by the benchmark's wall time (first arrival to the last request's end).
/// Only completed requests count towards the latencies and token totals.

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace thaw::bench {

/// One request as it went.
struct request_record {
  bool ok = false;
  std::string error; ///< why it failed ("HTTP 404: model ...", "connection ...")
  std::string model;
  double scheduled_s = 0; ///< its arrival time in the workload
  double sent_s = 0;      ///< when a client thread sent it (>= scheduled_s)
  /// It arrived while every client thread was busy and --max-concurrency was reached, so it was
  /// sent late: an open-loop result with such requests understates the offered load.
  bool waited_for_thread = false;
  std::int64_t prompt_tokens = 0; ///< the server's usage.prompt_tokens, else the requested length
  std::int64_t output_tokens = 0; ///< usage.completion_tokens, else the number of text chunks
  double ttft_s = 0;
  double e2e_s = 0;
  std::vector<double> itl_s; ///< gaps between consecutive chunks
};

/// mean, median, p90, p99 of one metric, in milliseconds (np.percentile's linear interpolation).
struct metric_summary {
  double mean_ms = 0;
  double median_ms = 0;
  double p90_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  std::size_t count = 0;
};

struct serve_summary {
  std::size_t completed = 0;
  std::size_t failed = 0;
  std::size_t waited_for_thread = 0; ///< requests sent late for want of a client thread
  double max_send_delay_ms = 0;      ///< the largest sent_s - scheduled_s
  double duration_s = 0;
  std::int64_t total_input_tokens = 0;
  std::int64_t total_output_tokens = 0;
  double request_throughput = 0;     ///< completed requests / s
  double output_throughput = 0;      ///< output tokens / s
  double total_token_throughput = 0; ///< (input + output) tokens / s
  metric_summary ttft, tpot, itl, e2e;
  std::vector<std::string> first_errors; ///< up to 5 distinct failure messages
};

/// The p-th percentile (0..100) with linear interpolation between closest ranks, as
/// numpy.percentile by default; 0 for no values.
[[nodiscard]] double percentile(std::vector<double> values, double p);

/// Summary of values given in seconds.
[[nodiscard]] metric_summary summarize_metric(const std::vector<double>& seconds);

/// The summary of a run that took `duration_s` of wall time.
[[nodiscard]] serve_summary summarize(const std::vector<request_record>& records,
                                      double duration_s);

/// The JSON `thaw bench serve --json` prints: vLLM's key names (completed, request_throughput,
/// mean_ttft_ms, p99_itl_ms, ...) plus failed, waited_for_thread and errors.
[[nodiscard]] nlohmann::json to_json(const serve_summary& s);

/// A readable table in the style of benchmark_serving.py's.
[[nodiscard]] std::string format_summary(const serve_summary& s);

} // namespace thaw::bench
