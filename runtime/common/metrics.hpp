#pragma once
/// A metrics registry that renders the Prometheus text format (version 0.0.4) for `GET /metrics`.
/// Counters, gauges and histograms, each a family with a name, help text and label names; a
/// family's series are created on first use of a label-value tuple. Updates are lock-free
/// (atomics) once a series exists; thread-safe throughout. Names follow vLLM's where they exist
/// ("vllm:num_requests_running") and thaw's own otherwise ("thaw_cold_starts_total").

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace thaw::metrics {

class counter {
public:
  void inc(double v = 1.0) noexcept; ///< v >= 0
  [[nodiscard]] double value() const noexcept;

private:
  std::atomic<double> value_{0.0};
};

class gauge {
public:
  void set(double v) noexcept;
  void add(double v) noexcept;
  [[nodiscard]] double value() const noexcept;

private:
  std::atomic<double> value_{0.0};
};

class histogram {
public:
  /// `bounds`: ascending upper bounds; +Inf is implied.
  explicit histogram(std::vector<double> bounds);
  void observe(double v) noexcept;
  [[nodiscard]] std::uint64_t count() const noexcept;
  [[nodiscard]] double sum() const noexcept;
  [[nodiscard]] const std::vector<double>& bounds() const noexcept { return bounds_; }
  /// Cumulative count of observations <= bounds()[i] (i == bounds().size(): all).
  [[nodiscard]] std::uint64_t cumulative(std::size_t i) const noexcept;

private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_; ///< per bucket, not cumulative
  std::atomic<std::uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

/// Label values, in the order of the family's label names.
using labels = std::vector<std::string>;

template <class T>
class family;

class registry {
public:
  registry();
  ~registry();
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  /// Registers a family (or returns the existing one of that name and kind). Names must match
  /// [a-zA-Z_:][a-zA-Z0-9_:]*; label names [a-zA-Z_][a-zA-Z0-9_]*.
  family<counter>& add_counter(const std::string& name, const std::string& help,
                               std::vector<std::string> label_names = {});
  family<gauge>& add_gauge(const std::string& name, const std::string& help,
                           std::vector<std::string> label_names = {});
  family<histogram>& add_histogram(const std::string& name, const std::string& help,
                                   std::vector<double> bounds,
                                   std::vector<std::string> label_names = {});

  /// Every family, in registration order, as Prometheus text (HELP, TYPE, series; label values
  /// escaped; histograms as _bucket{le=...}, _sum, _count).
  [[nodiscard]] std::string render() const;

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

/// A family of series of one metric kind. get() creates a series on first use; the reference
/// stays valid as long as the registry.
template <class T>
class family {
public:
  T& get(const labels& values = {});
  /// Drops a series (a deleted model's), if present.
  void remove(const labels& values);

  struct impl;
  explicit family(std::unique_ptr<impl> p);
  ~family();
  [[nodiscard]] const impl& internals() const noexcept { return *impl_; }

private:
  std::unique_ptr<impl> impl_;
};

/// Standard latency buckets in seconds (vLLM's TTFT buckets: 1 ms .. 160 s).
[[nodiscard]] std::vector<double> latency_buckets();

/// Reads a value back from Prometheus text (a scrape of /metrics): the sum of every sample line
/// of metric `name` (exactly that name, any labels) whose line contains `filter`. 0 when none.
[[nodiscard]] double scraped_sum(std::string_view text, std::string_view name,
                                 std::string_view filter = {});

} // namespace thaw::metrics
