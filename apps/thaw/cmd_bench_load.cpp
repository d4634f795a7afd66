// thaw bench load CKPT: the loader against the machine's own limits (bench/load_bench.hpp).

#include "apps/thaw/commands.hpp"

#include "bench/load_bench.hpp"
#include "runtime/common/log.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace thaw::app {
namespace {

struct bench_load_args {
  common_options common;
  std::string checkpoint;
  std::string source;
  std::string work_dir;
  std::string device = "host";
  int copies = 3;
  int rounds = 0;
  bool json = false;
  bool keep_copies = false;
};

int run_bench_load(const bench_load_args& a) {
  if (auto s = init_logging(a.common.log_level); !s)
    return report_error("bench load", s.err());
  auto cfg = a.common.load_config();
  if (!cfg)
    return report_error("bench load", cfg.err());
  auto lopt = loader_options::from_config(*cfg);
  if (!lopt)
    return report_error("bench load", lopt.err());
  bench::load_bench_options o;
  o.checkpoint = a.checkpoint;
  o.source_hf = a.source;
  o.copies = a.copies;
  o.rounds = a.rounds;
  o.work_dir = a.work_dir;
  o.keep_copies = a.keep_copies;
  o.device = a.device;
  o.loader = *lopt;
  o.log = [](const std::string& line) { std::fprintf(stderr, "bench load: %s\n", line.c_str()); };
  auto result = bench::run_load_bench(o);
  if (!result)
    return report_error("bench load", result.err());
  if (a.json)
    std::printf("%s\n", result->dump(2).c_str());
  else
    std::printf("%s", bench::format_load_bench(*result).c_str());
  return 0;
}

} // namespace

void add_bench_load_command(CLI::App& bench) {
  auto args = std::make_shared<bench_load_args>();
  auto* cmd = bench.add_subcommand("load", "Cold and DRAM-tier loads against raw O_DIRECT, buffered, mmap and memcpy");
  cmd->add_option("CKPT", args->checkpoint, "Checkpoint directory")->required();
  cmd->add_option("--source", args->source, "The Hugging Face directory it came from (mmap load of its safetensors)");
  cmd->add_option("--copies", args->copies, "Distinct copies read in turn, so reads are cold")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--rounds", args->rounds, "Rounds (default: one per copy)")->check(CLI::Range(0, 100));
  cmd->add_option("--work-dir", args->work_dir, "Where the copies go (default: beside CKPT)");
  cmd->add_option("--device", args->device,
                  "Where the loader puts the model: host, or cuda (GPU 0, against cudaMemcpy)")
      ->check(CLI::IsMember({"host", "cuda"}))
      ->capture_default_str();
  cmd->add_flag("--keep-copies", args->keep_copies, "Keep the copies for the next run");
  cmd->add_flag("--json", args->json, "Print JSON");
  add_common_options(*cmd, args->common);
  cmd->callback([args] { run_result = run_bench_load(*args); });
}

} // namespace thaw::app
