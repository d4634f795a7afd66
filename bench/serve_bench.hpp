#pragma once
/// `thaw bench serve`: an open-loop serving benchmark in the manner of vLLM's
/// benchmark_serving.py. A dispatcher sends each request of a workload at its arrival time,
/// whether or not earlier ones have finished, as streamed `POST /v1/completions` calls
/// (ignore_eos, temperature 0, usage included), and times every streamed chunk.
///
/// Requests are handed to a pool of client threads, each with its own keep-alive connection.
/// The pool grows by a thread whenever a request arrives and none is free, up to
/// max_concurrency; past that a request waits for a thread, is marked waited_for_thread, and the
/// summary counts it, since such a run no longer offers the load the workload describes.

#include "bench/serve_stats.hpp"
#include "bench/serve_workload.hpp"
#include "runtime/common/error.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace thaw::bench {

struct serve_bench_options {
  std::string url = "http://127.0.0.1:8000"; ///< the server, "http://host:port"
  std::size_t max_concurrency = 256;         ///< client threads (requests in flight) at most
  std::string api_key;                       ///< sent as "Authorization: Bearer ..." if set
  std::chrono::milliseconds timeout = std::chrono::minutes(5); ///< connect and read timeout
  /// Called on the dispatcher once every request has been handed to a client thread, before
  /// the last responses are awaited (the command logs it); may be empty.
  std::function<void()> on_all_sent;
};

struct serve_run {
  std::vector<request_record> records; ///< in the workload's order
  double duration_s = 0;               ///< from the start to the last request's end
  std::size_t threads = 0;             ///< client threads the run needed
};

/// Runs `requests` (sorted by arrival; each with a model) against the server.
/// `invalid_argument` for a bad URL, an empty workload or max_concurrency 0. Failed requests are
/// not errors: they are records with ok = false.
[[nodiscard]] expected<serve_run> run_serve_bench(const std::vector<serve_request>& requests,
                                                  const serve_bench_options& options);

/// The JSON body of one request: {"model","prompt","max_tokens","stream":true,
/// "stream_options":{"include_usage":true},"ignore_eos":true,"temperature":0}.
[[nodiscard]] std::string completion_body(const serve_request& request);

/// The model names the server lists at GET /v1/models, in its order.
[[nodiscard]] expected<std::vector<std::string>> list_models(const serve_bench_options& options);

} // namespace thaw::bench
