#pragma once
/// Configuration: a TOML document (toml++) with command-line overrides "section.key=value".
/// Getters take a dotted key and a default; a present value of the wrong type is an error that
/// names the key, never silently the default.
///
///   [loader]
///   chunk_bytes = "16MiB"
///   pool_bytes = "4GiB"
///   read_threads = 2

#include "runtime/common/error.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace thaw {

class config {
public:
  config();
  ~config();
  config(config&&) noexcept;
  config& operator=(config&&) noexcept;
  config(const config&);
  config& operator=(const config&);

  /// Parses TOML text; `source` names it in errors ("thaw.toml:3:7: ...").
  [[nodiscard]] static expected<config> parse(std::string_view toml_text,
                                              std::string_view source = "config");
  /// Reads and parses a TOML file.
  [[nodiscard]] static expected<config> load(const std::filesystem::path& path);

  /// Applies "a.b.c=value". The value is read as a TOML value (number, bool, string, array);
  /// text that is not valid TOML is taken as a string.
  [[nodiscard]] status set(std::string_view assignment);

  [[nodiscard]] bool contains(std::string_view key) const;
  [[nodiscard]] expected<std::int64_t> get_int(std::string_view key, std::int64_t fallback) const;
  [[nodiscard]] expected<double> get_double(std::string_view key, double fallback) const;
  [[nodiscard]] expected<bool> get_bool(std::string_view key, bool fallback) const;
  [[nodiscard]] expected<std::string> get_string(std::string_view key,
                                                 std::string_view fallback) const;
  /// A byte size: an integer, or a string such as "16MiB".
  [[nodiscard]] expected<std::uint64_t> get_bytes(std::string_view key,
                                                  std::uint64_t fallback) const;
  /// A duration in seconds: a number, or a string such as "30s", "5m".
  [[nodiscard]] expected<double> get_seconds(std::string_view key, double fallback) const;

  /// An array of strings (absent: empty).
  [[nodiscard]] expected<std::vector<std::string>> get_strings(std::string_view key) const;
  /// An array of tables ([[models]] ... ), each as a config of its own (absent: empty).
  [[nodiscard]] expected<std::vector<config>> get_tables(std::string_view key) const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace thaw
