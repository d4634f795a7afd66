#pragma once
/// The simulator's workload: request arrivals and lengths from an Azure LLM inference trace
/// (TIMESTAMP,ContextTokens,GeneratedTokens), and which model each request is for, drawn from a
/// popularity file (model_id,requests; the Alibaba GenAI one) stretched or cut to M models.

#include "runtime/common/error.hpp"

#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

namespace thaw::sched {

/// One request of the trace, times in seconds from the trace's first request.
struct trace_request {
  double arrival = 0;
  std::int32_t input_tokens = 0;
  std::int32_t output_tokens = 0;
};

/// Reads an Azure trace CSV. A malformed line is an error naming the file and line.
[[nodiscard]] expected<std::vector<trace_request>> load_azure_trace(
    const std::filesystem::path& path);
/// The same from text already in memory (`source` names it in errors).
[[nodiscard]] expected<std::vector<trace_request>> parse_azure_trace(std::string_view text,
                                                                     std::string_view source);

/// Request counts of the popularity file, most popular first.
[[nodiscard]] expected<std::vector<double>> load_popularity(const std::filesystem::path& path);
[[nodiscard]] expected<std::vector<double>> parse_popularity(std::string_view text,
                                                             std::string_view source);

/// Weights for `models` models by rank. Fewer models than the file has: its top ones. More: the
/// file's models, then a Zipf tail (weight ~ rank^-s) whose exponent and scale are fitted by
/// least squares to log(count) over log(rank) of the file. No file (empty): Zipf with s = 1.
[[nodiscard]] std::vector<double> model_weights(const std::vector<double>& popularity,
                                                std::uint32_t models);

/// The exponent the tail fit finds for `popularity` (for reporting).
[[nodiscard]] double fitted_zipf_exponent(const std::vector<double>& popularity);

/// A request the simulator runs: a trace request, rescaled in time, with its model.
struct sim_request {
  double arrival = 0;
  std::uint32_t model = 0;
  std::int32_t input_tokens = 0;
  std::int32_t output_tokens = 0;
};

/// Builds the simulated requests: arrivals divided by `time_scale` (2: twice the rate), the
/// trace repeated end to end until `duration` seconds (<= 0: the trace once), each request's
/// model drawn from `weights` with a generator seeded by `seed`.
[[nodiscard]] std::vector<sim_request> make_requests(const std::vector<trace_request>& trace,
                                                     const std::vector<double>& weights,
                                                     double time_scale, double duration,
                                                     std::uint64_t seed);

} // namespace thaw::sched
