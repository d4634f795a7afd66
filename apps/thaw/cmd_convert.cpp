// thaw convert HF_DIR OUT_DIR: imports a Hugging Face model into a thaw checkpoint.

#include "apps/thaw/commands.hpp"

#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/checkpoint/importer.hpp"
#include "runtime/common/log.hpp"
#include "runtime/common/progress.hpp"
#include "runtime/common/units.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>

namespace thaw::app {
namespace {

std::atomic<bool> g_cancel{false};

extern "C" void on_interrupt(int) { g_cancel.store(true); }

struct convert_args {
  common_options common;
  std::string hf_dir;
  std::string out_dir;
  std::string dtype_name = "keep";
  std::string chunk_size = "16MiB";
  std::string max_file_size = "4GiB";
};

int run_convert(const convert_args& a) {
  if (auto s = init_logging(a.common.log_level); !s)
    return report_error("convert", s.err());
  import_options opt;
  if (a.dtype_name != "keep") {
    auto t = parse_dtype(a.dtype_name);
    if (!t)
      return report_error("convert", t.err());
    opt.target_dtype = *t;
  }
  auto chunk = parse_bytes(a.chunk_size);
  if (!chunk)
    return report_error("convert", with_context(chunk.err(), "--chunk-size"));
  auto max_file = parse_bytes(a.max_file_size);
  if (!max_file)
    return report_error("convert", with_context(max_file.err(), "--max-file-size"));
  opt.writer.chunk_bytes = *chunk;
  opt.writer.max_file_bytes = *max_file;

  std::unique_ptr<progress_bar> live;
  opt.writer.on_progress = [&](std::uint64_t done, std::uint64_t total) {
    if (!live)
      live = std::make_unique<progress_bar>("convert", total);
    live->update(done);
  };
  // An interrupted conversion stops cleanly and removes its temporary directory.
  opt.writer.cancel = &g_cancel;
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);

  auto start = std::chrono::steady_clock::now();
  auto s = import_hf(a.hf_dir, a.out_dir, opt);
  if (live)
    live->finish();
  if (!s)
    return report_error("convert", s.err());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  auto ck = checkpoint::open(a.out_dir);
  if (!ck)
    return report_error("convert", ck.err());
  std::printf("converted %s -> %s: %s %s, %zu tensors in %zu files, %s in %.2f s (%s)\n",
              a.hf_dir.c_str(), a.out_dir.c_str(), std::string{to_string(ck->config().arch)}.c_str(),
              std::string{to_string(ck->config().torch_dtype)}.c_str(), ck->info().tensors.size(),
              ck->info().files.size(), format_bytes(ck->total_bytes()).c_str(), secs,
              format_rate(static_cast<double>(ck->total_bytes()) / secs).c_str());
  return 0;
}

} // namespace

void add_convert_command(CLI::App& app) {
  auto args = std::make_shared<convert_args>();
  auto* cmd = app.add_subcommand("convert", "Import a Hugging Face model directory into a thaw checkpoint");
  cmd->add_option("HF_DIR", args->hf_dir, "Hugging Face directory (config.json + safetensors)")->required();
  cmd->add_option("OUT_DIR", args->out_dir, "Checkpoint directory to create (must not exist)")->required();
  cmd->add_option("--dtype", args->dtype_name, "Weight dtype: keep, bf16, fp16 or fp32")
      ->check(CLI::IsMember({"keep", "bf16", "fp16", "fp32", "f16", "f32"}))
      ->capture_default_str();
  cmd->add_option("--chunk-size", args->chunk_size, "Checksum and load unit (multiple of 4 KiB)")
      ->capture_default_str();
  cmd->add_option("--max-file-size", args->max_file_size, "Largest data file")->capture_default_str();
  add_common_options(*cmd, args->common);
  cmd->callback([args] { run_result = run_convert(*args); });
}

} // namespace thaw::app
