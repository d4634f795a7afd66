// thaw bench actors: what the actor path and the HTTP edge add to the engine alone
// (bench/actor_bench.hpp).

#include "apps/thaw/commands.hpp"

#include "bench/actor_bench.hpp"
#include "runtime/common/log.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace thaw::app {
namespace {

struct bench_actors_args {
  common_options common;
  bench::actor_bench_options o;
  bool json = false;
};

int run_bench_actors(const bench_actors_args& a) {
  // The server logs at warn: its per-request lines would be measured too.
  if (auto s = init_logging(a.common.log_level == "info" ? "warn" : a.common.log_level); !s)
    return report_error("bench actors", s.err());
  auto r = bench::run_actor_bench(a.o);
  if (!r)
    return report_error("bench actors", r.err());
  if (a.json)
    std::printf("%s\n", r->dump(2).c_str());
  else
    std::printf("%s", bench::format_actor_bench(*r).c_str());
  return 0;
}

} // namespace

void add_bench_actors_command(CLI::App& bench) {
  auto a = std::make_shared<bench_actors_args>();
  auto* cmd = bench.add_subcommand(
      "actors", "Time to first token and request rate through HTTP and the actors, against the "
                "engine alone");
  cmd->add_option("CKPT", a->o.checkpoint, "Checkpoint directory")->required();
  cmd->add_option("--prompt-words", a->o.prompt_words, "Prompt length in words")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  cmd->add_option("--requests", a->o.requests, "TTFT samples per round and path")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--rounds", a->o.rounds, "Alternating rounds (median)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_option("--clients", a->o.clients, "Throughput: concurrent connections")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_option("--seconds", a->o.seconds, "Throughput: duration")->capture_default_str();
  cmd->add_option("--threads", a->o.threads, "Compute threads")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print JSON");
  add_common_options(*cmd, a->common);
  cmd->callback([a] { run_result = run_bench_actors(*a); });
}

} // namespace thaw::app
