// thaw bench migrate: the client-visible pause of a live migration (bench/migrate_bench.hpp).

#include "apps/thaw/commands.hpp"

#include "bench/migrate_bench.hpp"
#include "runtime/common/log.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace thaw::app {

void add_bench_migrate_command(CLI::App& bench) {
  struct args {
    common_options common;
    bench::migrate_bench_options o;
    bool json = false;
  };
  auto a = std::make_shared<args>();
  auto* cmd = bench.add_subcommand(
      "migrate", "Pause of a live migration between two nodes, in decode steps");
  cmd->add_option("CKPT", a->o.checkpoint, "Checkpoint directory")->required();
  cmd->add_option("--tokens", a->o.tokens, "Tokens a stream")
      ->check(CLI::Range(2, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--warmup", a->o.warmup, "Tokens streamed before migrating")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--repeats", a->o.repeats, "Migrations")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--threads", a->o.threads, "Compute threads of the node (one CPU slot)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--max-gap", a->o.max_gap, "Tokens the target may lag at the handoff")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print JSON");
  add_common_options(*cmd, a->common);
  cmd->callback([a] {
    if (auto s = init_logging(a->common.log_level == "info" ? "warn" : a->common.log_level); !s) {
      run_result = report_error("bench migrate", s.err());
      return;
    }
    auto r = bench::run_migrate_bench(a->o);
    if (!r) {
      run_result = report_error("bench migrate", r.err());
      return;
    }
    if (a->json)
      std::printf("%s\n", r->dump(2).c_str());
    else
      std::printf("%s", bench::format_migrate_bench(*r).c_str());
    run_result = 0;
  });
}

} // namespace thaw::app
