#include "bench/serve_workload.hpp"

#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <cmath>
#include <map>

namespace thaw::bench {
namespace {

const std::filesystem::path traces =
    std::filesystem::path(THAW_SOURCE_DIR) / ".." / "shared" / "traces";

std::filesystem::path trace_or_skip(const char* name) {
  auto p = traces / name;
  if (!std::filesystem::exists(p))
    return {};
  return p;
}

TEST(ServeWorkload, ReadsTheAzureConversationTrace) {
  const auto path = trace_or_skip("AzureLLMInferenceTrace_conv_2023.csv");
  if (path.empty())
    GTEST_SKIP() << "no " << traces << " on this machine";
  auto r = load_azure_trace({.path = path});
  ASSERT_TRUE(r) << r.err().to_string();
  // The header and 19366 requests (the last line has no newline).
  ASSERT_EQ(r->size(), 19366u);
  // First rows: 18:15:46.6805900 374,44 then 18:15:50.9951690 396,109.
  EXPECT_DOUBLE_EQ((*r)[0].arrival_s, 0.0);
  EXPECT_EQ((*r)[0].prompt_tokens, 374);
  EXPECT_EQ((*r)[0].output_tokens, 44);
  EXPECT_NEAR((*r)[1].arrival_s, 4.314579, 1e-5);
  EXPECT_EQ((*r)[1].prompt_tokens, 396);
  EXPECT_EQ((*r)[1].output_tokens, 109);
  // The trace spans 18:15:46.68 to 19:14:08.40, just under an hour.
  EXPECT_NEAR(r->back().arrival_s, 3501.72, 0.01);
  for (std::size_t i = 1; i < r->size(); ++i)
    ASSERT_LE((*r)[i - 1].arrival_s, (*r)[i].arrival_s);
}

TEST(ServeWorkload, ScalesTimeCapsLengthsAndCutsTheCodeTrace) {
  const auto path = trace_or_skip("AzureLLMInferenceTrace_code_2023.csv");
  if (path.empty())
    GTEST_SKIP() << "no " << traces << " on this machine";
  auto full = load_azure_trace({.path = path});
  ASSERT_TRUE(full) << full.err().to_string();
  auto fast = load_azure_trace({.path = path,
                                .time_scale = 10,
                                .max_prompt_tokens = 200,
                                .max_output_tokens = 50,
                                .duration_s = 30});
  ASSERT_TRUE(fast) << fast.err().to_string();
  ASSERT_FALSE(fast->empty());
  ASSERT_LT(fast->size(), full->size());
  // Ten times faster: the request at 300 s of the trace now comes at 30 s, so exactly the
  // requests of the first 300 s are kept.
  std::size_t in_300s = 0;
  for (const auto& q : *full)
    in_300s += q.arrival_s < 300 ? 1 : 0;
  EXPECT_EQ(fast->size(), in_300s);
  for (std::size_t i = 0; i < fast->size(); ++i) {
    EXPECT_NEAR((*fast)[i].arrival_s, (*full)[i].arrival_s / 10, 1e-9);
    EXPECT_EQ((*fast)[i].prompt_tokens, std::min((*full)[i].prompt_tokens, 200));
    EXPECT_EQ((*fast)[i].output_tokens, std::min((*full)[i].output_tokens, 50));
    EXPECT_LT((*fast)[i].arrival_s, 30);
  }
  auto first5 = load_azure_trace({.path = path, .max_requests = 5});
  ASSERT_TRUE(first5);
  EXPECT_EQ(first5->size(), 5u);
  // The code trace's first row: 4808 context tokens, 10 generated.
  EXPECT_EQ((*first5)[0].prompt_tokens, 4808);
  EXPECT_EQ((*first5)[0].output_tokens, 10);
}

TEST(ServeWorkload, ReportsMissingFilesAndBadRowsByName) {
  testing::temp_dir dir;
  auto missing = load_azure_trace({.path = dir.path() / "nope.csv"});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.err().code, errc::not_found);
  EXPECT_NE(missing.err().message.find("nope.csv"), std::string::npos);

  const auto bad = dir.path() / "bad.csv";
  std::ofstream(bad) << "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                        "2023-11-16 18:17:03.9799600,10,5\n"
                        "2023-11-16 18:17:04.0319600,ten,5\n";
  auto r = load_azure_trace({.path = bad});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::parse_error);
  EXPECT_NE(r.err().message.find("bad.csv:3"), std::string::npos) << r.err().message;
  EXPECT_NE(r.err().message.find("ContextTokens"), std::string::npos) << r.err().message;

  const auto wrong = dir.path() / "wrong.csv";
  std::ofstream(wrong) << "model_id,requests\nM1,3\n";
  auto w = load_azure_trace({.path = wrong});
  ASSERT_FALSE(w);
  EXPECT_EQ(w.err().code, errc::parse_error);
}

TEST(ServeWorkload, PoissonArrivalsAreReproducibleBySeed) {
  poisson_options o{
      .rate = 5, .duration_s = 100, .prompt_tokens = 32, .output_tokens = 8, .seed = 7};
  auto a = poisson_workload(o);
  auto b = poisson_workload(o);
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->size(), b->size());
  for (std::size_t i = 0; i < a->size(); ++i)
    EXPECT_EQ((*a)[i].arrival_s, (*b)[i].arrival_s);
  o.seed = 8;
  auto c = poisson_workload(o);
  ASSERT_TRUE(c);
  EXPECT_NE((*a)[0].arrival_s, (*c)[0].arrival_s);
  for (const auto& r : *a) {
    EXPECT_EQ(r.prompt_tokens, 32);
    EXPECT_EQ(r.output_tokens, 8);
    EXPECT_GE(r.arrival_s, 0);
    EXPECT_LT(r.arrival_s, 100);
  }
}

TEST(ServeWorkload, PoissonArrivalsHaveTheRequestedRate) {
  // 20 req/s for 1000 s: 20000 expected, standard deviation sqrt(20000) ~ 141; the gaps are
  // exponential, so their standard deviation equals their mean.
  auto r = poisson_workload({.rate = 20, .duration_s = 1000, .seed = 1});
  ASSERT_TRUE(r);
  EXPECT_NEAR(static_cast<double>(r->size()), 20000, 5 * 141);
  double sum = 0, sum2 = 0;
  for (std::size_t i = 1; i < r->size(); ++i) {
    const double gap = (*r)[i].arrival_s - (*r)[i - 1].arrival_s;
    ASSERT_GE(gap, 0);
    sum += gap;
    sum2 += gap * gap;
  }
  const double n = static_cast<double>(r->size() - 1);
  const double mean = sum / n;
  const double sd = std::sqrt(sum2 / n - mean * mean);
  EXPECT_NEAR(mean, 0.05, 0.002);
  EXPECT_NEAR(sd, 0.05, 0.003);
}

TEST(ServeWorkload, PoissonRejectsNonPositiveParameters) {
  EXPECT_FALSE(poisson_workload({.rate = 0}));
  EXPECT_FALSE(poisson_workload({.rate = 1, .duration_s = -1}));
  EXPECT_FALSE(poisson_workload({.rate = 1, .duration_s = 1, .prompt_tokens = 0}));
}

TEST(ServeWorkload, ModelsRoundRobin) {
  auto r = poisson_workload({.rate = 10, .duration_s = 2, .seed = 3});
  ASSERT_TRUE(r);
  ASSERT_GE(r->size(), 4u);
  ASSERT_TRUE(assign_models(*r, {"a", "b", "c"}, {}, 0));
  for (std::size_t i = 0; i < r->size(); ++i)
    EXPECT_EQ((*r)[i].model, std::string(1, static_cast<char>('a' + i % 3)));
  EXPECT_FALSE(assign_models(*r, {}, {}, 0));
}

TEST(ServeWorkload, ModelsFollowTheAlibabaPopularity) {
  const auto path = trace_or_skip("alibaba_genai_model_popularity.csv");
  if (path.empty())
    GTEST_SKIP() << "no " << traces << " on this machine";
  auto weights = load_model_popularity(path);
  ASSERT_TRUE(weights) << weights.err().to_string();
  ASSERT_EQ(weights->size(), 87u);
  // Most popular first: M0002 8234 requests, then M0001 4012.
  EXPECT_EQ((*weights)[0], 8234);
  EXPECT_EQ((*weights)[1], 4012);
  std::vector<serve_request> reqs(30000);
  ASSERT_TRUE(assign_models(reqs, {"big", "second", "third"}, *weights, 5));
  std::map<std::string, int> counts;
  for (const auto& q : reqs)
    ++counts[q.model];
  // Only the three listed models, in proportion to the top three weights.
  ASSERT_EQ(counts.size(), 3u);
  const double total = (*weights)[0] + (*weights)[1] + (*weights)[2];
  EXPECT_NEAR(counts["big"] / 30000.0, (*weights)[0] / total, 0.015);
  EXPECT_NEAR(counts["second"] / 30000.0, (*weights)[1] / total, 0.015);
  EXPECT_NEAR(counts["third"] / 30000.0, (*weights)[2] / total, 0.015);
}

TEST(ServeWorkload, PromptHasOneWordPerToken) {
  EXPECT_EQ(make_prompt(0), "");
  EXPECT_EQ(make_prompt(1), "hello");
  EXPECT_EQ(make_prompt(3), "hello hello hello");
}

} // namespace
} // namespace thaw::bench
