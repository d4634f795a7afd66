#include "runtime/common/units.hpp"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace thaw {
namespace {

std::string lower(std::string_view s) {
  std::string out;
  for (char c : s)
    if (!std::isspace(static_cast<unsigned char>(c)))
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Splits "16mib" into 16.0 and "mib".
bool split_number(const std::string& s, double& number, std::string& unit) {
  std::size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.'))
    ++i;
  if (i == 0)
    return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + i, number);
  if (ec != std::errc{} || ptr != s.data() + i)
    return false;
  unit = s.substr(i);
  return true;
}

} // namespace

expected<std::uint64_t> parse_bytes(std::string_view text) {
  std::string s = lower(text);
  double number = 0;
  std::string unit;
  if (!split_number(s, number, unit))
    return make_error(errc::invalid_argument, "not a byte size: '" + std::string{text} + "'");
  double scale = 0;
  if (unit.empty() || unit == "b")
    scale = 1;
  else if (unit == "k" || unit == "kb")
    scale = 1e3;
  else if (unit == "m" || unit == "mb")
    scale = 1e6;
  else if (unit == "g" || unit == "gb")
    scale = 1e9;
  else if (unit == "t" || unit == "tb")
    scale = 1e12;
  else if (unit == "kib")
    scale = 1024.0;
  else if (unit == "mib")
    scale = 1024.0 * 1024;
  else if (unit == "gib")
    scale = 1024.0 * 1024 * 1024;
  else if (unit == "tib")
    scale = 1024.0 * 1024 * 1024 * 1024;
  else
    return make_error(errc::invalid_argument, "unknown size unit in '" + std::string{text} +
                                                  "' (use B, KB, MB, GB, KiB, MiB, GiB)");
  return static_cast<std::uint64_t>(std::llround(number * scale));
}

std::string format_bytes(std::uint64_t bytes) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

std::string format_rate(double bytes_per_second) {
  char buf[32];
  if (bytes_per_second >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f GB/s", bytes_per_second / 1e9);
  else
    std::snprintf(buf, sizeof buf, "%.1f MB/s", bytes_per_second / 1e6);
  return buf;
}

expected<double> parse_seconds(std::string_view text) {
  std::string s = lower(text);
  double number = 0;
  std::string unit;
  if (!split_number(s, number, unit))
    return make_error(errc::invalid_argument, "not a duration: '" + std::string{text} + "'");
  if (unit.empty() || unit == "s")
    return number;
  if (unit == "ms")
    return number / 1e3;
  if (unit == "us")
    return number / 1e6;
  if (unit == "m" || unit == "min")
    return number * 60;
  if (unit == "h")
    return number * 3600;
  return make_error(errc::invalid_argument,
                    "unknown duration unit in '" + std::string{text} + "' (use ms, s, m, h)");
}

} // namespace thaw
