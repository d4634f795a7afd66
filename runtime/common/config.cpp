#include "runtime/common/config.hpp"

#include "runtime/common/posix.hpp"
#include "runtime/common/units.hpp"

#include <sstream>
#include <toml++/toml.h>

namespace thaw {

struct config::impl {
  toml::table table;
};

config::config() : impl_(std::make_unique<impl>()) {}
config::~config() = default;
config::config(config&&) noexcept = default;
config& config::operator=(config&&) noexcept = default;
config::config(const config& other) : impl_(std::make_unique<impl>(*other.impl_)) {}
config& config::operator=(const config& other) {
  if (this != &other)
    impl_ = std::make_unique<impl>(*other.impl_);
  return *this;
}

expected<config> config::parse(std::string_view toml_text, std::string_view source) {
  config out;
  try {
    out.impl_->table = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << source << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
        << e.description();
    return make_error(errc::parse_error, msg.str());
  }
  return out;
}

expected<config> config::load(const std::filesystem::path& path) {
  THAW_ASSIGN(auto text, read_text_file(path));
  return parse(text, path.string());
}

status config::set(std::string_view assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string_view::npos || eq == 0)
    return make_error(errc::invalid_argument,
                      "override '" + std::string{assignment} + "' is not of the form key=value");
  std::string key{assignment.substr(0, eq)};
  std::string value{assignment.substr(eq + 1)};
  toml::node_view<toml::node> parsed_value;
  toml::table parsed;
  try {
    parsed = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    parsed = toml::table{{"v", value}};
  }
  // Walk (and create) the tables of a dotted key.
  toml::table* table = &impl_->table;
  std::string_view rest{key};
  while (true) {
    auto dot = rest.find('.');
    if (dot == std::string_view::npos)
      break;
    std::string part{rest.substr(0, dot)};
    rest.remove_prefix(dot + 1);
    auto* node = table->get(part);
    if (node == nullptr) {
      table->insert(part, toml::table{});
      node = table->get(part);
    }
    table = node->as_table();
    if (table == nullptr)
      return make_error(errc::invalid_argument,
                        "override '" + key + "': '" + part + "' is not a table");
  }
  table->insert_or_assign(std::string{rest}, *parsed.get("v"));
  return {};
}

namespace {

const toml::node* find(const toml::table& table, std::string_view key) {
  return table.at_path(key).node();
}

error wrong_type(std::string_view key, std::string_view want) {
  return make_error(errc::invalid_argument,
                    "config key '" + std::string{key} + "' must be " + std::string{want});
}

} // namespace

bool config::contains(std::string_view key) const {
  return find(impl_->table, key) != nullptr;
}

expected<std::int64_t> config::get_int(std::string_view key, std::int64_t fallback) const {
  const auto* node = find(impl_->table, key);
  if (node == nullptr)
    return fallback;
  if (auto v = node->value<std::int64_t>(); v && node->is_integer())
    return *v;
  return wrong_type(key, "an integer");
}

expected<double> config::get_double(std::string_view key, double fallback) const {
  const auto* node = find(impl_->table, key);
  if (node == nullptr)
    return fallback;
  if (auto v = node->value<double>())
    return *v;
  return wrong_type(key, "a number");
}

expected<bool> config::get_bool(std::string_view key, bool fallback) const {
  const auto* node = find(impl_->table, key);
  if (node == nullptr)
    return fallback;
  if (auto v = node->value<bool>())
    return *v;
  return wrong_type(key, "true or false");
}

expected<std::string> config::get_string(std::string_view key, std::string_view fallback) const {
  const auto* node = find(impl_->table, key);
  if (node == nullptr)
    return std::string{fallback};
  if (auto v = node->value<std::string>())
    return *v;
  return wrong_type(key, "a string");
}

expected<std::uint64_t> config::get_bytes(std::string_view key, std::uint64_t fallback) const {
  const auto* node = find(impl_->table, key);
  if (node == nullptr)
    return fallback;
  if (node->is_integer()) {
    auto v = *node->value<std::int64_t>();
    if (v < 0)
      return wrong_type(key, "a non-negative byte size");
    return static_cast<std::uint64_t>(v);
  }
  if (auto s = node->value<std::string>()) {
    auto bytes = parse_bytes(*s);
    if (!bytes)
      return with_context(bytes.err(), "config key '" + std::string{key} + "'");
    return *bytes;
  }
  return wrong_type(key, "a byte size such as 4096 or \"16MiB\"");
}

expected<double> config::get_seconds(std::string_view key, double fallback) const {
  const auto* node = find(impl_->table, key);
  if (node == nullptr)
    return fallback;
  if (node->is_number())
    return *node->value<double>();
  if (auto s = node->value<std::string>()) {
    auto secs = parse_seconds(*s);
    if (!secs)
      return with_context(secs.err(), "config key '" + std::string{key} + "'");
    return *secs;
  }
  return wrong_type(key, "a duration such as 30 or \"5m\"");
}

expected<std::vector<std::string>> config::get_strings(std::string_view key) const {
  std::vector<std::string> out;
  const auto* node = find(impl_->table, key);
  if (node == nullptr)
    return out;
  const auto* arr = node->as_array();
  if (arr == nullptr)
    return wrong_type(key, "an array of strings");
  for (const auto& v : *arr) {
    auto str = v.value<std::string>();
    if (!str)
      return wrong_type(key, "an array of strings");
    out.push_back(*str);
  }
  return out;
}

expected<std::vector<config>> config::get_tables(std::string_view key) const {
  std::vector<config> out;
  const auto* node = find(impl_->table, key);
  if (node == nullptr)
    return out;
  const auto* arr = node->as_array();
  if (arr == nullptr || !arr->is_array_of_tables())
    return wrong_type(key, "an array of tables ([[" + std::string{key} + "]])");
  for (const auto& v : *arr) {
    config c;
    c.impl_->table = *v.as_table();
    out.push_back(std::move(c));
  }
  return out;
}

} // namespace thaw
