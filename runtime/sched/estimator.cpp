#include "runtime/sched/estimator.hpp"

#include <algorithm>
#include <cmath>

namespace thaw::sched {

const char* to_string(tier t) noexcept {
  switch (t) {
  case tier::device:
    return "device";
  case tier::dram:
    return "dram";
  case tier::ssd:
    return "ssd";
  case tier::remote:
    return "remote";
  }
  return "unknown";
}

double bandwidth_defaults::of(tier t) const noexcept {
  switch (t) {
  case tier::device:
    return device;
  case tier::dram:
    return dram;
  case tier::ssd:
    return ssd;
  case tier::remote:
    return remote;
  }
  return remote;
}

bandwidth_model::bandwidth_model(bandwidth_defaults defaults, double alpha)
    : defaults_(defaults), alpha_(std::clamp(alpha, 0.01, 1.0)) {}

void bandwidth_model::observe(std::uint32_t node, tier t, double bytes, double seconds) {
  if (!(bytes > 0) || !(seconds > 0))
    return;
  observe_bandwidth(node, t, bytes / seconds);
}

void bandwidth_model::observe_bandwidth(std::uint32_t node, tier t, double bps) {
  if (!(bps > 0) || !std::isfinite(bps))
    return;
  if (node >= nodes_.size())
    nodes_.resize(node + 1);
  auto& c = nodes_[node][static_cast<std::size_t>(t)];
  // The first observation replaces the configured default outright: a node's own measurement
  // is better than a guess about some other machine.
  c.bw = c.n == 0 ? bps : (1 - alpha_) * c.bw + alpha_ * bps;
  ++c.n;
}

double bandwidth_model::bandwidth(std::uint32_t node, tier t) const noexcept {
  if (node < nodes_.size()) {
    const auto& c = nodes_[node][static_cast<std::size_t>(t)];
    if (c.n > 0)
      return c.bw;
  }
  return defaults_.of(t);
}

std::uint64_t bandwidth_model::samples(std::uint32_t node, tier t) const noexcept {
  return node < nodes_.size() ? nodes_[node][static_cast<std::size_t>(t)].n : 0;
}

startup_estimator::startup_estimator(bandwidth_defaults defaults, double setup_seconds)
    : bw_(defaults), setup_(setup_seconds) {}

double startup_estimator::estimate(std::uint32_t node, tier t, double bytes,
                                   double loader_wait_seconds) const noexcept {
  return std::max(0.0, loader_wait_seconds) + setup_ + bytes / bw_.bandwidth(node, t);
}

double startup_estimator::queue_wait(std::uint32_t node, double ssd_bytes,
                                     double dram_bytes) const noexcept {
  return std::max(0.0, ssd_bytes) / bw_.bandwidth(node, tier::ssd) +
         std::max(0.0, dram_bytes) / bw_.bandwidth(node, tier::dram);
}

void startup_estimator::observe_load(std::uint32_t node, tier t, double bytes, double seconds) {
  // The setup cost is not transfer; leaving it in would make small loads look slow.
  bw_.observe(node, t, bytes, seconds - setup_ > seconds * 0.5 ? seconds - setup_ : seconds);
}

migration_estimator::migration_estimator(double prior_a, double prior_b,
                                         std::uint64_t min_samples)
    : prior_a_(prior_a), prior_b_(prior_b), min_samples_(std::max<std::uint64_t>(min_samples, 2)),
      a_(prior_a), b_(prior_b) {}

void migration_estimator::observe(double tokens, double seconds) {
  if (!(tokens >= 0) || !(seconds >= 0) || !std::isfinite(tokens) || !std::isfinite(seconds))
    return;
  ++n_;
  sx_ += tokens;
  sy_ += seconds;
  sxx_ += tokens * tokens;
  sxy_ += tokens * seconds;
  refit();
}

void migration_estimator::refit() {
  if (n_ < min_samples_)
    return;
  const double n = static_cast<double>(n_);
  const double var = sxx_ - sx_ * sx_ / n;
  // All resumes of (nearly) one size pin the mean but not the slope: keep the prior's slope
  // and move the intercept so the line passes through the observed mean.
  if (var <= 1e-9 * std::max(1.0, sxx_)) {
    a_ = prior_a_;
    b_ = sy_ / n - a_ * sx_ / n;
  } else {
    a_ = (sxy_ - sx_ * sy_ / n) / var;
    b_ = (sy_ - a_ * sx_) / n;
  }
  // A negative slope or intercept is noise, not physics: clamp to what a resume can cost.
  if (a_ < 0) {
    a_ = 0;
    b_ = sy_ / n;
  }
  b_ = std::max(b_, 0.0);
}

} // namespace thaw::sched
