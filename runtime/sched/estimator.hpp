#pragma once
/// Estimators the placement policies rank by (ARCHITECTURE.md section 7). Pure logic: no clocks
/// of their own; the caller says how long things took and the estimators learn from it. The
/// scheduler actor feeds them real loads and resumes; `thaw sim` feeds them simulated ones, so the
/// same code is measured in both.
///
///   startup(model, node) = loader queue wait on the node
///                          + bytes / bandwidth(node, best tier holding the model there)
///   migration(tokens)    = a * tokens + b       (tokens: input + output of the moved sequences)

#include <array>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace thaw::sched {

/// Where a checkpoint is loaded from, fastest first. A model in `device` memory (an idle
/// instance's slot, a warm cache) needs almost no transfer; `remote` is a peer's DRAM over UCX or
/// shared storage.
enum class tier : std::uint8_t { device = 0, dram = 1, ssd = 2, remote = 3 };
inline constexpr int tier_count = 4;
[[nodiscard]] const char* to_string(tier t) noexcept;

/// Bandwidths (bytes/s) per tier used until a node has observed loads of its own.
struct bandwidth_defaults {
  double device = 200e9; ///< device-to-device copy; startup from it is dominated by setup
  double dram = 8e9;     ///< pinned DRAM to device (ARCHITECTURE: DRAM tier 4-10 GB/s)
  double ssd = 2e9;      ///< local NVMe, O_DIRECT sequential
  double remote = 1.25e9;///< a peer over 10 GbE-class UCX, or shared storage
  [[nodiscard]] double of(tier t) const noexcept;
};

/// Per (node, tier) bandwidth learned online by an exponentially weighted moving average of
/// observed loads, seeded from the defaults; nodes are dense indices.
class bandwidth_model {
public:
  explicit bandwidth_model(bandwidth_defaults defaults = {}, double alpha = 0.3);

  /// Folds in a completed load of `bytes` in `seconds` from `t` on `node`. Loads of no bytes
  /// or no time say nothing about bandwidth and are ignored.
  void observe(std::uint32_t node, tier t, double bytes, double seconds);
  /// Folds in a bandwidth a node measured itself (bytes/s; 0 means "none yet" and is ignored).
  void observe_bandwidth(std::uint32_t node, tier t, double bytes_per_second);
  /// The current estimate for `node` and `t` (the default when nothing was observed there).
  [[nodiscard]] double bandwidth(std::uint32_t node, tier t) const noexcept;
  /// Number of loads folded in for `node` and `t`.
  [[nodiscard]] std::uint64_t samples(std::uint32_t node, tier t) const noexcept;
  [[nodiscard]] const bandwidth_defaults& defaults() const noexcept { return defaults_; }

private:
  struct cell {
    double bw = 0;
    std::uint64_t n = 0;
  };
  bandwidth_defaults defaults_;
  double alpha_;
  std::vector<std::array<cell, tier_count>> nodes_;
};

/// Startup time of a model on a node: waiting for the node's loader, then the transfer from the
/// given tier at the learned bandwidth, plus a fixed setup cost (allocating the slot, building the
/// engine) that does not scale with bytes.
class startup_estimator {
public:
  explicit startup_estimator(bandwidth_defaults defaults = {}, double setup_seconds = 0.05);

  [[nodiscard]] double estimate(std::uint32_t node, tier t, double bytes,
                                double loader_wait_seconds) const noexcept;
  /// The loader wait on `node` behind loads that still have `ssd_bytes` to read and
  /// `dram_bytes` to copy, at the bandwidths learned for it (the loads share the node's loader,
  /// so a new one finishes that much later).
  [[nodiscard]] double queue_wait(std::uint32_t node, double ssd_bytes,
                                  double dram_bytes) const noexcept;
  void observe_load(std::uint32_t node, tier t, double bytes, double seconds);
  [[nodiscard]] bandwidth_model& bandwidths() noexcept { return bw_; }
  [[nodiscard]] const bandwidth_model& bandwidths() const noexcept { return bw_; }
  [[nodiscard]] double setup_seconds() const noexcept { return setup_; }

private:
  bandwidth_model bw_;
  double setup_;
};

/// Migration time as a straight line in the tokens to recompute, fitted by ordinary least
/// squares over every observed resume. Until `min_samples` resumes with distinct token counts
/// are seen the prior line is used, so the first decisions are sane.
class migration_estimator {
public:
  /// `prior_a`: seconds per token (a prefill rate); `prior_b`: fixed handoff cost in seconds.
  explicit migration_estimator(double prior_a = 1.0 / 5000, double prior_b = 0.05,
                               std::uint64_t min_samples = 3);

  void observe(double tokens, double seconds);
  [[nodiscard]] double estimate(double tokens) const noexcept { return a_ * tokens + b_; }
  [[nodiscard]] double a() const noexcept { return a_; }
  [[nodiscard]] double b() const noexcept { return b_; }
  [[nodiscard]] std::uint64_t samples() const noexcept { return n_; }

private:
  void refit();
  double prior_a_, prior_b_;
  std::uint64_t min_samples_;
  double a_, b_;
  std::uint64_t n_ = 0;
  double sx_ = 0, sy_ = 0, sxx_ = 0, sxy_ = 0;
};

} // namespace thaw::sched
