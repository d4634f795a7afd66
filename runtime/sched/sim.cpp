#include "runtime/sched/sim.hpp"

#include "runtime/sched/sim_cluster.hpp"

#include <algorithm>
#include <cmath>

namespace thaw::sched {

double quantile(std::vector<double> v, double q) {
  if (v.empty())
    return 0;
  q = std::clamp(q, 0.0, 1.0);
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  rank = std::clamp<std::size_t>(rank, 1, v.size()) - 1;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(rank), v.end());
  return v[rank];
}

sim_summary summarize(const sim_result& r, double slo_ttft) {
  sim_summary s;
  s.ttft_p50 = quantile(r.ttft, 0.50);
  s.ttft_p90 = quantile(r.ttft, 0.90);
  s.ttft_p99 = quantile(r.ttft, 0.99);
  s.e2e_p50 = quantile(r.e2e, 0.50);
  s.e2e_p90 = quantile(r.e2e, 0.90);
  s.e2e_p99 = quantile(r.e2e, 0.99);
  if (r.requests > 0) {
    const auto met = std::count_if(r.ttft.begin(), r.ttft.end(),
                                   [&](double t) { return t <= slo_ttft; });
    s.slo_attainment = static_cast<double>(met) / static_cast<double>(r.requests);
  }
  if (r.slot_seconds > 0) {
    s.slot_utilisation = r.busy_slot_seconds / r.slot_seconds;
    s.slot_occupancy = r.occupied_slot_seconds / r.slot_seconds;
  }
  return s;
}

expected<sim_result> simulate(const sim_config& cfg, const std::vector<sim_request>& requests) {
  if (cfg.nodes == 0 || cfg.slots_per_node <= 0)
    return make_error(errc::invalid_argument, "sim: nodes and slots per node must be at least 1");
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].model >= cfg.models.size())
      return make_error(errc::invalid_argument,
                        "sim: request " + std::to_string(i) + " is for model " +
                            std::to_string(requests[i].model) + " but only " +
                            std::to_string(cfg.models.size()) + " are configured");
    if (i > 0 && requests[i].arrival < requests[i - 1].arrival)
      return make_error(errc::invalid_argument, "sim: requests are not in arrival order");
  }
  for (const auto& m : cfg.models)
    if (!(m.bytes > 0) || !(m.prefill_tps > 0) || !(m.decode_tps > 0) || m.concurrency < 1 ||
        m.max_instances < 1 || m.min_instances < 0)
      return make_error(errc::invalid_argument,
                        "sim: a model needs bytes, prefill and decode speeds above 0, "
                        "concurrency and max_instances of at least 1");
  sim_cluster c{cfg, requests};
  return c.run();
}

} // namespace thaw::sched
