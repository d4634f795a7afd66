// thaw bench serve: open-loop load against an OpenAI-compatible server, from a trace or a
// Poisson rate, reporting throughput and TTFT/TPOT/ITL/E2E as vLLM's serving benchmark does
// (bench/serve_bench.hpp).

#include "apps/thaw/commands.hpp"

#include "bench/serve_bench.hpp"
#include "runtime/common/log.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace thaw::app {
namespace {

struct bench_serve_args {
  common_options common;
  bench::serve_bench_options o;
  std::string trace;
  double rate = 0;
  double duration = 0;
  double time_scale = 1.0;
  std::size_t num_requests = 0;
  int prompt_tokens = 128;
  int output_tokens = 128;
  int max_prompt_tokens = 0;
  int max_output_tokens = 0;
  std::uint64_t seed = 0;
  std::vector<std::string> models;
  std::string popularity;
  bool json = false;
};

expected<std::vector<bench::serve_request>> make_workload(bench_serve_args& a) {
  std::vector<bench::serve_request> work;
  if (!a.trace.empty()) {
    THAW_ASSIGN(work, bench::load_azure_trace({.path = a.trace,
                                               .time_scale = a.time_scale,
                                               .max_prompt_tokens = a.max_prompt_tokens,
                                               .max_output_tokens = a.max_output_tokens,
                                               .duration_s = a.duration,
                                               .max_requests = a.num_requests}));
  } else {
    if (a.duration <= 0)
      return make_error(errc::invalid_argument, "--rate needs --duration SECONDS");
    THAW_ASSIGN(work, bench::poisson_workload({.rate = a.rate,
                                               .duration_s = a.duration,
                                               .prompt_tokens = a.prompt_tokens,
                                               .output_tokens = a.output_tokens,
                                               .seed = a.seed}));
    if (a.num_requests > 0 && work.size() > a.num_requests)
      work.resize(a.num_requests);
  }
  if (work.empty())
    return make_error(errc::invalid_argument,
                      "the workload has no requests; raise --duration or --rate");
  if (a.models.empty()) {
    // As vLLM's benchmark does without --model: whatever the server serves.
    THAW_ASSIGN(a.models, bench::list_models(a.o));
  }
  std::vector<double> weights;
  if (!a.popularity.empty()) {
    THAW_ASSIGN(weights, bench::load_model_popularity(a.popularity));
  }
  THAW_TRY(bench::assign_models(work, a.models, weights, a.seed));
  return work;
}

int run_bench_serve(bench_serve_args& a) {
  if (auto s = init_logging(a.common.log_level); !s)
    return report_error("bench serve", s.err());
  auto work = make_workload(a);
  if (!work)
    return report_error("bench serve", work.err());
  spdlog::info("bench serve: {} requests over {:.1f}s to {} ({} model{})", work->size(),
               work->back().arrival_s, a.o.url, a.models.size(), a.models.size() == 1 ? "" : "s");
  a.o.on_all_sent = [] {
    spdlog::info("bench serve: all requests sent, waiting for the last responses");
  };
  auto run = bench::run_serve_bench(*work, a.o);
  if (!run)
    return report_error("bench serve", run.err());
  const auto summary = bench::summarize(run->records, run->duration_s);
  if (a.json) {
    auto j = bench::to_json(summary);
    j["url"] = a.o.url;
    j["workload"] = a.trace.empty() ? nlohmann::json{{"rate", a.rate},
                                                     {"duration", a.duration},
                                                     {"prompt_tokens", a.prompt_tokens},
                                                     {"output_tokens", a.output_tokens},
                                                     {"seed", a.seed}}
                                    : nlohmann::json{{"trace", a.trace},
                                                     {"time_scale", a.time_scale},
                                                     {"max_prompt_tokens", a.max_prompt_tokens},
                                                     {"max_output_tokens", a.max_output_tokens}};
    j["num_requests"] = work->size();
    j["models"] = a.models;
    j["client_threads"] = run->threads;
    j["max_concurrency"] = a.o.max_concurrency;
    // A server's error message may hold bytes that are not UTF-8: replace them, never throw.
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("%s", bench::format_summary(summary).c_str());
  }
  if (summary.completed == 0)
    return report_error("bench serve", make_error(errc::io_error, "every request failed"));
  return 0;
}

} // namespace

void add_bench_serve_command(CLI::App& bench) {
  auto a = std::make_shared<bench_serve_args>();
  auto* cmd = bench.add_subcommand(
      "serve", "Open-loop load on an OpenAI-compatible server: throughput, TTFT, TPOT, ITL, E2E");
  cmd->add_option("--url", a->o.url, "Server address")->capture_default_str();
  auto* trace =
      cmd->add_option("--trace", a->trace,
                      "Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens)");
  auto* rate = cmd->add_option("--rate", a->rate, "Poisson arrivals, requests per second")
                   ->check(CLI::PositiveNumber);
  trace->excludes(rate);
  rate->excludes(trace);
  cmd->add_option("--duration", a->duration,
                  "Seconds of arrivals (--rate: required; --trace: cut the trace, 0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--num-requests", a->num_requests, "At most this many requests (0 = no limit)");
  cmd->add_option("--time-scale", a->time_scale, "Replay the trace this many times faster")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--prompt-tokens", a->prompt_tokens, "--rate: prompt length (approximate tokens)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--output-tokens", a->output_tokens, "--rate: tokens to generate")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--max-prompt-tokens", a->max_prompt_tokens,
                  "--trace: cap prompt lengths (0 = none)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--max-output-tokens", a->max_output_tokens,
                  "--trace: cap output lengths (0 = none)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--models", a->models, "Models, round-robin (default: all the server lists)")
      ->delimiter(',');
  cmd->add_option("--model-popularity", a->popularity,
                  "Weights for --models, most popular first (model_id,requests CSV)");
  cmd->add_option("--seed", a->seed, "Seed of the arrivals and the model draw")
      ->capture_default_str();
  cmd->add_option("--max-concurrency", a->o.max_concurrency,
                  "Client threads at most; requests beyond wait and are counted")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  cmd->add_option("--api-key", a->o.api_key, "Sent as Authorization: Bearer KEY");
  cmd->add_flag("--json", a->json, "Print JSON (vLLM's key names)");
  add_common_options(*cmd, a->common);
  cmd->callback([a, cmd] {
    if (cmd->count("--trace") == 0 && cmd->count("--rate") == 0) {
      run_result = report_error(
          "bench serve", make_error(errc::invalid_argument, "give --trace FILE or --rate R"));
      return;
    }
    run_result = run_bench_serve(*a);
  });
}

} // namespace thaw::app
