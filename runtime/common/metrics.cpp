// The metrics registry: atomics per series, a mutex per family for its series map, and one for
// the registry's list of families; render() writes Prometheus text format 0.0.4.

#include "runtime/common/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string_view>
#include <type_traits>
#include <variant>

namespace thaw::metrics {

namespace {

// Registering a metric wrongly (a bad name, one name for two kinds, the wrong number of label
// values) is a bug in thaw's code with fixed names, not a runtime condition a caller could
// handle; the reference-returning interface has no error channel, so stop loudly at once.
[[noreturn]] void misuse(const std::string& what) {
  std::fprintf(stderr, "thaw metrics: %s\n", what.c_str());
  std::abort();
}

bool valid_name(std::string_view s, bool colon_ok) {
  if (s.empty())
    return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                       (colon_ok && c == ':');
    const bool digit = c >= '0' && c <= '9';
    if (!alpha && !(digit && i > 0))
      return false;
  }
  return true;
}

// Shortest text that reads back as the same double; Prometheus spells the infinities +Inf/-Inf.
std::string format_value(double v) {
  if (std::isnan(v))
    return "NaN";
  if (std::isinf(v))
    return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

void escape_into(std::string& out, std::string_view s, bool quote) {
  for (const char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '"' && quote)
      out += "\\\"";
    else
      out += c;
  }
}

// `{a="x",b="y"}` (with an optional extra label, the histogram's le), or nothing without labels.
void labels_into(std::string& out, const std::vector<std::string>& names, const labels& values,
                 std::string_view extra_name = {}, std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty())
    return;
  out += '{';
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0)
      out += ',';
    out += names[i];
    out += "=\"";
    escape_into(out, values[i], true);
    out += '"';
  }
  if (!extra_name.empty()) {
    if (!names.empty())
      out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

template <class T>
constexpr std::string_view type_name() {
  if constexpr (std::is_same_v<T, counter>)
    return "counter";
  else if constexpr (std::is_same_v<T, gauge>)
    return "gauge";
  else
    return "histogram";
}

} // namespace

// --- series -------------------------------------------------------------------------------

void counter::inc(double v) noexcept {
  if (v > 0) // a counter only goes up; negative or NaN increments are dropped
    value_.fetch_add(v, std::memory_order_relaxed);
}
double counter::value() const noexcept { return value_.load(std::memory_order_relaxed); }

void gauge::set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
void gauge::add(double v) noexcept { value_.fetch_add(v, std::memory_order_relaxed); }
double gauge::value() const noexcept { return value_.load(std::memory_order_relaxed); }

histogram::histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  // +Inf is implied; an explicit one would make a duplicate le="+Inf" bucket.
  while (!bounds_.empty() && std::isinf(bounds_.back()) && bounds_.back() > 0)
    bounds_.pop_back();
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && !(bounds_[i - 1] < bounds_[i])))
      misuse("histogram bounds must be finite and strictly ascending");
  }
  buckets_ = std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1);
  for (std::size_t i = 0; i <= bounds_.size(); ++i)
    buckets_[i].store(0, std::memory_order_relaxed);
}

void histogram::observe(double v) noexcept {
  // Bucket i counts bounds[i-1] < v <= bounds[i]; NaN and values above the last bound go to +Inf.
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  const auto i = static_cast<std::size_t>(it - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t histogram::count() const noexcept { return count_.load(std::memory_order_relaxed); }
double histogram::sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

std::uint64_t histogram::cumulative(std::size_t i) const noexcept {
  const auto last = std::min(i, bounds_.size());
  std::uint64_t total = 0;
  for (std::size_t b = 0; b <= last; ++b)
    total += buckets_[b].load(std::memory_order_relaxed);
  return total;
}

// --- families -----------------------------------------------------------------------------

template <class T>
struct family<T>::impl {
  std::string name;
  std::string help;
  std::vector<std::string> label_names;
  std::vector<double> bounds; ///< histograms only
  mutable std::mutex mutex;
  std::map<labels, std::unique_ptr<T>> series;
  /// Removed series stay allocated so that a reference someone still holds never dangles;
  /// they are no longer rendered. Bounded by how many series are ever removed (deleted models).
  std::vector<std::unique_ptr<T>> retired;

  std::unique_ptr<T> make() const {
    if constexpr (std::is_same_v<T, histogram>)
      return std::make_unique<histogram>(bounds);
    else
      return std::make_unique<T>();
  }
};

template <class T>
family<T>::family(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

template <class T>
family<T>::~family() = default;

template <class T>
T& family<T>::get(const labels& values) {
  if (values.size() != impl_->label_names.size())
    misuse(impl_->name + ": " + std::to_string(values.size()) + " label values for " +
           std::to_string(impl_->label_names.size()) + " label names");
  const std::lock_guard lock{impl_->mutex};
  auto& slot = impl_->series[values];
  if (!slot)
    slot = impl_->make();
  return *slot;
}

template <class T>
void family<T>::remove(const labels& values) {
  const std::lock_guard lock{impl_->mutex};
  const auto it = impl_->series.find(values);
  if (it == impl_->series.end())
    return;
  impl_->retired.push_back(std::move(it->second));
  impl_->series.erase(it);
}

template class family<counter>;
template class family<gauge>;
template class family<histogram>;

// --- registry -----------------------------------------------------------------------------

struct registry::impl {
  mutable std::mutex mutex;
  using any_family = std::variant<std::unique_ptr<family<counter>>, std::unique_ptr<family<gauge>>,
                                  std::unique_ptr<family<histogram>>>;
  std::vector<any_family> families; ///< registration order

  template <class T>
  family<T>& add(const std::string& name, const std::string& help,
                 std::vector<std::string> label_names, std::vector<double> bounds) {
    if (!valid_name(name, true))
      misuse("invalid metric name '" + name + "'");
    for (const auto& l : label_names) {
      const bool reserved = l.starts_with("__") || (std::is_same_v<T, histogram> && l == "le");
      if (!valid_name(l, false) || reserved)
        misuse(name + ": invalid label name '" + l + "'");
    }
    const std::lock_guard lock{mutex};
    for (auto& f : families) {
      const bool clash = std::visit(
          [&](auto& p) { return p->internals().name == name; }, f);
      if (!clash)
        continue;
      auto* same = std::get_if<std::unique_ptr<family<T>>>(&f);
      if (same == nullptr || (*same)->internals().label_names != label_names)
        misuse("metric '" + name + "' registered twice with a different kind or labels");
      return **same;
    }
    auto p = std::make_unique<typename family<T>::impl>();
    p->name = name;
    p->help = help;
    p->label_names = std::move(label_names);
    p->bounds = std::move(bounds);
    auto fam = std::make_unique<family<T>>(std::move(p));
    auto& ref = *fam;
    families.emplace_back(std::move(fam));
    // A metric without labels has exactly one series: show it (at 0) from the start.
    if (ref.internals().label_names.empty())
      (void)ref.get();
    return ref;
  }
};

registry::registry() : impl_(std::make_unique<impl>()) {}
registry::~registry() = default;

family<counter>& registry::add_counter(const std::string& name, const std::string& help,
                                       std::vector<std::string> label_names) {
  return impl_->add<counter>(name, help, std::move(label_names), {});
}

family<gauge>& registry::add_gauge(const std::string& name, const std::string& help,
                                   std::vector<std::string> label_names) {
  return impl_->add<gauge>(name, help, std::move(label_names), {});
}

family<histogram>& registry::add_histogram(const std::string& name, const std::string& help,
                                           std::vector<double> bounds,
                                           std::vector<std::string> label_names) {
  // Checked here too, so that a bad family fails at registration rather than on first use.
  (void)histogram{bounds};
  return impl_->add<histogram>(name, help, std::move(label_names), std::move(bounds));
}

namespace {

template <class T>
void render_family(std::string& out, const typename family<T>::impl& f) {
  out += "# HELP ";
  out += f.name;
  out += ' ';
  escape_into(out, f.help, false);
  out += "\n# TYPE ";
  out += f.name;
  out += ' ';
  out += type_name<T>();
  out += '\n';
  const std::lock_guard lock{f.mutex};
  for (const auto& [values, s] : f.series) {
    if constexpr (std::is_same_v<T, histogram>) {
      // Buckets only grow and cumulative(i) reads buckets 0..i after cumulative(i - 1) did, so
      // the series stays monotonic under concurrent observe(); _count is the +Inf bucket as read
      // here, so the two always agree.
      std::uint64_t running = 0;
      const auto& b = s->bounds();
      for (std::size_t i = 0; i <= b.size(); ++i) {
        running = std::max(running, s->cumulative(i));
        out += f.name;
        out += "_bucket";
        labels_into(out, f.label_names, values, "le", i < b.size() ? format_value(b[i]) : "+Inf");
        out += ' ';
        out += std::to_string(running);
        out += '\n';
      }
      out += f.name;
      out += "_sum";
      labels_into(out, f.label_names, values);
      out += ' ';
      out += format_value(s->sum());
      out += '\n';
      out += f.name;
      out += "_count";
      labels_into(out, f.label_names, values);
      out += ' ';
      out += std::to_string(running);
      out += '\n';
    } else {
      out += f.name;
      labels_into(out, f.label_names, values);
      out += ' ';
      out += format_value(s->value());
      out += '\n';
    }
  }
}

template <class T>
void render_one(std::string& out, const family<T>& f) {
  render_family<T>(out, f.internals());
}

} // namespace

std::string registry::render() const {
  std::string out;
  const std::lock_guard lock{impl_->mutex};
  for (const auto& f : impl_->families) {
    std::visit([&](const auto& p) { render_one(out, *p); }, f);
  }
  return out;
}

std::vector<double> latency_buckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0};
}

double scraped_sum(std::string_view text, std::string_view name, std::string_view filter) {
  double sum = 0;
  while (!text.empty()) {
    const auto eol = text.find('\n');
    const auto line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    if (line.substr(0, name.size()) != name || line.find(filter) == std::string_view::npos)
      continue;
    const auto rest = line.substr(name.size());
    if (rest.empty() || (rest[0] != '{' && rest[0] != ' '))
      continue; // another metric whose name starts with this one (name_sum, name_count)
    const auto value = std::string{line.substr(line.rfind(' ') + 1)};
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    if (end != value.c_str())
      sum += v;
  }
  return sum;
}

} // namespace thaw::metrics
