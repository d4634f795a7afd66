#include "runtime/common/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <string>

namespace thaw {

status init_logging(std::string_view level) {
  auto lvl = spdlog::level::from_str(std::string{level});
  if (lvl == spdlog::level::off && level != "off")
    return make_error(errc::invalid_argument,
                      "unknown log level '" + std::string{level} +
                          "' (trace, debug, info, warn, error, off)");
  auto logger = spdlog::stderr_color_mt("thaw");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%^[%H:%M:%S.%e %l]%$ %v");
  spdlog::set_level(lvl);
  return {};
}

} // namespace thaw
