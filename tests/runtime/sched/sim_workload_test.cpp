#include "runtime/sched/sim_workload.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace thaw::sched {
namespace {

TEST(SimWorkload, ReadsAnAzureTraceAsSecondsFromTheFirstRequest) {
  auto t = parse_azure_trace("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                             "2023-11-16 23:59:59.5000000,374,44\r\n"
                             "2023-11-17 00:00:01.0000000,396,109\n",
                             "t.csv");
  ASSERT_TRUE(t) << t.err().to_string();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_DOUBLE_EQ((*t)[0].arrival, 0.0);
  EXPECT_NEAR((*t)[1].arrival, 1.5, 1e-6); // across midnight
  EXPECT_EQ((*t)[1].input_tokens, 396);
  EXPECT_EQ((*t)[1].output_tokens, 109);
}

TEST(SimWorkload, ABadLineIsAnErrorNamingFileAndLine) {
  auto t = parse_azure_trace("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                             "2023-11-16 18:15:46.68,374,44\n"
                             "2023-11-16 18:15:47.00,many,44\n",
                             "t.csv");
  ASSERT_FALSE(t);
  EXPECT_NE(t.err().message.find("t.csv:3"), std::string::npos) << t.err().message;
}

TEST(SimWorkload, PopularityStretchesWithAZipfTailAndCutsToTheTop) {
  auto p = parse_popularity("model_id,requests\nM2,100\nM1,1000\nM3,10\n", "p.csv");
  ASSERT_TRUE(p);
  EXPECT_EQ(*p, (std::vector<double>{1000, 100, 10}));
  EXPECT_NEAR(fitted_zipf_exponent(*p), std::log(10) / std::log(2) * 1.0, 1.2); // steep
  auto w = model_weights(*p, 10);
  ASSERT_EQ(w.size(), 10u);
  EXPECT_EQ(w[0], 1000);
  EXPECT_EQ(w[2], 10);
  for (std::size_t i = 3; i < w.size(); ++i) {
    EXPECT_GT(w[i], 0);
    EXPECT_LT(w[i], w[i - 1]);
  }
  EXPECT_EQ(model_weights(*p, 2), (std::vector<double>{1000, 100}));
}

TEST(SimWorkload, RequestsFollowTheTraceScaledAndRepeated) {
  std::vector<trace_request> trace = {{0, 10, 1}, {10, 20, 2}, {20, 30, 3}};
  std::vector<double> w = {3, 1};
  auto once = make_requests(trace, w, 1.0, 0, 7);
  ASSERT_EQ(once.size(), 3u);
  EXPECT_EQ(once[1].input_tokens, 20);
  auto fast = make_requests(trace, w, 2.0, 0, 7);
  ASSERT_EQ(fast.size(), 3u);
  EXPECT_DOUBLE_EQ(fast[2].arrival, 10.0);
  EXPECT_EQ(fast[2].model, once[2].model); // the same seed draws the same models
  auto longer = make_requests(trace, w, 1.0, 60, 7);
  EXPECT_GE(longer.size(), 6u);
  EXPECT_TRUE(std::is_sorted(longer.begin(), longer.end(),
                             [](const auto& a, const auto& b) { return a.arrival < b.arrival; }));
  EXPECT_LE(longer.back().arrival, 60.0);
  // Draws follow the weights.
  std::vector<trace_request> many(4000);
  for (std::size_t i = 0; i < many.size(); ++i)
    many[i] = {static_cast<double>(i), 1, 1};
  auto r = make_requests(many, w, 1.0, 0, 1);
  const auto zeros = std::count_if(r.begin(), r.end(), [](auto& x) { return x.model == 0; });
  EXPECT_NEAR(static_cast<double>(zeros) / r.size(), 0.75, 0.03);
}

} // namespace
} // namespace thaw::sched
