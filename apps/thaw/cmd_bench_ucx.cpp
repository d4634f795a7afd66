// thaw bench ucx: the UCX data plane against plain ucp_get_nbx between two processes
// (bench/ucx_bench.hpp).

#include "apps/thaw/commands.hpp"

#include "bench/ucx_bench.hpp"
#include "runtime/common/log.hpp"
#include "runtime/common/units.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace thaw::app {
namespace {

struct bench_ucx_args {
  common_options common;
  std::string bytes = "512MiB";
  std::string segment = "16MiB";
  std::string piece = "4MiB";
  std::string raw_piece = "64MiB";
  std::size_t in_flight = 8;
  int rounds = 5;
  bool json = false;
  bool skip_registered = false;
  std::string checkpoint;
};

int run_bench_ucx(const bench_ucx_args& a) {
  if (auto s = init_logging(a.common.log_level); !s)
    return report_error("bench ucx", s.err());
  bench::ucx_bench_options o;
  for (auto [text, field, out] : {std::tuple{&a.bytes, "--bytes", &o.bytes},
                                  std::tuple{&a.segment, "--segment", &o.segment_bytes},
                                  std::tuple{&a.piece, "--piece", &o.piece_bytes},
                                  std::tuple{&a.raw_piece, "--raw-piece", &o.raw_piece_bytes}}) {
    auto n = parse_bytes(*text);
    if (!n)
      return report_error("bench ucx", with_context(n.err(), field));
    *out = *n;
  }
  o.pieces_in_flight = a.in_flight;
  o.rounds = a.rounds;
  o.registered = !a.skip_registered;
  o.checkpoint = a.checkpoint;
  o.log = [](const std::string& line) { std::fprintf(stderr, "bench ucx: %s\n", line.c_str()); };
  auto result = bench::run_ucx_bench(o);
  if (!result)
    return report_error("bench ucx", result.err());
  if (a.json)
    std::printf("%s\n", result->dump(2).c_str());
  else
    std::printf("%s", bench::format_ucx_bench(*result).c_str());
  return 0;
}

} // namespace

void add_bench_ucx_command(CLI::App& bench) {
  auto args = std::make_shared<bench_ucx_args>();
  auto* cmd = bench.add_subcommand(
      "ucx", "data_plane::fetch between two processes against plain ucp_get_nbx of the same bytes");
  cmd->add_option("--bytes", args->bytes, "Size of the published region")->capture_default_str();
  cmd->add_option("--segment", args->segment, "Published segment size")->capture_default_str();
  cmd->add_option("--piece", args->piece, "Bytes per data-plane get")->capture_default_str();
  cmd->add_option("--in-flight", args->in_flight, "Data-plane gets outstanding")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--raw-piece", args->raw_piece, "Bytes per raw get")->capture_default_str();
  cmd->add_option("--rounds", args->rounds, "Rounds; medians are reported")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_flag("--skip-registered", args->skip_registered,
                "Skip the fetch of malloc'd, registered memory (UCX-emulated gets, slow)");
  cmd->add_option("--checkpoint", args->checkpoint,
                  "Also pull this checkpoint through the remote tier (loader::pull from the other "
                  "process's DRAM tier)");
  cmd->add_flag("--json", args->json, "Print JSON");
  add_common_options(*cmd, args->common);
  cmd->callback([args] { run_result = run_bench_ucx(*args); });
}

} // namespace thaw::app
