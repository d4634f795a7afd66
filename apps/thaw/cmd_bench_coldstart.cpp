// thaw bench coldstart [--model CKPT]: cold-start TTFT from the DRAM tier against issue 5's
// target, 1.2 x (model bytes / DRAM-to-device bandwidth) + prefill (bench/coldstart_bench.hpp).

#include "apps/thaw/commands.hpp"

#include "bench/coldstart_bench.hpp"
#include "runtime/checkpoint/importer.hpp"
#include "runtime/checkpoint/make_model.hpp"
#include "runtime/common/log.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <spdlog/spdlog.h>

namespace thaw::app {
namespace {

struct bench_coldstart_args {
  common_options common;
  bench::coldstart_options o;
  bool json = false;
};

/// A stories15m-shaped f32 checkpoint (random weights, the bundled llama2 tokenizer) in a new
/// directory under the system's temporary directory.
expected<std::filesystem::path> make_default_model() {
  auto tmpl = (std::filesystem::temp_directory_path() / "thaw-coldstart-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr)
    return make_error(errc::io_error, "cannot create a directory like " + tmpl);
  const std::filesystem::path dir{tmpl};
  make_model_options mo;
  mo.preset = "stories15m";
  mo.type = dtype::f32;
  mo.tokenizer_json =
      std::filesystem::path{THAW_ASSETS_DIR} / "tokenizers" / "llama2" / "tokenizer.json";
  THAW_TRY(make_model(dir / "hf", mo));
  THAW_TRY(import_hf(dir / "hf", dir / "ck", import_options{}));
  return dir;
}

int run_bench_coldstart(bench_coldstart_args& a) {
  if (auto s = init_logging(a.common.log_level); !s)
    return report_error("bench coldstart", s.err());
  std::filesystem::path made;
  if (a.o.checkpoint.empty()) {
    auto dir = make_default_model();
    if (!dir)
      return report_error("bench coldstart", dir.err());
    made = *dir;
    a.o.checkpoint = (made / "ck").string();
  }
  a.o.log = [](const std::string& line) { spdlog::info("bench coldstart: {}", line); };
  auto r = bench::run_coldstart_bench(a.o);
  if (!made.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(made, ec);
  }
  if (!r)
    return report_error("bench coldstart", r.err());
  if (a.json)
    std::printf("%s\n", r->dump(2).c_str());
  else
    std::printf("%s", bench::format_coldstart_bench(*r).c_str());
  return 0;
}

} // namespace

void add_bench_coldstart_command(CLI::App& bench) {
  auto a = std::make_shared<bench_coldstart_args>();
  auto* cmd = bench.add_subcommand(
      "coldstart", "Cold-start TTFT from the DRAM tier against 1.2 x load time + prefill");
  cmd->add_option("--model", a->o.checkpoint,
                  "Checkpoint directory (default: a stories15m-shaped f32 model, made and removed)");
  cmd->add_option("--repetitions", a->o.repetitions, "Cold starts (and loads, warm requests) timed")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_option("--prompt-words", a->o.prompt_words, "Words in the bench prompt")
      ->check(CLI::Range(1, 2000))
      ->capture_default_str();
  cmd->add_option("--max-tokens", a->o.max_tokens, "Tokens each request asks for")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--threads", a->o.threads, "Compute threads of the node (one CPU slot)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print JSON");
  add_common_options(*cmd, a->common);
  cmd->callback([a] { run_result = run_bench_coldstart(*a); });
}

} // namespace thaw::app
