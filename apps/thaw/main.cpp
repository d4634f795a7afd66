// thaw: the serverless LLM inference runtime's one binary. Each subcommand is in cmd_*.cpp.

#include "apps/thaw/commands.hpp"

#include "runtime/common/log.hpp"

#include <cstdio>

int main(int argc, char** argv) {
  CLI::App app{"thaw: a serverless LLM inference runtime"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "thaw 0.1.0");
  thaw::app::add_make_model_command(app);
  thaw::app::add_convert_command(app);
  thaw::app::add_inspect_command(app);
  thaw::app::add_tokenize_command(app);
  thaw::app::add_generate_command(app);
  thaw::app::add_serve_command(app);
  thaw::app::add_cluster_commands(app);
  thaw::app::add_admin_commands(app);
  thaw::app::add_sim_command(app);
  auto* bench = app.add_subcommand("bench", "Benchmarks that print ratios to a reference measured in the same run");
  bench->require_subcommand(1);
  thaw::app::add_bench_load_command(*bench);
  thaw::app::add_bench_engine_command(*bench);
  thaw::app::add_bench_serve_command(*bench);
  thaw::app::add_bench_actors_command(*bench);
  thaw::app::add_bench_ucx_command(*bench);
  thaw::app::add_bench_migrate_command(*bench);
  thaw::app::add_bench_coldstart_command(*bench);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return thaw::app::run_result;
}
