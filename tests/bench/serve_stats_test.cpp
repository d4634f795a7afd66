#include "bench/serve_stats.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace thaw::bench {
namespace {

TEST(ServeStats, PercentilesInterpolateLikeNumpy) {
  // numpy.percentile([1,2,3,4], [50, 90, 99]) = 2.5, 3.7, 3.97
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 50), 2.5);
  EXPECT_NEAR(percentile({4, 1, 3, 2}, 90), 3.7, 1e-12);
  EXPECT_NEAR(percentile({4, 1, 3, 2}, 99), 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 0), 1);
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 100), 4);
  EXPECT_DOUBLE_EQ(percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(percentile({}, 50), 0);
}

request_record done(double ttft, std::vector<double> itl, std::int64_t prompt, std::int64_t out) {
  request_record r;
  r.ok = true;
  r.ttft_s = ttft;
  r.itl_s = std::move(itl);
  r.e2e_s = ttft;
  for (double g : r.itl_s)
    r.e2e_s += g;
  r.prompt_tokens = prompt;
  r.output_tokens = out;
  return r;
}

TEST(ServeStats, SummaryOfAHandMadeRun) {
  std::vector<request_record> records;
  // A: TTFT 100 ms, then 3 chunks 20, 30, 40 ms apart: E2E 190 ms, 4 tokens, TPOT 90/3 = 30 ms.
  records.push_back(done(0.100, {0.020, 0.030, 0.040}, 10, 4));
  // B: TTFT 200 ms, one more chunk 60 ms later: E2E 260 ms, 2 tokens, TPOT 60 ms.
  records.push_back(done(0.200, {0.060}, 20, 2));
  // C: one token only: TTFT = E2E = 300 ms, no TPOT, no ITL.
  records.push_back(done(0.300, {}, 30, 1));
  // D: failed; it counts in neither latencies nor tokens.
  request_record failed;
  failed.error = "HTTP 404: no such model";
  failed.prompt_tokens = 1000;
  failed.ttft_s = 9;
  records.push_back(failed);
  // A request sent 5 ms late because every thread was busy.
  records[1].scheduled_s = 1.0;
  records[1].sent_s = 1.005;
  records[1].waited_for_thread = true;

  const auto s = summarize(records, 2.0);
  EXPECT_EQ(s.completed, 3u);
  EXPECT_EQ(s.failed, 1u);
  EXPECT_EQ(s.waited_for_thread, 1u);
  EXPECT_NEAR(s.max_send_delay_ms, 5, 1e-9);
  EXPECT_EQ(s.total_input_tokens, 60);
  EXPECT_EQ(s.total_output_tokens, 7);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(s.output_throughput, 3.5);
  EXPECT_DOUBLE_EQ(s.total_token_throughput, 33.5);

  EXPECT_EQ(s.ttft.count, 3u);
  EXPECT_NEAR(s.ttft.mean_ms, 200, 1e-9);
  EXPECT_NEAR(s.ttft.median_ms, 200, 1e-9);
  EXPECT_NEAR(s.ttft.p90_ms, 280, 1e-9); // 200 + 0.8 * 100
  EXPECT_NEAR(s.ttft.p99_ms, 298, 1e-9);

  EXPECT_EQ(s.tpot.count, 2u);           // C's single token has no TPOT
  EXPECT_NEAR(s.tpot.mean_ms, 45, 1e-9); // (30 + 60) / 2
  EXPECT_NEAR(s.tpot.median_ms, 45, 1e-9);
  EXPECT_NEAR(s.tpot.p90_ms, 57, 1e-9); // 30 + 0.9 * 30

  EXPECT_EQ(s.itl.count, 4u); // 20, 30, 40, 60 pooled
  EXPECT_NEAR(s.itl.mean_ms, 37.5, 1e-9);
  EXPECT_NEAR(s.itl.median_ms, 35, 1e-9);
  EXPECT_NEAR(s.itl.p99_ms, 59.4, 1e-9); // 40 + 0.97 * 20
  EXPECT_NEAR(s.itl.max_ms, 60, 1e-9);

  EXPECT_NEAR(s.e2e.mean_ms, 250, 1e-9); // (190 + 260 + 300) / 3
  EXPECT_NEAR(s.e2e.median_ms, 260, 1e-9);

  ASSERT_EQ(s.first_errors.size(), 1u);
  EXPECT_EQ(s.first_errors[0], "HTTP 404: no such model");

  const auto j = to_json(s);
  EXPECT_EQ(j["completed"], 3);
  EXPECT_EQ(j["failed"], 1);
  EXPECT_NEAR(j["mean_ttft_ms"].get<double>(), 200, 1e-9);
  EXPECT_NEAR(j["median_tpot_ms"].get<double>(), 45, 1e-9);
  EXPECT_NEAR(j["p99_itl_ms"].get<double>(), 59.4, 1e-9);
  EXPECT_NEAR(j["mean_e2e_ms"].get<double>(), 250, 1e-9);
  EXPECT_EQ(j["errors"][0], "HTTP 404: no such model");

  const auto table = format_summary(s);
  EXPECT_NE(table.find("Successful requests:"), std::string::npos);
  EXPECT_NE(table.find("Mean TTFT (ms):                         200.00"), std::string::npos)
      << table;
  EXPECT_NE(table.find("error: HTTP 404: no such model"), std::string::npos);
}

TEST(ServeStats, AllFailedGivesZerosNotNaN) {
  request_record r;
  r.error = "connection refused";
  const auto s = summarize({r, r}, 1.0);
  EXPECT_EQ(s.completed, 0u);
  EXPECT_EQ(s.failed, 2u);
  EXPECT_EQ(s.first_errors.size(), 1u); // distinct messages only
  EXPECT_EQ(s.ttft.mean_ms, 0);
  EXPECT_EQ(s.request_throughput, 0);
  EXPECT_NO_THROW((void)to_json(s).dump());
}

} // namespace
} // namespace thaw::bench
