#pragma once
// Each subcommand of `thaw` lives in its own cmd_*.cpp and registers itself on the CLI11 app.
// A subcommand's callback returns the process exit code through `run_result`.

#include "runtime/common/config.hpp"
#include "runtime/common/error.hpp"

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace thaw::app {

/// Options every subcommand shares: --config FILE, --set key=value (repeatable), --log-level.
struct common_options {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string log_level = "info";

  /// The configuration: the file (if given) with the overrides applied.
  [[nodiscard]] expected<config> load_config() const;
};

/// Adds --config, --set and --log-level to a subcommand.
void add_common_options(CLI::App& cmd, common_options& opts);

/// Prints an error the way every subcommand does ("thaw convert: corrupt: ...") and returns the
/// exit code for it (1).
int report_error(const std::string& command, const error& e);

/// The exit code the selected subcommand wants main to return.
inline int run_result = 0;

void add_make_model_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_serve_command(CLI::App& app);
/// head, node and cluster init: cluster mode.
void add_cluster_commands(CLI::App& app);
/// deploy, delete, status, models: clients of a running server.
void add_admin_commands(CLI::App& app);
/// sim: the placement policies on a simulated cluster.
void add_sim_command(CLI::App& app);
void add_bench_load_command(CLI::App& bench);
void add_bench_engine_command(CLI::App& bench);
void add_bench_serve_command(CLI::App& bench);
void add_bench_actors_command(CLI::App& bench);
void add_bench_ucx_command(CLI::App& bench);
void add_bench_migrate_command(CLI::App& bench);
void add_bench_coldstart_command(CLI::App& bench);

} // namespace thaw::app
