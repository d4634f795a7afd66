#pragma once
/// The requests `thaw bench serve` sends and when: replayed from a trace (Azure LLM inference
/// trace CSV: TIMESTAMP, ContextTokens, GeneratedTokens) or drawn from a Poisson arrival process,
/// and spread over the models round-robin or weighted by a popularity table (Alibaba's
/// model_id,requests CSV).
///
/// Prompts are text built to be about N tokens long: the word "hello" repeated, one token a word
/// for the Llama 2 tokenizer (and close to it for other BPE vocabularies). It is an
/// approximation; the benchmark reports the server's own prompt_tokens where it sends usage.

#include "runtime/common/error.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace thaw::bench {

/// One request of a workload.
struct serve_request {
  double arrival_s = 0;  ///< when to send it, seconds after the benchmark starts
  int prompt_tokens = 0; ///< approximate prompt length (see make_prompt)
  int output_tokens = 0; ///< max_tokens, generated in full (ignore_eos)
  std::string model;     ///< "" until assign_models
};

struct trace_options {
  std::filesystem::path path;
  /// Arrival times are divided by this: 2 replays the trace twice as fast.
  double time_scale = 1.0;
  /// Lengths above these are capped (a small demo model has a 256-512 token context); 0: no cap.
  int max_prompt_tokens = 0;
  int max_output_tokens = 0;
  /// Only requests arriving (after scaling) before this many seconds; 0: the whole trace.
  double duration_s = 0;
  /// At most this many requests; 0: all.
  std::size_t max_requests = 0;
};

/// Reads an Azure LLM inference trace: timestamps ("2023-11-16 18:17:03.9799600") become arrival
/// times relative to the first row, scaled and sorted; token counts are capped, and kept at
/// least 1. `not_found` when the file is missing; `parse_error` naming the file and line for a
/// bad row or a header without TIMESTAMP, ContextTokens and GeneratedTokens.
[[nodiscard]] expected<std::vector<serve_request>> load_azure_trace(const trace_options& options);

struct poisson_options {
  double rate = 1.0;      ///< requests per second, > 0
  double duration_s = 10; ///< arrivals in [0, duration_s)
  int prompt_tokens = 128;
  int output_tokens = 128;
  std::uint64_t seed = 0; ///< the same seed gives the same arrivals
};

/// Arrivals of a Poisson process: exponential gaps with mean 1/rate. `invalid_argument` for a
/// rate, duration or length that is not positive.
[[nodiscard]] expected<std::vector<serve_request>> poisson_workload(const poisson_options& options);

/// Reads a model popularity table (model_id,requests): the request counts, most popular first.
/// `not_found` / `parse_error` naming the file and line.
[[nodiscard]] expected<std::vector<double>>
load_model_popularity(const std::filesystem::path& path);

/// Gives each request a model. Without weights, round-robin over `models` in order. With
/// weights (most popular first, as load_model_popularity returns them), the i-th model listed
/// gets the i-th weight, and each request draws its model at random with those weights (seeded);
/// models beyond the table's length are never chosen. `invalid_argument` when `models` is empty.
[[nodiscard]] status assign_models(std::vector<serve_request>& requests,
                                   const std::vector<std::string>& models,
                                   const std::vector<double>& weights, std::uint64_t seed);

/// Prompt text of about `tokens` tokens: "hello" repeated `tokens` times, space-separated.
[[nodiscard]] std::string make_prompt(int tokens);

} // namespace thaw::bench
