// thaw make-model --preset NAME --tokenizer TOKENIZER_JSON --seed N OUT_DIR: writes a
// deterministic random model in Hugging Face layout, for tests, demos and benchmarks.

#include "apps/thaw/commands.hpp"

#include "runtime/checkpoint/make_model.hpp"
#include "runtime/common/log.hpp"
#include "runtime/common/posix.hpp"
#include "runtime/common/progress.hpp"
#include "runtime/common/units.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>

namespace thaw::app {
namespace {

std::atomic<bool> g_cancel{false};

extern "C" void make_model_on_interrupt(int) { g_cancel.store(true); }

struct make_model_args {
  common_options common;
  std::string preset;
  std::string tokenizer;
  std::uint64_t seed = 0;
  std::string dtype_name = "bf16";
  std::string max_shard_size = "5GB";
  std::string out_dir;
};

constexpr const char* bundled_tokenizer = "tokenizers/llama2/tokenizer.json";

/// `--tokenizer llama2` means the Llama 2 tokenizer shipped in assets/: found through
/// THAW_ASSET_DIR, or beside the binary (build/apps/thaw -> ../../assets, or an install's
/// ../share/thaw/assets).
expected<std::filesystem::path> resolve_tokenizer(const std::string& arg) {
  if (arg != "llama2")
    return std::filesystem::path{arg};
  std::vector<std::filesystem::path> tried;
  if (const char* env = std::getenv("THAW_ASSET_DIR"); env != nullptr && *env != '\0')
    tried.push_back(std::filesystem::path{env} / bundled_tokenizer);
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto dir = exe.parent_path();
    tried.push_back(dir / "../../assets" / bundled_tokenizer);
    tried.push_back(dir / "../assets" / bundled_tokenizer);
    tried.push_back(dir / "../share/thaw/assets" / bundled_tokenizer);
  }
  std::string where;
  std::vector<std::filesystem::path> seen;
  for (const auto& p : tried) {
    auto path = p.lexically_normal();
    if (std::filesystem::exists(path))
      return path;
    if (std::find(seen.begin(), seen.end(), path) == seen.end())
      where += "\n  " + path.string();
    seen.push_back(path);
  }
  return make_error(errc::not_found,
                    "--tokenizer llama2: the bundled tokenizer is not in any of these places "
                    "(set THAW_ASSET_DIR to the assets/ directory, or pass a tokenizer.json):" +
                        where);
}

int run_make_model(const make_model_args& a) {
  const std::string name = "make-model";
  if (auto s = init_logging(a.common.log_level); !s)
    return report_error(name, s.err());
  if (auto c = a.common.load_config(); !c)
    return report_error(name, c.err());

  make_model_options opt;
  opt.preset = a.preset;
  opt.seed = a.seed;
  auto tok = resolve_tokenizer(a.tokenizer);
  if (!tok)
    return report_error(name, tok.err());
  opt.tokenizer_json = *tok;
  auto type = parse_dtype(a.dtype_name);
  if (!type)
    return report_error(name, with_context(type.err(), "--dtype"));
  opt.type = *type;
  auto shard = parse_bytes(a.max_shard_size);
  if (!shard)
    return report_error(name, with_context(shard.err(), "--max-shard-size"));
  if (*shard == 0)
    return report_error(name, make_error(errc::invalid_argument, "--max-shard-size must be positive"));
  opt.max_shard_bytes = *shard;

  std::unique_ptr<progress_bar> live;
  std::uint64_t weight_bytes = 0;
  opt.on_progress = [&](std::uint64_t done, std::uint64_t total) {
    if (!live)
      live = std::make_unique<progress_bar>("make-model " + a.preset, total);
    live->update(done);
    weight_bytes = total;
  };
  // An interrupted run stops between tensors and removes its temporary directory.
  opt.cancel = &g_cancel;
  std::signal(SIGINT, make_model_on_interrupt);
  std::signal(SIGTERM, make_model_on_interrupt);

  auto start = std::chrono::steady_clock::now();
  auto s = make_model(a.out_dir, opt);
  if (live)
    live->finish();
  if (!s)
    return report_error(name, s.err());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // The summary reads back what was written rather than trusting the plan.
  auto cfg_text = read_text_file(std::filesystem::path{a.out_dir} / "config.json");
  if (!cfg_text)
    return report_error(name, cfg_text.err());
  auto cfg = parse_hf_config(*cfg_text, a.out_dir + "/config.json");
  if (!cfg)
    return report_error(name, cfg.err());
  const auto params = parameter_count(*cfg);
  std::printf("wrote %s: %s (%s), %.1fM params, vocab %llu, %s %s in %.2f s (%s)\n",
              a.out_dir.c_str(), a.preset.c_str(), std::string{hf_class_name(cfg->arch)}.c_str(),
              static_cast<double>(params) / 1e6, static_cast<unsigned long long>(cfg->vocab_size),
              format_bytes(weight_bytes).c_str(), std::string{to_string(cfg->torch_dtype)}.c_str(),
              secs, format_rate(static_cast<double>(weight_bytes) / secs).c_str());
  return 0;
}

} // namespace

void add_make_model_command(CLI::App& app) {
  auto args = std::make_shared<make_model_args>();
  std::string presets;
  for (const auto& p : preset_names())
    presets += (presets.empty() ? "" : ", ") + p;
  auto* cmd = app.add_subcommand(
      "make-model", "Write a deterministic random model in Hugging Face layout (same seed, same bytes)");
  cmd->footer("Presets (real shapes, random weights): " + presets);
  cmd->add_option("--preset", args->preset, "Model shape: " + presets)
      ->required()
      ->check(CLI::IsMember(preset_names()));
  cmd->add_option("--tokenizer", args->tokenizer,
                  "tokenizer.json (fixes vocab size, BOS, EOS); 'llama2' for the bundled copy")
      ->required();
  cmd->add_option("--seed", args->seed, "Random seed: the same seed gives the same bytes")
      ->required();
  cmd->add_option("--dtype", args->dtype_name, "Weight dtype: bf16, fp16 or fp32")
      ->check(CLI::IsMember({"bf16", "fp16", "fp32", "f16", "f32", "bfloat16", "float16", "float32"}))
      ->capture_default_str();
  cmd->add_option("--max-shard-size", args->max_shard_size,
                  "Split weights into model-0000K-of-0000N.safetensors shards above this size")
      ->capture_default_str();
  cmd->add_option("OUT_DIR", args->out_dir, "Directory to create (must not exist)")->required();
  add_common_options(*cmd, args->common);
  cmd->callback([args] { run_result = run_make_model(*args); });
}

} // namespace thaw::app
