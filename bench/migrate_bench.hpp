#pragma once
/// thaw bench migrate: the client-visible cost of a live migration (ARCHITECTURE.md section 3;
/// issue target: a pause of at most two decode steps).
///
/// One process runs a head and two nodes (real middleman connections on loopback, one actor
/// system each). A greedy stream is run once without migration (the reference: its text and its
/// inter-token gaps); then, `repeats` times, the same stream is started and, after `warmup`
/// tokens, its model is migrated to the other node. Reported per run and as medians: the
/// router's pause (the source's last token to the target's first, thaw_migration_pause_seconds),
/// the largest gap the client saw, the stream's median inter-token gap, the pause in decode
/// steps (pause / median gap), rounds and recomputed tokens, and whether the text equals the
/// reference.

#include "runtime/common/error.hpp"

#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <string>

namespace thaw::bench {

struct migrate_bench_options {
  std::filesystem::path checkpoint;
  int tokens = 200;   ///< tokens per stream (prompt + tokens within the model's context)
  int warmup = 40;    ///< tokens streamed before the migration is asked for
  int repeats = 5;
  int threads = 1;    ///< compute threads per instance
  int max_gap = 1;    ///< the migration's max_gap
};

[[nodiscard]] expected<nlohmann::json> run_migrate_bench(const migrate_bench_options& options);
[[nodiscard]] std::string format_migrate_bench(const nlohmann::json& result);

} // namespace thaw::bench
