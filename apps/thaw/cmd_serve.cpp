// thaw serve: a head and a node in one process behind the OpenAI-compatible HTTP API. With no
// model configured it makes the demo model once (stories15m's shape, deterministic random
// weights, the Llama 2 tokenizer the project carries) and serves it as "stories15m".

#include "apps/thaw/commands.hpp"

#include "actors/embedded.hpp"
#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/checkpoint/importer.hpp"
#include "runtime/checkpoint/make_model.hpp"
#include "runtime/common/log.hpp"

#include <csignal>
#include <cstdlib>
#include <spdlog/spdlog.h>

namespace thaw::app {
namespace {

struct serve_args {
  common_options common;
  std::string host;
  int port = -1;
  std::vector<std::string> models; // NAME=CHECKPOINT
  std::string data_dir;
  std::string tokenizer;
  bool no_demo = false;
};

std::filesystem::path default_data_dir() {
  if (const char* home = std::getenv("THAW_HOME"); home && *home)
    return home;
  if (const char* cache = std::getenv("XDG_CACHE_HOME"); cache && *cache)
    return std::filesystem::path{cache} / "thaw";
  if (const char* home = std::getenv("HOME"); home && *home)
    return std::filesystem::path{home} / ".cache" / "thaw";
  return std::filesystem::temp_directory_path() / "thaw";
}

/// The demo checkpoint, made on first use: a Hugging Face directory from make_model, converted,
/// then removed. Both steps write through temporary directories, so an interrupted first run
/// leaves nothing half-made.
expected<std::filesystem::path> ensure_demo_model(const std::filesystem::path& data_dir,
                                                  const std::filesystem::path& tokenizer_json) {
  const auto dir = data_dir / "demo" / "stories15m";
  if (std::filesystem::exists(dir / "manifest.bin")) {
    if (auto ck = checkpoint::open(dir))
      return dir;
    spdlog::warn("serve: the demo checkpoint in {} does not open; making it again", dir.string());
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  const auto hf = data_dir / "demo" / "stories15m-hf";
  std::error_code ec;
  std::filesystem::remove_all(hf, ec);
  std::filesystem::create_directories(dir.parent_path(), ec);
  if (ec)
    return make_error(errc::io_error, dir.parent_path().string() + ": " + ec.message());
  spdlog::info("serve: making the demo model (stories15m shape, random weights) in {}",
               dir.string());
  make_model_options mo;
  mo.preset = "stories15m";
  mo.tokenizer_json = tokenizer_json;
  mo.seed = 1;
  mo.type = dtype::f32;
  THAW_TRY(make_model(hf, mo));
  import_options io;
  THAW_TRY(import_hf(hf, dir, io));
  std::filesystem::remove_all(hf, ec);
  return dir;
}

std::filesystem::path bundled_tokenizer() {
  return std::filesystem::path{THAW_ASSETS_DIR} / "tokenizers" / "llama2" / "tokenizer.json";
}

volatile std::sig_atomic_t stop_signal = 0;

expected<int> serve(serve_args& a) {
  THAW_ASSIGN(auto cfg, a.common.load_config());
  THAW_ASSIGN(auto opts, serve_options::from_config(cfg));
  if (!a.host.empty())
    opts.http.address = a.host;
  if (a.port >= 0)
    opts.http.port = static_cast<std::uint16_t>(a.port);
  for (const auto& m : a.models) {
    const auto eq = m.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == m.size())
      return make_error(errc::invalid_argument, "--model '" + m + "': expected NAME=CHECKPOINT");
    model_spec spec;
    spec.name = m.substr(0, eq);
    spec.checkpoint = m.substr(eq + 1);
    opts.models.push_back(std::move(spec));
  }
  if (opts.models.empty() && !a.no_demo) {
    const auto data_dir = a.data_dir.empty() ? default_data_dir() : std::filesystem::path{a.data_dir};
    const auto tok = a.tokenizer.empty() ? bundled_tokenizer() : std::filesystem::path{a.tokenizer};
    THAW_ASSIGN(auto dir, ensure_demo_model(data_dir, tok));
    model_spec spec;
    spec.name = "stories15m";
    spec.checkpoint = dir.string();
    spec.chat_template = "llama2"; // the bundled tokenizer.json carries no template
    opts.models.push_back(std::move(spec));
  }
  // Signals are taken synchronously below; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  THAW_ASSIGN(auto server, embedded_server::start(opts));
  for (const auto& m : opts.models)
    spdlog::info("serve: model {} ({})", m.name, m.checkpoint);
  std::printf("thaw serve: http://%s:%u  (try: curl http://%s:%u/v1/completions -H "
              "'Content-Type: application/json' -d '{\"model\":\"%s\",\"prompt\":\"Once upon a "
              "time\",\"max_tokens\":32}')\n",
              opts.http.address.c_str(), server->port(), opts.http.address.c_str(),
              server->port(), opts.models.empty() ? "MODEL" : opts.models.front().name.c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("serve: {} received, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
  server->stop();
  return 0;
}

} // namespace

void add_serve_command(CLI::App& app) {
  auto a = std::make_shared<serve_args>();
  auto* cmd = app.add_subcommand(
      "serve", "Serve models over the OpenAI API: head and node in one process (the demo model "
               "when none is given)");
  add_common_options(*cmd, a->common);
  cmd->add_option("--host", a->host, "Address to listen on (default http.address, 127.0.0.1)");
  cmd->add_option("--port", a->port, "Port (default http.port, 8000; 0: any free port)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--model", a->models, "Deploy NAME=CHECKPOINT_DIR (repeatable)");
  cmd->add_option("--data-dir", a->data_dir,
                  "Where the demo model is made (default $THAW_HOME or ~/.cache/thaw)");
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer.json for the demo model");
  cmd->add_flag("--no-demo", a->no_demo, "Start with no model when none is configured");
  cmd->callback([a] {
    if (auto s = init_logging(a->common.log_level); !s) {
      run_result = report_error("serve", s.err());
      return;
    }
    auto r = serve(*a);
    run_result = r ? *r : report_error("serve", r.err());
  });
}

} // namespace thaw::app
