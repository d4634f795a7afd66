#include "runtime/engine/sampler.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <random>

namespace thaw {
namespace {

std::int32_t draw(std::span<const float> logits, sampling_params p, rng_state& rng) {
  auto r = sample(logits, p, rng);
  EXPECT_TRUE(r) << r.err().to_string();
  return r ? r->token : -1;
}

TEST(Sampler, GreedyIsArgmaxWithTiesToTheLowestIdAndDrawsNothing) {
  std::vector<float> l{0.5f, 2.0f, -1.0f, 2.0f};
  sampling_params p;
  p.temperature = 0.0f;
  rng_state rng{1, 0};
  EXPECT_EQ(draw(l, p, rng), 1);
  EXPECT_EQ(rng.counter, 0u);
}

TEST(Sampler, SameSeedSameStreamOtherSeedOtherStream) {
  std::vector<float> l(100);
  for (std::size_t i = 0; i < l.size(); ++i)
    l[i] = static_cast<float>(std::sin(static_cast<double>(i)));
  sampling_params p;
  auto run = [&](std::uint64_t seed) {
    rng_state rng{seed, 0};
    std::vector<std::int32_t> out;
    for (int i = 0; i < 64; ++i)
      out.push_back(draw(l, p, rng));
    EXPECT_EQ(rng.counter, 64u); // one draw per sample
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampler, ResumingAStreamAtItsCounterContinuesIt) {
  std::vector<float> l{1.0f, 1.1f, 0.9f, 1.2f, 0.3f};
  sampling_params p;
  rng_state a{9, 0};
  std::vector<std::int32_t> whole;
  for (int i = 0; i < 20; ++i)
    whole.push_back(draw(l, p, a));
  rng_state b{9, 12}; // as imported after 12 tokens
  for (int i = 12; i < 20; ++i)
    EXPECT_EQ(draw(l, p, b), whole[static_cast<std::size_t>(i)]);
}

TEST(Sampler, FrequenciesFollowSoftmaxOfLogitsOverTemperature) {
  std::vector<float> l{0.0f, 1.0f, 2.0f, -1.0f};
  for (float t : {1.0f, 0.5f}) {
    sampling_params p;
    p.temperature = t;
    rng_state rng{5, 0};
    const int n = 40000;
    std::vector<int> count(l.size());
    for (int i = 0; i < n; ++i)
      ++count[static_cast<std::size_t>(draw(l, p, rng))];
    double z = 0;
    for (float x : l)
      z += std::exp(x / t);
    double chi2 = 0;
    for (std::size_t i = 0; i < l.size(); ++i) {
      const double e = n * std::exp(l[i] / t) / z;
      chi2 += (count[i] - e) * (count[i] - e) / e;
    }
    EXPECT_LT(chi2, 16.3) << "temperature " << t; // 3 degrees of freedom, p = 0.001
  }
}

TEST(Sampler, TopKOneIsGreedyAndTopKNeverLeavesTheHead) {
  std::vector<float> l{3.0f, 2.9f, 2.8f, 2.7f, 0.0f, 2.95f};
  sampling_params p;
  p.top_k = 1;
  rng_state rng{1, 0};
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(draw(l, p, rng), 0);
  p.top_k = 2;
  std::map<std::int32_t, int> seen;
  for (int i = 0; i < 2000; ++i)
    ++seen[draw(l, p, rng)];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen.count(0) && seen.count(5));
}

TEST(Sampler, TopPKeepsTheSmallestHeadHoldingTheMass) {
  // Probabilities 0.5, 0.25, 0.125, 0.125 (logits are their logs).
  std::vector<float> l{std::log(0.5f), std::log(0.25f), std::log(0.125f), std::log(0.125f)};
  sampling_params p;
  p.top_p = 0.6f; // 0.5 < 0.6 <= 0.75: ids 0 and 1
  rng_state rng{3, 0};
  std::map<std::int32_t, int> seen;
  for (int i = 0; i < 3000; ++i)
    ++seen[draw(l, p, rng)];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_NEAR(seen[0] / 3000.0, 2.0 / 3.0, 0.04);
  p.top_p = 1.0f;
  seen.clear();
  for (int i = 0; i < 3000; ++i)
    ++seen[draw(l, p, rng)];
  EXPECT_EQ(seen.size(), 4u);
}

TEST(Sampler, TopPOverALargeVocabularyKeepsOnlyTheHead) {
  // 150k tokens with a heavy tail: the head search must grow past its first guess.
  std::vector<float> l(151936, 0.0f);
  for (int i = 0; i < 300; ++i)
    l[static_cast<std::size_t>(i * 7)] = 9.0f;
  sampling_params p;
  p.top_p = 0.5f;
  rng_state rng{11, 0};
  for (int i = 0; i < 100; ++i) {
    auto t = draw(l, p, rng);
    EXPECT_EQ(t % 7, 0);
    EXPECT_LT(t, 300 * 7);
  }
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  std::vector<float> l{0.0f, std::log(0.5f), std::log(0.05f)};
  sampling_params p;
  p.min_p = 0.1f; // keeps p >= 0.1 p_max: ids 0 and 1
  rng_state rng{4, 0};
  for (int i = 0; i < 2000; ++i)
    EXPECT_NE(draw(l, p, rng), 2);
}

TEST(Sampler, LogprobsAreRawLogSoftmaxWithTheTopSorted) {
  std::vector<float> l{1.0f, 3.0f, 2.0f, -4.0f, 0.5f};
  sampling_params p;
  p.temperature = 0.7f;
  p.logprobs = 3;
  rng_state rng{8, 0};
  auto r = sample(l, p, rng);
  ASSERT_TRUE(r);
  double z = 0;
  for (float x : l)
    z += std::exp(x);
  EXPECT_NEAR(r->logprob, l[static_cast<std::size_t>(r->token)] - std::log(z), 1e-5);
  ASSERT_EQ(r->top.size(), 3u);
  EXPECT_EQ(r->top[0].id, 1);
  EXPECT_EQ(r->top[1].id, 2);
  EXPECT_EQ(r->top[2].id, 0);
  EXPECT_NEAR(r->top[0].logprob, 3.0 - std::log(z), 1e-5);
  p.logprobs = 0;
  EXPECT_TRUE(sample(l, p, rng)->top.empty());
}

TEST(Sampler, InvalidParametersAndLogitsAreRefusedNamingTheField) {
  std::vector<float> l{1.0f, 2.0f};
  rng_state rng;
  auto refused = [&](sampling_params p, std::span<const float> logits, const std::string& field) {
    auto r = sample(logits, p, rng);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, errc::invalid_argument);
    EXPECT_NE(r.err().message.find(field), std::string::npos) << r.err().message;
  };
  sampling_params p;
  p.temperature = -1.0f;
  refused(p, l, "temperature");
  p = {};
  p.temperature = std::numeric_limits<float>::infinity();
  refused(p, l, "temperature");
  p = {};
  p.top_p = 0.0f;
  refused(p, l, "top_p");
  p = {};
  p.top_p = 1.5f;
  refused(p, l, "top_p");
  p = {};
  p.top_k = -2;
  refused(p, l, "top_k");
  p = {};
  p.min_p = 2.0f;
  refused(p, l, "min_p");
  p = {};
  p.logprobs = 21;
  refused(p, l, "logprobs");
  refused({}, {}, "logits");
  std::vector<float> nan{1.0f, std::numeric_limits<float>::quiet_NaN()};
  refused({}, nan, "NaN at token 1");
  std::vector<float> all_inf(3, -std::numeric_limits<float>::infinity());
  refused({}, all_inf, "-inf");
}

TEST(Sampler, MinusInfinityLogitsAreNeverChosen) {
  std::vector<float> l{-std::numeric_limits<float>::infinity(), 0.0f,
                       -std::numeric_limits<float>::infinity()};
  rng_state rng{2, 0};
  for (int i = 0; i < 200; ++i)
    EXPECT_EQ(draw(l, {}, rng), 1);
}

// Not a timed test: prints the cost of one sample so the note can quote it.
TEST(Sampler, ReportsTheCostOfOneSample) {
  for (std::size_t vocab : {32000u, 151936u}) {
    std::vector<float> l(vocab);
    std::mt19937 gen(1);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    for (auto& x : l)
      x = nd(gen);
    for (auto [name, p] : {std::pair{"greedy", sampling_params{0.0f}},
                           std::pair{"T=0.8", sampling_params{0.8f}},
                           std::pair{"top_p=0.9", sampling_params{0.8f, 0, 0.9f}},
                           std::pair{"top_k=40", sampling_params{0.8f, 40}}}) {
      rng_state rng{1, 0};
      const int n = 20;
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i)
        (void)draw(l, p, rng);
      auto us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / n;
      std::cout << "[ sampler ] vocab " << vocab << " " << name << ": " << us << " us/sample\n";
    }
  }
}

} // namespace
} // namespace thaw
