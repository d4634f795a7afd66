// The CUDA sampler (gpu/kernels sample) against thaw::sample: the same token for the same
// logits, parameters and (seed, counter), over random and tied logits at vocabularies of 32000
// and 128256, plus the error statuses. It lives with the engine because thaw::sample does.
//
// Shapes: V vocabulary, R rows per launch.
//
// The kernel computes the weights with the device's expf, which may differ from glibc's in the
// last bit, and sums in double in another order; a draw can only change when the uniform lands
// within that rounding of a boundary between two candidates (probability ~1e-6 per draw), so
// each parameter set allows at most 1 mismatch in its draws (in practice 0).
#include "gpu/kernels/kernels.hpp"
#include "gpu/kernels/sample_order.hpp"
#include "gpu/kernels/sample_rng.hpp"
#include "runtime/engine/sampler.hpp"
#include "tests/support/cuda_buffer.hpp"
#include "tests/support/cuda_test.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace k = thaw::cuda::kernels;
using thaw::testing::cuda_sync;
using thaw::testing::device_buffer;

namespace {

constexpr std::int64_t vocabularies[] = {32000, 128256};
constexpr std::int64_t R = 128;

std::vector<k::sample_output> gpu_sample(const std::vector<float>& logits, std::int64_t V,
                                         const std::vector<k::sample_request>& reqs) {
  device_buffer<float> d_logits(logits);
  device_buffer<k::sample_request> d_req(reqs);
  device_buffer<k::sample_output> d_out(reqs.size());
  const cudaError_t e = k::sample(d_logits.get(), static_cast<std::int64_t>(reqs.size()), V,
                                  d_req.get(), d_out.get(), nullptr);
  thaw::testing::cuda_ok(e, "sample");
  cuda_sync();
  return d_out.download();
}

thaw::sampling_params params_of(const k::sample_request& r) {
  thaw::sampling_params p;
  p.temperature = r.temperature;
  p.top_k = r.top_k;
  p.top_p = r.top_p;
  p.min_p = r.min_p;
  p.seed = r.seed;
  p.logprobs = r.want_logprob ? 0 : -1;
  return p;
}

} // namespace

TEST(cuda_sampling, uniform_is_the_cpu_streams) {
  // Host side only: the shared arithmetic against rng_state (runs without a GPU).
  for (std::uint64_t seed : {0ULL, 1ULL, 42ULL, 0xdeadbeefcafef00dULL})
    for (std::uint64_t counter = 0; counter < 100; ++counter) {
      thaw::rng_state rng{seed, counter};
      EXPECT_EQ(k::sample_uniform(seed, counter), rng.next_uniform());
    }
}

TEST(cuda_sampling, order_key_grows_with_the_value_and_ties_zeros) {
  // Host side only: the bisection's keys. Every pair of special and random values (negative
  // numbers, subnormals, both zeros, both infinities, the extremes) orders as the floats do.
  constexpr float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v = {-inf, -std::numeric_limits<float>::max(), -3.5f, -1.0f, -1e-30f,
                          -std::numeric_limits<float>::denorm_min(), -0.0f, 0.0f,
                          std::numeric_limits<float>::denorm_min(),
                          std::numeric_limits<float>::min(), 1e-30f, 0.25f, 1.0f,
                          std::nextafter(1.0f, 2.0f), std::numeric_limits<float>::max(), inf};
  std::mt19937 rng(21);
  for (int i = 0; i < 2000; ++i) {
    const auto bits = static_cast<std::uint32_t>(rng());
    const auto f = std::bit_cast<float>(bits);
    if (f == f)
      v.push_back(f);
  }
  for (const float a : v)
    for (const float b : v) {
      const auto ka = k::sample_order_key(a), kb = k::sample_order_key(b);
      ASSERT_EQ(a < b, ka < kb) << a << " vs " << b;
      ASSERT_EQ(a == b, ka == kb) << a << " vs " << b;
    }
}

TEST(cuda_sampling, key_order_and_prefixes_are_the_cpu_samplers_order) {
  // Host side only: sorting by (key descending, id ascending) gives thaw::sample's by_value_desc
  // order, on quarter-rounded logits with many ties, -0 / +0 and -inf; every prefix is what
  // in_prefix says, and earliest picks the shorter prefix.
  std::mt19937 rng(22);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> l(3000);
  for (auto& x : l)
    x = std::round(normal(rng) * 4.0f) / 4.0f;
  for (int i = 0; i < 40; ++i)
    l[rng() % l.size()] = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < 40; ++i)
    l[rng() % l.size()] = (i % 2) ? -0.0f : 0.0f;
  std::vector<std::int64_t> by_cpu(l.size()), by_key(l.size());
  std::iota(by_cpu.begin(), by_cpu.end(), 0);
  by_key = by_cpu;
  std::sort(by_cpu.begin(), by_cpu.end(), [&](std::int64_t a, std::int64_t b) {
    return l[a] > l[b] || (l[a] == l[b] && a < b);
  });
  std::sort(by_key.begin(), by_key.end(), [&](std::int64_t a, std::int64_t b) {
    const auto ka = k::sample_order_key(l[a]), kb = k::sample_order_key(l[b]);
    return ka > kb || (ka == kb && a < b);
  });
  ASSERT_EQ(by_key, by_cpu);
  for (const std::size_t n : {std::size_t{1}, std::size_t{2}, std::size_t{17}, std::size_t{1500},
                              l.size()}) {
    const std::int64_t last = by_cpu[n - 1];
    const k::sample_boundary b{k::sample_order_key(l[last]), last};
    std::size_t inside = 0;
    for (std::size_t i = 0; i < l.size(); ++i) {
      const bool in = k::sample_in_prefix(k::sample_order_key(l[i]), static_cast<std::int64_t>(i), b);
      const auto at = std::find(by_cpu.begin(), by_cpu.end(), static_cast<std::int64_t>(i)) -
                      by_cpu.begin();
      ASSERT_EQ(in, static_cast<std::size_t>(at) < n) << "prefix " << n << " id " << i;
      inside += in ? 1 : 0;
    }
    EXPECT_EQ(inside, n);
    const std::int64_t other = by_cpu[n / 2];
    const k::sample_boundary c{k::sample_order_key(l[other]), other};
    EXPECT_EQ(k::sample_earliest(b, c).id, other);
    EXPECT_EQ(k::sample_earliest(c, b).id, other);
  }
}

TEST(cuda_sampling, greedy_takes_the_lowest_id_of_tied_maxima) {
  THAW_SKIP_WITHOUT_GPU();
  for (const std::int64_t V : vocabularies) {
    std::vector<float> logits(static_cast<std::size_t>(V), -1.0f);
    logits[9] = logits[5] = logits[static_cast<std::size_t>(V - 1)] = 3.0f;
    logits[7] = -std::numeric_limits<float>::infinity();
    k::sample_request req;
    req.temperature = 0.0f;
    req.want_logprob = 1;
    const auto out = gpu_sample(logits, V, {req});
    EXPECT_EQ(out[0].status, k::sample_status::ok);
    EXPECT_EQ(out[0].token, 5);
    thaw::rng_state rng;
    const auto cpu = thaw::sample(logits, params_of(req), rng);
    ASSERT_TRUE(cpu.has_value());
    EXPECT_NEAR(out[0].logprob, cpu->logprob, 1e-5);
  }
}

TEST(cuda_sampling, reports_the_first_nan_and_all_negative_infinity) {
  THAW_SKIP_WITHOUT_GPU();
  for (const std::int64_t V : vocabularies) {
    std::vector<float> logits(static_cast<std::size_t>(2 * V), 0.5f);
    logits[static_cast<std::size_t>(V - 3)] = std::numeric_limits<float>::quiet_NaN();
    logits[100] = std::numeric_limits<float>::quiet_NaN();
    for (std::int64_t i = V; i < 2 * V; ++i)
      logits[static_cast<std::size_t>(i)] = -std::numeric_limits<float>::infinity();
    const auto out = gpu_sample(logits, V, {k::sample_request{}, k::sample_request{}});
    EXPECT_EQ(out[0].status, k::sample_status::nan_logit);
    EXPECT_EQ(out[0].nan_index, 100);
    EXPECT_EQ(out[1].status, k::sample_status::all_neg_inf);
  }
}

TEST(cuda_sampling, draws_the_cpu_samplers_token) {
  THAW_SKIP_WITHOUT_GPU();
  struct combo {
    float temperature;
    std::int32_t top_k;
    float top_p, min_p;
  };
  const combo combos[] = {
      {1.0f, 0, 1.0f, 0.0f},     {0.7f, 0, 1.0f, 0.0f},    {1.0f, 50, 1.0f, 0.0f},
      {0.8f, 1, 1.0f, 0.0f},     {1.0f, 0, 0.9f, 0.0f},    {0.6f, 0, 0.5f, 0.0f},
      {1.0f, 0, 1.0f, 0.05f},    {1.3f, 0, 1.0f, 0.2f},    {1.0f, 40, 0.95f, 0.0f},
      {1.2f, 40, 0.95f, 0.02f},  {0.9f, 0, 0.8f, 0.1f},    {1.0f, -1, 1.0f, 0.0f},
      {1.0f, 200000, 0.99f, 0.0f},
  };
  std::mt19937 rng(11);
  for (const std::int64_t V : vocabularies)
    for (const bool tied : {false, true}) {
      // Logits like a model's: normal with a spread of 3, a few strong candidates; `tied`
      // rounds them to quarters so that many share a value (order by id among equals).
      std::normal_distribution<float> normal(0.0f, 3.0f);
      std::vector<float> logits(static_cast<std::size_t>(R * V));
      for (auto& x : logits)
        x = tied ? std::round(normal(rng) * 4.0f) / 4.0f : normal(rng);
      for (std::int64_t r = 0; r < R; ++r)
        for (int j = 0; j < 5; ++j)
          logits[static_cast<std::size_t>(r * V + static_cast<std::int64_t>(rng() % V))] +=
              tied ? 8.0f : 8.0f + static_cast<float>(j);
      for (const auto& c : combos) {
        std::vector<k::sample_request> reqs(static_cast<std::size_t>(R));
        for (std::int64_t r = 0; r < R; ++r) {
          auto& q = reqs[static_cast<std::size_t>(r)];
          q.temperature = c.temperature;
          q.top_k = c.top_k;
          q.top_p = c.top_p;
          q.min_p = c.min_p;
          q.seed = rng();
          q.counter = rng() % 1000;
          q.want_logprob = r % 2;
        }
        const auto out = gpu_sample(logits, V, reqs);
        int mismatches = 0;
        for (std::int64_t r = 0; r < R; ++r) {
          const auto& q = reqs[static_cast<std::size_t>(r)];
          thaw::rng_state state{q.seed, q.counter};
          const auto cpu = thaw::sample(
              std::span<const float>(logits.data() + r * V, static_cast<std::size_t>(V)),
              params_of(q), state);
          ASSERT_TRUE(cpu.has_value()) << cpu.err().to_string();
          const auto& g = out[static_cast<std::size_t>(r)];
          ASSERT_EQ(g.status, k::sample_status::ok);
          const std::string what = "V=" + std::to_string(V) + (tied ? " tied" : "") +
                                   " T=" + std::to_string(c.temperature) +
                                   " top_k=" + std::to_string(c.top_k) +
                                   " top_p=" + std::to_string(c.top_p) +
                                   " min_p=" + std::to_string(c.min_p) + " row " +
                                   std::to_string(r);
          if (g.token != cpu->token) {
            ++mismatches;
            std::cerr << "mismatch " << what << ": gpu " << g.token << ", cpu " << cpu->token
                      << '\n';
            continue;
          }
          if (q.want_logprob) {
            EXPECT_NEAR(g.logprob, cpu->logprob, 1e-4) << what;
          }
        }
        EXPECT_LE(mismatches, 1);
      }
    }
}

TEST(cuda_sampling, negative_logits_negative_infinity_and_signed_zeros) {
  THAW_SKIP_WITHOUT_GPU();
  // Rows the random test rarely makes: every logit negative; most logits -inf with top_k larger
  // than the finite ones (the count bisection then ends among the -inf keys); a maximum of 0
  // shared by -0 and +0; each under the filters one at a time and together.
  constexpr float inf = std::numeric_limits<float>::infinity();
  const std::int64_t V = 32000;
  std::mt19937 rng(23);
  std::normal_distribution<float> normal(-20.0f, 2.0f);
  std::vector<float> logits(static_cast<std::size_t>(3 * V));
  for (std::int64_t i = 0; i < V; ++i)
    logits[static_cast<std::size_t>(i)] = std::round(normal(rng) * 2.0f) / 2.0f;
  for (std::int64_t i = V; i < 2 * V; ++i)
    logits[static_cast<std::size_t>(i)] = (i % 997 == 0) ? normal(rng) : -inf;
  for (std::int64_t i = 2 * V; i < 3 * V; ++i)
    logits[static_cast<std::size_t>(i)] = std::min(0.0f, std::round(normal(rng) + 18.0f));
  logits[static_cast<std::size_t>(2 * V + 40)] = -0.0f;
  logits[static_cast<std::size_t>(2 * V + 7)] = 0.0f;
  logits[static_cast<std::size_t>(2 * V + 9000)] = -0.0f;
  struct combo {
    float temperature;
    std::int32_t top_k;
    float top_p, min_p;
  };
  const combo combos[] = {{0.0f, 0, 1.0f, 0.0f},  {1.0f, 0, 1.0f, 0.0f},  {1.0f, 100, 1.0f, 0.0f},
                          {0.9f, 0, 0.7f, 0.0f},  {1.1f, 0, 1.0f, 0.1f},  {1.0f, 60, 0.9f, 0.05f},
                          {1.0f, 5, 1.0f, 0.0f}};
  for (const auto& c : combos) {
    std::vector<k::sample_request> reqs;
    for (int rep = 0; rep < 16; ++rep)
      for (std::int64_t r = 0; r < 3; ++r) {
        k::sample_request q;
        q.temperature = c.temperature;
        q.top_k = c.top_k;
        q.top_p = c.top_p;
        q.min_p = c.min_p;
        q.seed = rng();
        q.counter = static_cast<std::uint64_t>(rep);
        q.want_logprob = 1;
        reqs.push_back(q);
      }
    std::vector<float> all;
    for (int rep = 0; rep < 16; ++rep)
      all.insert(all.end(), logits.begin(), logits.end());
    const auto out = gpu_sample(all, V, reqs);
    int mismatches = 0;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      const auto r = static_cast<std::int64_t>(i % 3);
      thaw::rng_state state{reqs[i].seed, reqs[i].counter};
      const auto cpu = thaw::sample(
          std::span<const float>(logits.data() + r * V, static_cast<std::size_t>(V)),
          params_of(reqs[i]), state);
      ASSERT_TRUE(cpu.has_value());
      ASSERT_EQ(out[i].status, k::sample_status::ok);
      if (out[i].token != cpu->token) {
        ++mismatches;
        continue;
      }
      EXPECT_NEAR(out[i].logprob, cpu->logprob, 1e-4) << "row " << r;
    }
    EXPECT_LE(mismatches, 1) << "T=" << c.temperature << " top_k=" << c.top_k
                             << " top_p=" << c.top_p << " min_p=" << c.min_p;
  }
}
