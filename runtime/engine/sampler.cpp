#include "runtime/engine/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>

namespace thaw {

namespace {

/// splitmix64's finaliser: a bijection on 64 bits with full avalanche.
constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

error bad(std::string what) { return make_error(errc::invalid_argument, std::move(what)); }

/// Orders token ids by value, largest first; ties by the lower id (repeatable everywhere).
struct by_value_desc {
  const float* v;
  bool operator()(std::int32_t a, std::int32_t b) const noexcept {
    return v[a] > v[b] || (v[a] == v[b] && a < b);
  }
};

/// The `k` ids with the largest values, sorted by by_value_desc; O(V + k log k).
std::vector<std::int32_t> top_ids(std::span<const float> v, std::size_t k) {
  std::vector<std::int32_t> ids(v.size());
  std::iota(ids.begin(), ids.end(), 0);
  k = std::min(k, ids.size());
  by_value_desc cmp{v.data()};
  std::nth_element(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(), cmp);
  ids.resize(k);
  std::sort(ids.begin(), ids.end(), cmp);
  return ids;
}

} // namespace

status sampling_params::validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0f)
    return bad("temperature: " + std::to_string(temperature) + " (must be a finite number >= 0)");
  if (!(top_p > 0.0f && top_p <= 1.0f))
    return bad("top_p: " + std::to_string(top_p) + " (must be in (0, 1])");
  if (top_k < -1)
    return bad("top_k: " + std::to_string(top_k) + " (must be -1, 0 or positive)");
  if (!(min_p >= 0.0f && min_p <= 1.0f))
    return bad("min_p: " + std::to_string(min_p) + " (must be in [0, 1])");
  if (logprobs < -1 || logprobs > max_logprobs)
    return bad("logprobs: " + std::to_string(logprobs) + " (must be in [-1, " +
               std::to_string(max_logprobs) + "])");
  return {};
}

double rng_state::next_uniform() noexcept {
  const std::uint64_t bits = mix64(mix64(seed ^ 0x6a09e667f3bcc909ULL) + mix64(counter));
  ++counter;
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

expected<sample_result> sample(std::span<const float> logits, const sampling_params& params,
                               rng_state& rng) {
  if (logits.empty())
    return bad("logits: empty");
  THAW_TRY(params.validate());
  const auto vocab = logits.size();

  // Maximum and NaN check without branches, four floats at a time (GCC vector extensions, plain
  // SSE2; a compare-and-branch loop was 14% of a one-token request on a 32k vocabulary), then
  // the first index of the maximum (ties: lowest id).
  using v4f = float __attribute__((vector_size(16)));
  using v4i = std::int32_t __attribute__((vector_size(16)));
  v4f max0 = {-INFINITY, -INFINITY, -INFINITY, -INFINITY}, max1 = max0;
  v4i nan0 = {0, 0, 0, 0}, nan1 = nan0;
  std::size_t i = 0;
  for (; i + 8 <= vocab; i += 8) {
    v4f a, b;
    std::memcpy(&a, logits.data() + i, sizeof a);
    std::memcpy(&b, logits.data() + i + 4, sizeof b);
    nan0 |= a != a;
    nan1 |= b != b;
    max0 = a > max0 ? a : max0;
    max1 = b > max1 ? b : max1;
  }
  max0 = max1 > max0 ? max1 : max0;
  nan0 |= nan1;
  bool any_nan = (nan0[0] | nan0[1] | nan0[2] | nan0[3]) != 0;
  float lane_max = std::max(std::max(max0[0], max0[1]), std::max(max0[2], max0[3]));
  for (; i < vocab; ++i) {
    const float v = logits[i];
    any_nan |= v != v;
    lane_max = v > lane_max ? v : lane_max;
  }
  if (any_nan) {
    const auto at = std::find_if(logits.begin(), logits.end(), [](float v) { return v != v; });
    return bad("logits: NaN at token " + std::to_string(at - logits.begin()));
  }
  const float max_logit = lane_max;
  if (max_logit == -INFINITY)
    return bad("logits: every logit is -inf");
  const auto best = static_cast<std::size_t>(
      std::find(logits.begin(), logits.end(), max_logit) - logits.begin());

  // Raw log-softmax, computed only when log-probabilities are asked for (a pass of exp over a
  // 150k vocabulary costs as much as the draw itself).
  sample_result out;
  double log_z = 0.0;
  if (params.logprobs >= 0) {
    double z = 0.0;
    for (std::size_t i = 0; i < vocab; ++i)
      z += std::exp(logits[i] - max_logit);
    log_z = std::log(z) + max_logit;
  }
  auto finish = [&](std::size_t pick) {
    out.token = static_cast<std::int32_t>(pick);
    if (params.logprobs >= 0)
      out.logprob = static_cast<float>(static_cast<double>(logits[pick]) - log_z);
    if (params.logprobs > 0)
      for (auto id : top_ids(logits, static_cast<std::size_t>(params.logprobs)))
        out.top.push_back(
            {id, static_cast<float>(static_cast<double>(logits[static_cast<std::size_t>(id)]) - log_z)});
    return out;
  };

  if (params.temperature == 0.0f)
    return finish(best);

  // Weights at temperature T, exp((l - max) / T) in (0, 1], computed once.
  thread_local std::vector<float> w;
  w.resize(vocab);
  const float inv_t = 1.0f / params.temperature;
  double total = 0.0;
  for (std::size_t i = 0; i < vocab; ++i) {
    w[i] = std::exp((logits[i] - max_logit) * inv_t);
    total += w[i];
  }
  const bool top_k_on = params.top_k > 0 && static_cast<std::size_t>(params.top_k) < vocab;
  const bool filtered = top_k_on || params.top_p < 1.0f || params.min_p > 0.0f;
  const double u = rng.next_uniform();

  if (!filtered) {
    // No filter: inverse CDF over all ids in id order.
    const double target = u * total;
    double acc = 0.0;
    std::size_t pick = best;
    for (std::size_t i = 0; i < vocab; ++i) {
      if (w[i] == 0.0f)
        continue;
      acc += w[i];
      pick = i;
      if (acc > target)
        break;
    }
    return finish(pick);
  }

  // The candidate head, ordered by by_value_desc: the top_k, or (top_p / min_p alone) the ids
  // above a weight threshold that holds enough of the mass; see below.
  std::vector<std::int32_t> head;
  auto mass_of = [&](std::size_t n) {
    double m = 0.0;
    for (std::size_t i = 0; i < n; ++i)
      m += w[static_cast<std::size_t>(head[i])];
    return m;
  };
  if (top_k_on) {
    head = top_ids(logits, static_cast<std::size_t>(params.top_k));
    total = mass_of(head.size()); // top-p applies to the renormalised top-k (vLLM's order)
  } else {
    // Candidates above a weight threshold, lowered 32x at a time until they hold top_p of the
    // mass (min_p alone needs only those above min_p): a linear scan each time, and a sort of
    // the few that pass, instead of ordering a 150k vocabulary.
    const double need = params.top_p < 1.0f ? params.top_p * total : 0.0;
    for (float tau = params.min_p > 0.0f ? params.min_p : 1e-2f;; tau /= 32.0f) {
      head.clear();
      double mass = 0.0;
      for (std::size_t i = 0; i < vocab; ++i)
        if (w[i] >= tau) {
          head.push_back(static_cast<std::int32_t>(i));
          mass += w[i];
        }
      if (mass >= need || tau < 1e-30f || head.size() == vocab)
        break;
    }
    std::sort(head.begin(), head.end(), by_value_desc{logits.data()});
  }
  std::size_t keep = head.size();
  if (params.top_p < 1.0f) {
    double acc = 0.0;
    for (std::size_t i = 0; i < head.size(); ++i) {
      acc += w[static_cast<std::size_t>(head[i])];
      if (acc >= params.top_p * total) {
        keep = i + 1;
        break;
      }
    }
  }
  if (params.min_p > 0.0f) {
    // p / p_max is the weight itself at temperature T, since the head's first weight is 1.
    std::size_t i = 1;
    while (i < keep && w[static_cast<std::size_t>(head[i])] >= params.min_p)
      ++i;
    keep = i;
  }
  const double target = u * mass_of(keep);
  double acc = 0.0;
  std::int32_t pick = head[0];
  for (std::size_t i = 0; i < keep; ++i) {
    acc += w[static_cast<std::size_t>(head[i])];
    pick = head[i];
    if (acc > target)
      break;
  }
  return finish(static_cast<std::size_t>(pick));
}

} // namespace thaw
