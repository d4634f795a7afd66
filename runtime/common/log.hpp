#pragma once
/// Logging through spdlog: one stderr logger, the level set once at start-up. Code logs with
/// spdlog's own functions (`spdlog::info("loaded {} in {:.2f}s", name, secs)`).

#include "runtime/common/error.hpp"

#include <string_view>

namespace thaw {

/// Sets up the default logger; `level` is trace, debug, info, warn, error or off.
[[nodiscard]] status init_logging(std::string_view level);

} // namespace thaw
