#include "apps/thaw/commands.hpp"

#include <cstdio>

namespace thaw::app {

expected<config> common_options::load_config() const {
  config cfg;
  if (!config_path.empty()) {
    THAW_ASSIGN(cfg, config::load(config_path));
  }
  for (const auto& o : overrides)
    THAW_TRY(cfg.set(o));
  return cfg;
}

void add_common_options(CLI::App& cmd, common_options& opts) {
  cmd.add_option("--config", opts.config_path, "TOML configuration file")->check(CLI::ExistingFile);
  cmd.add_option("--set", opts.overrides, "Override a configuration key: --set loader.read_threads=4");
  cmd.add_option("--log-level", opts.log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
}

int report_error(const std::string& command, const error& e) {
  std::fprintf(stderr, "thaw %s: %s\n", command.c_str(), e.to_string().c_str());
  return 1;
}

} // namespace thaw::app
