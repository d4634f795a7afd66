// bench serve end to end: a fake OpenAI server made with thaw's own http::server streams
// completions, and the benchmark, through the real http::client, must count what it sent.

#include "bench/serve_bench.hpp"

#include "tests/support/fake_openai_server.hpp"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace thaw::bench {
namespace {

TEST(ServeBench, ReportsEveryStreamedTokenOfAPoissonRun) {
  testing::fake_openai_server server;
  auto work = poisson_workload(
      {.rate = 200, .duration_s = 0.25, .prompt_tokens = 20, .output_tokens = 7, .seed = 11});
  ASSERT_TRUE(work);
  ASSERT_GE(work->size(), 10u);
  ASSERT_TRUE(assign_models(*work, {"m-a", "m-b"}, {}, 0));

  auto run = run_serve_bench(*work, {.url = server.url()});
  ASSERT_TRUE(run) << run.err().to_string();
  ASSERT_EQ(run->records.size(), work->size());
  const auto s = summarize(run->records, run->duration_s);
  EXPECT_EQ(s.failed, 0u) << (s.first_errors.empty() ? "" : s.first_errors[0]);
  EXPECT_EQ(s.completed, work->size());
  EXPECT_EQ(s.total_output_tokens, static_cast<std::int64_t>(7 * work->size()));
  EXPECT_EQ(s.total_input_tokens, static_cast<std::int64_t>(20 * work->size()));
  EXPECT_EQ(s.itl.count, 6 * work->size()); // a gap between each of the 7 chunks
  EXPECT_EQ(s.tpot.count, work->size());
  EXPECT_EQ(s.waited_for_thread, 0u);
  for (const auto& r : run->records) {
    EXPECT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.output_tokens, 7);
    EXPECT_GT(r.ttft_s, 0);
    EXPECT_GE(r.e2e_s, r.ttft_s);
    EXPECT_GE(r.sent_s, r.scheduled_s);
  }

  // What went over the wire: the OpenAI streaming request, models round-robin.
  const auto bodies = server.bodies();
  ASSERT_EQ(bodies.size(), work->size());
  std::map<std::string, int> per_model;
  for (const auto& b : bodies) {
    EXPECT_EQ(b["stream"], true);
    EXPECT_EQ(b["ignore_eos"], true);
    EXPECT_EQ(b["stream_options"]["include_usage"], true);
    EXPECT_EQ(b["temperature"], 0);
    EXPECT_EQ(b["max_tokens"], 7);
    EXPECT_EQ(b["prompt"], make_prompt(20));
    ++per_model[b["model"].get<std::string>()];
  }
  ASSERT_EQ(per_model.size(), 2u);
  EXPECT_LE(std::abs(per_model["m-a"] - per_model["m-b"]), 1);
}

TEST(ServeBench, FailuresAreCountedWithTheServersMessage) {
  testing::fake_openai_server server;
  std::vector<serve_request> work{{0.0, 4, 3, "m-a"}, {0.0, 4, 3, "missing"}, {0.0, 4, 3, "m-a"}};
  auto run = run_serve_bench(work, {.url = server.url()});
  ASSERT_TRUE(run) << run.err().to_string();
  const auto s = summarize(run->records, run->duration_s);
  EXPECT_EQ(s.completed, 2u);
  EXPECT_EQ(s.failed, 1u);
  ASSERT_EQ(s.first_errors.size(), 1u);
  EXPECT_EQ(s.first_errors[0], "HTTP 404: model 'missing' does not exist");
  EXPECT_FALSE(run->records[1].ok);
}

TEST(ServeBench, AServerThatIsNotThereFailsEveryRequestButNotTheRun) {
  std::string url;
  {
    testing::fake_openai_server gone; // a port that was free a moment ago and is closed now
    url = gone.url();
  }
  std::vector<serve_request> work{{0.0, 4, 3, "m"}, {0.0, 4, 3, "m"}};
  auto run = run_serve_bench(work, {.url = url});
  ASSERT_TRUE(run) << run.err().to_string();
  const auto s = summarize(run->records, run->duration_s);
  EXPECT_EQ(s.completed, 0u);
  EXPECT_EQ(s.failed, 2u);
  EXPECT_FALSE(s.first_errors.empty());
}

TEST(ServeBench, RequestsBeyondMaxConcurrencyWaitAndAreMarked) {
  // The server holds its answers until every request has been handed over, so the two client
  // threads are busy and the other eight requests wait for one.
  testing::fake_openai_server server(/*hold=*/true);
  std::vector<serve_request> work(10, serve_request{0.0, 4, 5, "m"});
  serve_bench_options o{.url = server.url(), .max_concurrency = 2};
  o.on_all_sent = [&server] { server.release(); };
  auto run = run_serve_bench(work, o);
  ASSERT_TRUE(run) << run.err().to_string();
  EXPECT_EQ(run->threads, 2u);
  const auto s = summarize(run->records, run->duration_s);
  EXPECT_EQ(s.completed, 10u);
  EXPECT_EQ(s.total_output_tokens, 50);
  EXPECT_EQ(s.waited_for_thread, 8u);
}

TEST(ServeBench, RejectsABadUrlAndAnEmptyWorkload) {
  std::vector<serve_request> work{{0.0, 4, 3, "m"}};
  auto bad = run_serve_bench(work, {.url = "ftp://x:1"});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.err().code, errc::invalid_argument);
  EXPECT_FALSE(run_serve_bench({}, {}));
}

} // namespace
} // namespace thaw::bench
