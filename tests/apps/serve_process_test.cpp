// `thaw serve` as a user runs it: a real process on 127.0.0.1, answering the OpenAI API, and
// stopping cleanly on SIGTERM.

#include "tests/support/process.hpp"
#include "tests/support/test_models.hpp"
#include "transport/http_client.hpp"

#include <cstdio>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace thaw {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

/// Starts `thaw serve` with `args` and returns the port it printed.
std::uint16_t start_serve(testing::child_process& p) {
  EXPECT_TRUE(p.started());
  // "thaw serve: http://127.0.0.1:PORT  (try: ...)"
  for (int i = 0; i < 5; ++i) {
    auto line = p.read_line(120s);
    if (!line)
      break;
    const auto at = line->find("http://127.0.0.1:");
    if (at != std::string::npos)
      return static_cast<std::uint16_t>(std::stoi(line->substr(at + 17)));
  }
  ADD_FAILURE() << "thaw serve printed no address";
  return 0;
}

TEST(ServeProcess, ServesACheckpointAndStopsOnSigterm) {
  testing::temp_dir dir;
  testing::make_hf(dir / "hf", "tiny");
  testing::import(dir / "hf", dir / "tiny");
  testing::child_process p({THAW_BINARY, "serve", "--port", "0", "--model",
                            "tiny=" + (dir / "tiny").string(), "--set", "node.threads=1",
                            "--set", "loader.pool_bytes=\"64MiB\"", "--set",
                            "loader.chunk_bytes=\"64KiB\"", "--log-level", "warn"});
  const auto port = start_serve(p);
  ASSERT_NE(port, 0);
  auto c = http::client::connect("127.0.0.1", port);
  ASSERT_TRUE(c) << c.err().to_string();
  json body = {{"model", "tiny"}, {"prompt", "Hello"}, {"max_tokens", 5}, {"ignore_eos", true}};
  auto r = (*c)->request("POST", "/v1/completions", body.dump(),
                         {{"content-type", "application/json"}});
  ASSERT_TRUE(r) << r.err().to_string();
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["usage"]["completion_tokens"], 5);
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait(30s), 0);
}

/// Runs the thaw binary with `args`; its exit code and stdout.
std::pair<int, std::string> run_thaw(const std::string& args) {
  const std::string cmd = std::string{THAW_BINARY} + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (auto n = std::fread(buf, 1, sizeof buf, p))
    out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(ServeProcess, AdminClientsAndTheServingBenchmarkAgainstARealServer) {
  testing::temp_dir dir;
  testing::make_hf(dir / "hf", "tiny");
  testing::import(dir / "hf", dir / "tiny");
  const auto ckpt = (dir / "tiny").string();
  testing::child_process p({THAW_BINARY, "serve", "--port", "0", "--no-demo", "--set",
                            "node.threads=1", "--set", "loader.pool_bytes=\"64MiB\"", "--set",
                            "loader.chunk_bytes=\"64KiB\"", "--log-level", "warn"});
  const auto port = start_serve(p);
  ASSERT_NE(port, 0);
  const auto url = " --url http://127.0.0.1:" + std::to_string(port);

  auto [rc, out] = run_thaw("deploy tiny --checkpoint " + ckpt + " --max 2 --keep-alive 30s" + url);
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) = run_thaw("deploy tiny --checkpoint " + ckpt + url);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("already deployed"), std::string::npos) << out;
  std::tie(rc, out) = run_thaw("models" + url);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(out, "tiny\n");

  std::tie(rc, out) = run_thaw("bench serve" + url +
                               " --rate 40 --duration 1 --prompt-tokens 8 --output-tokens 4"
                               " --seed 1 --json");
  ASSERT_EQ(rc, 0) << out;
  auto j = json::parse(out.substr(out.find('{')));
  const int n = j["num_requests"];
  ASSERT_GT(n, 0);
  EXPECT_EQ(j["completed"], n);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["total_output_tokens"], 4 * n);

  std::tie(rc, out) = run_thaw("status" + url);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("node-0"), std::string::npos) << out;
  EXPECT_NE(out.find("tiny"), std::string::npos) << out;
  std::tie(rc, out) = run_thaw("delete tiny" + url);
  EXPECT_EQ(rc, 0) << out;
  std::tie(rc, out) = run_thaw("delete tiny" + url);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("not deployed"), std::string::npos) << out;
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait(30s), 0);
}

TEST(ServeProcess, BenchActorsComparesWithTheEngineAlone) {
  testing::temp_dir dir;
  testing::make_hf(dir / "hf", "tiny");
  testing::import(dir / "hf", dir / "tiny");
  auto [rc, out] = run_thaw("bench actors " + (dir / "tiny").string() +
                            " --requests 5 --rounds 1 --clients 2 --seconds 0.3 --json");
  ASSERT_EQ(rc, 0) << out;
  auto j = json::parse(out.substr(out.find('{')));
  for (const char* k : {"ttft_p50_engine_ms", "ttft_p50_actors_http_ms",
                        "throughput_requests_per_s", "engine_alone_requests_per_s"})
    EXPECT_GT(j[k].get<double>(), 0.0) << k;
}

TEST(ServeProcess, WithNoModelItMakesAndServesTheDemoModel) {
  testing::temp_dir dir;
  testing::child_process p({THAW_BINARY, "serve", "--port", "0", "--data-dir",
                            (dir / "data").string(), "--log-level", "warn"});
  const auto port = start_serve(p);
  ASSERT_NE(port, 0);
  auto c = http::client::connect("127.0.0.1", port);
  ASSERT_TRUE(c);
  auto models = (*c)->request("GET", "/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "stories15m");
  json body = {{"model", "stories15m"}, {"prompt", "Once upon a time"}, {"max_tokens", 8}};
  auto r = (*c)->request("POST", "/v1/completions", body.dump(),
                         {{"content-type", "application/json"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(std::filesystem::exists(dir / "data" / "demo" / "stories15m" / "manifest.bin"));
  p.signal(SIGINT);
  EXPECT_EQ(p.wait(30s), 0);
}

} // namespace
} // namespace thaw
