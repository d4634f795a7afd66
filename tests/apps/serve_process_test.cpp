// `thaw serve` as a user runs it: a real process on 127.0.0.1, answering the OpenAI API, and
// stopping cleanly on SIGTERM.

#include "tests/support/process.hpp"
#include "tests/support/test_models.hpp"
#include "transport/http_client.hpp"

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
