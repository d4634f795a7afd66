// thaw bench engine CKPT: the host forward pass against the machine's memory-bandwidth limit
// (bench/engine_bench.hpp).

#include "apps/thaw/commands.hpp"

#include "bench/engine_bench.hpp"
#include "runtime/common/log.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace thaw::app {
namespace {

struct bench_engine_args {
  common_options common;
  bench::engine_bench_options o;
  bool json = false;
};

int run_bench_engine(bench_engine_args& a) {
  if (auto s = init_logging(a.common.log_level); !s)
    return report_error("bench engine", s.err());
  auto result = bench::run_engine_bench(a.o);
  if (!result)
    return report_error("bench engine", result.err());
  if (a.json)
    std::printf("%s\n", result->dump(2).c_str());
  else
    std::printf("%s", bench::format_engine_bench(*result).c_str());
  return 0;
}

} // namespace

void add_bench_engine_command(CLI::App& bench) {
  auto a = std::make_shared<bench_engine_args>();
  auto* cmd = bench.add_subcommand(
      "engine", "Prefill and decode tokens/s of the forward pass, against memory bandwidth");
  cmd->add_option("CKPT", a->o.checkpoint, "Checkpoint directory")->required();
  cmd->add_option("--prompt-len", a->o.prompt_len, "Prompt tokens per sequence")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--gen", a->o.gen, "Decode steps")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--batch", a->o.batches, "Batch sizes: --batch 1,8,32")
      ->delimiter(',')
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--threads", a->o.threads, "Compute threads")->check(CLI::Range(1, 256))->capture_default_str();
  cmd->add_option("--repeats", a->o.repeats, "Runs per figure (median)")->check(CLI::Range(1, 100))->capture_default_str();
  cmd->add_option("--prefix-len", a->o.prefix_len,
                  "Also time the first token with a cached prefix of this many tokens (0: skip)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--device", a->o.device, "host, or cuda (GPU 0)")
      ->check(CLI::IsMember({"host", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--gemm-size", a->o.gemm_size, "GPU: side of the reference cuBLAS GEMM")
      ->check(CLI::Range(256, 32768))
      ->capture_default_str();
  cmd->add_option("--kernels", a->o.kernels,
                  "Host kernel path (default: the best this CPU runs); w16_emulated is the "
                  "avx512 path's code on AVX2, a test path")
      ->check(CLI::IsMember({"scalar", "avx2", "avx512", "w16_emulated"}));
  cmd->add_flag("--json", a->json, "Print JSON");
  add_common_options(*cmd, a->common);
  cmd->callback([a] { run_result = run_bench_engine(*a); });
}

} // namespace thaw::app
