#pragma once
/// `thaw bench actors`: what the actor path (HTTP edge, gateway, router, instance) costs, in one
/// run (BENCHMARKS.md: a reference measured in the same run).
///  - Time to first token: the engine alone (add a request, step until its first token) against
///    the same request through `thaw serve`'s embedded server over HTTP on loopback (streamed;
///    the first SSE chunk). Rounds alternate between the two; each figure is the median over
///    rounds of each round's p50. The difference is what the actors, HTTP, JSON and
///    tokenization add.
///  - Throughput: short non-streaming completions (max_tokens 1) from `clients` keep-alive
///    connections for `seconds`, as requests/s, beside the engine alone's rate for the same
///    requests one at a time.

#include "runtime/common/error.hpp"

#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace thaw::bench {

struct actor_bench_options {
  std::filesystem::path checkpoint;
  int prompt_words = 8;   ///< prompt: this many words ("hello hello ...")
  int requests = 200;     ///< TTFT samples per round and path
  int rounds = 3;
  int clients = 8;        ///< throughput: concurrent connections
  double seconds = 3.0;   ///< throughput: duration
  int threads = 1;        ///< compute threads of the instance (and of the engine alone)
};

[[nodiscard]] expected<nlohmann::json> run_actor_bench(const actor_bench_options& options);
[[nodiscard]] std::string format_actor_bench(const nlohmann::json& result);

} // namespace thaw::bench
