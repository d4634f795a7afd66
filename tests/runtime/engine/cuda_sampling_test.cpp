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
#include "gpu/kernels/sample_rng.hpp"
#include "runtime/engine/sampler.hpp"
#include "tests/support/cuda_buffer.hpp"
#include "tests/support/cuda_test.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
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
