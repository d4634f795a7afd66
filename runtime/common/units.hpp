#pragma once
/// Human units: byte sizes ("16MiB", "1.5 GB") and rates.

#include "runtime/common/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace thaw {

/// Parses a byte size: a number with an optional unit B, KB, MB, GB, TB (powers of 1000) or
/// KiB, MiB, GiB, TiB (powers of 1024), case-insensitive, spaces allowed: "4096", "16MiB", "2 GB".
[[nodiscard]] expected<std::uint64_t> parse_bytes(std::string_view text);

/// "1.50 GiB", "512 B".
[[nodiscard]] std::string format_bytes(std::uint64_t bytes);

/// Bytes per second as "1.23 GB/s" (decimal, as disks and links are quoted).
[[nodiscard]] std::string format_rate(double bytes_per_second);

/// Parses a duration: "250ms", "30s", "5m", "1h", or a plain number of seconds.
[[nodiscard]] expected<double> parse_seconds(std::string_view text);

} // namespace thaw
