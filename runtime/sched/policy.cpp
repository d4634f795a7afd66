#include "runtime/sched/policy.hpp"

#include <algorithm>
#include <limits>
#include <numeric>
#include <string>
#include <tuple>

namespace thaw::sched {

const char* to_string(policy_kind p) noexcept {
  switch (p) {
  case policy_kind::random:
    return "random";
  case policy_kind::least_loaded:
    return "least-loaded";
  case policy_kind::locality:
    return "locality";
  case policy_kind::locality_migrate:
    return "locality-migrate";
  }
  return "unknown";
}

expected<policy_kind> parse_policy(std::string_view name) {
  for (auto p : all_policies)
    if (name == to_string(p))
      return p;
  return make_error(errc::invalid_argument,
                    "policy '" + std::string{name} +
                        "' is not one of random, least-loaded, locality, locality-migrate");
}

namespace {

struct available {
  std::uint32_t node;
  std::int32_t slot;
  std::uint64_t evict;
};

std::vector<available> available_nodes(const cluster_view& view) {
  std::vector<available> out;
  for (std::uint32_t n = 0; n < view.nodes.size(); ++n) {
    const auto& node = view.nodes[n];
    if (!node.up)
      continue;
    std::uint64_t evict = 0;
    if (auto slot = node.available_slot(&evict); slot >= 0)
      out.push_back({n, slot, evict});
  }
  return out;
}

} // namespace

placer::placer(policy_kind kind, std::uint64_t seed, std::size_t migrate_candidates)
    : kind_(kind), rng_(seed), migrate_candidates_(std::max<std::size_t>(migrate_candidates, 1)) {}

double placer::startup(const cluster_view& view, std::uint32_t node, const placement_request& req,
                       const estimators& est) const {
  return est.startup.estimate(node, view.tier_of(node, req.model), req.bytes,
                              view.nodes[node].loader_wait);
}

decision placer::place(const cluster_view& view, const placement_request& req,
                       const estimators& est) {
  decision d;
  const auto avail = available_nodes(view);
  if (!avail.empty()) {
    std::size_t pick = 0;
    switch (kind_) {
    case policy_kind::random:
      pick = static_cast<std::size_t>(rng_() % avail.size());
      break;
    case policy_kind::least_loaded: {
      auto key = [&](const available& a) {
        const auto& n = view.nodes[a.node];
        return std::make_tuple(n.load, n.instances.size(), a.node);
      };
      pick = static_cast<std::size_t>(
          std::min_element(avail.begin(), avail.end(),
                           [&](const auto& a, const auto& b) { return key(a) < key(b); }) -
          avail.begin());
      break;
    }
    case policy_kind::locality:
    case policy_kind::locality_migrate: {
      double best = std::numeric_limits<double>::infinity();
      std::int32_t best_load = 0;
      for (std::size_t i = 0; i < avail.size(); ++i) {
        const double s = startup(view, avail[i].node, req, est);
        const auto load = view.nodes[avail[i].node].load;
        // Equal estimates (the same tier, the same bandwidth) go to the less loaded node.
        if (s < best || (s == best && load < best_load)) {
          best = s;
          best_load = load;
          pick = i;
        }
      }
      break;
    }
    }
    const auto& a = avail[pick];
    d.placed = true;
    d.node = a.node;
    d.slot = a.slot;
    d.source = view.tier_of(a.node, req.model);
    d.startup_seconds = startup(view, a.node, req, est);
    if (a.evict != 0)
      d.evictions.push_back(a.evict);
  }
  if (kind_ == policy_kind::locality_migrate && !avail.empty())
    try_migration(view, req, est, d);
  return d;
}

void placer::try_migration(const cluster_view& view, const placement_request& req,
                           const estimators& est, decision& best) const {
  // Full nodes that would start the model sooner than the best node with a slot, best first;
  // only the first few are worth the search.
  std::vector<std::pair<double, std::uint32_t>> full;
  for (std::uint32_t n = 0; n < view.nodes.size(); ++n) {
    const auto& node = view.nodes[n];
    if (!node.up || node.available_slot() >= 0)
      continue;
    const double s = startup(view, n, req, est);
    if (!best.placed || s < best.startup_seconds)
      full.emplace_back(s, n);
  }
  if (full.empty())
    return;
  const std::size_t k = std::min(full.size(), migrate_candidates_);
  std::partial_sort(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(k), full.end());
  full.resize(k);

  const auto avail = available_nodes(view);
  for (const auto& [here, x] : full) {
    for (const auto& inst : view.nodes[x].instances) {
      if (!inst.movable || inst.sequences == 0)
        continue;
      const double recompute = est.migration.estimate(static_cast<double>(inst.tokens));
      for (const auto& y : avail) {
        const tier src = view.tier_of(y.node, inst.model);
        const double move =
            est.startup.estimate(y.node, src, inst.bytes, view.nodes[y.node].loader_wait) +
            recompute;
        // The new instance waits for the slot to empty, then loads.
        const double total = move + here;
        if (best.placed && total >= best.startup_seconds)
          continue;
        best.placed = true;
        best.node = x;
        best.slot = inst.slot;
        best.source = view.tier_of(x, req.model);
        best.startup_seconds = total;
        best.evictions.clear();
        if (y.evict != 0)
          best.evictions.push_back(y.evict);
        best.migrations = {migration{inst.id, x, y.node, y.slot, src, move}};
      }
    }
  }
}

std::vector<std::uint32_t> placer::rank(const cluster_view& view, const placement_request& req,
                                        const estimators& est) {
  std::vector<std::uint32_t> order;
  for (std::uint32_t n = 0; n < view.nodes.size(); ++n)
    if (view.nodes[n].up)
      order.push_back(n);
  std::vector<double> key(view.nodes.size(), 0.0);
  switch (kind_) {
  case policy_kind::random:
    std::shuffle(order.begin(), order.end(), rng_);
    break;
  case policy_kind::least_loaded:
    for (auto n : order)
      key[n] = view.nodes[n].load;
    break;
  case policy_kind::locality:
  case policy_kind::locality_migrate:
    for (auto n : order)
      key[n] = startup(view, n, req, est);
    break;
  }
  std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    const bool fa = view.nodes[a].available_slot() < 0;
    const bool fb = view.nodes[b].available_slot() < 0;
    // Equal keys (the same tier everywhere) go to the less loaded node first.
    return std::tie(fa, key[a], view.nodes[a].load) < std::tie(fb, key[b], view.nodes[b].load);
  });
  return order;
}

} // namespace thaw::sched
