// Cluster mode as a user runs it: `thaw head` and two `thaw node` processes on 127.0.0.1, two
// models, streaming requests to both, a node with the wrong secret refused, a node killed in the
// middle of a stream. Every wait is bounded; the child processes are killed by their destructors.

#include "runtime/common/metrics.hpp"
#include "tests/support/process.hpp"
#include "tests/support/test_models.hpp"
#include "transport/http_client.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <fstream>
#include <netinet/in.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace thaw {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

const std::string secret = "correct-horse-battery-staple";
/// Heartbeats every half second; a peer silent for 3 s counts as lost.
const std::string timeouts = "heartbeat = 0.5\ntimeout = 3\n";

/// Reads lines until one contains `needle`; returns that line or "" after `timeout`.
std::string wait_for_line(testing::child_process& p, const std::string& needle,
                          std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto line = p.read_line(std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()));
    if (!line)
      return {};
    if (line->find(needle) != std::string::npos)
      return *line;
  }
  return {};
}

/// The text of an SSE body: every choice's text, whether [DONE] came, and any error message.
struct sse_result {
  std::string text;
  int chunks = 0;
  int tokens = -1; ///< usage.completion_tokens, -1 when no usage chunk came
  bool done = false;
  std::string error;
};

sse_result parse_sse(const std::string& raw) {
  sse_result out;
  std::size_t pos = 0;
  while ((pos = raw.find("data: ", pos)) != std::string::npos) {
    const auto end = raw.find("\n\n", pos);
    if (end == std::string::npos)
      break;
    const auto payload = raw.substr(pos + 6, end - pos - 6);
    pos = end + 2;
    if (payload == "[DONE]") {
      out.done = true;
      continue;
    }
    auto j = json::parse(payload, nullptr, false);
    if (j.is_discarded())
      continue;
    if (j.contains("usage") && j["usage"].is_object())
      out.tokens = j["usage"]["completion_tokens"].get<int>();
    if (j.contains("error"))
      out.error = j["error"]["message"].get<std::string>();
    if (j.contains("choices"))
      for (auto& c : j["choices"]) {
        out.text += c["text"].get<std::string>();
        ++out.chunks;
      }
  }
  return out;
}

/// One streamed completion on its own connection: the HTTP status and the parsed stream.
/// `on_first` runs when the first piece of the body arrives.
std::pair<int, sse_result> stream_completion(std::uint16_t port, const std::string& model,
                                             int max_tokens,
                                             std::function<void()> on_first = nullptr,
                                             const std::string& prompt = "Once upon a time") {
  auto c = http::client::connect("127.0.0.1", port);
  if (!c)
    return {0, {}};
  json body = {{"model", model},       {"prompt", prompt},
               {"max_tokens", max_tokens}, {"ignore_eos", true},
               {"temperature", 0},     {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  std::string raw;
  auto r = (*c)->stream("POST", "/v1/completions", body.dump(),
                        {{"content-type", "application/json"}}, [&](std::string_view d) {
                          raw += d;
                          if (on_first) {
                            on_first();
                            on_first = nullptr;
                          }
                          return true;
                        });
  if (!r)
    return {0, parse_sse(raw)};
  return {r->status, parse_sse(raw)};
}

class ClusterProcess : public ::testing::Test {
protected:
  void SetUp() override {
    testing::make_hf(dir_ / "hf-tiny", "tiny");
    testing::import(dir_ / "hf-tiny", dir_ / "tiny");
    // stories15m's shape: slow enough on one thread that a stream is still running when its
    // node is killed.
    testing::make_hf(dir_ / "hf-big", "stories15m");
    testing::import(dir_ / "hf-big", dir_ / "big");
    std::ofstream{dir_ / "head.toml"} << "[http]\nport = 0\n[cluster]\nport = 0\nsecret = \""
                                      << secret << "\"\n" << timeouts << "[[models]]\nname = \"tiny\"\n"
                                      << "checkpoint = \"" << (dir_ / "tiny").string() << "\"\n"
                                      << model_settings("tiny")
                                      << "[[models]]\nname = \"big\"\ncheckpoint = \""
                                      << (dir_ / "big").string() << "\"\n"
                                      << model_settings("big") << head_settings();
    head_ = std::make_unique<testing::child_process>(
        std::vector<std::string>{THAW_BINARY, "head", "--config", (dir_ / "head.toml").string(),
                                 "--log-level", head_settings().empty() ? "warn" : "info"},
        true, cwd_of("head"));
    // "thaw head: http://127.0.0.1:PORT  control 127.0.0.1:PORT"
    const auto line = wait_for_line(*head_, "thaw head: http://127.0.0.1:", 120s);
    ASSERT_FALSE(line.empty()) << "thaw head printed no address";
    http_port_ = static_cast<std::uint16_t>(std::stoi(line.substr(line.find("1:") + 2)));
    control_ = line.substr(line.find("control ") + 8);
    nodes_.push_back(start_node("node-a", secret));
    nodes_.push_back(start_node("node-b", secret));
    for (auto& n : nodes_)
      ASSERT_FALSE(wait_for_line(*n, "joined", 60s).empty()) << "a node did not join";
    auto c = http::client::connect("127.0.0.1", http_port_);
    ASSERT_TRUE(c) << c.err().to_string();
    client_ = std::move(*c);
    ASSERT_TRUE(wait_for_nodes(2)) << "the head never saw both nodes";
  }

  /// More TOML for a model's [[models]] table, and for the head's configuration.
  virtual std::string model_settings(const std::string& /*model*/) { return {}; }
  virtual std::string head_settings() { return {}; }
  /// The working directory of "head" or a node (by name): where relative checkpoint paths
  /// lead. "": the test's own.
  virtual std::string cwd_of(const std::string& /*who*/) { return {}; }
  /// More `--set KEY=VALUE` settings for a node (by name).
  virtual std::vector<std::string> node_settings(const std::string& /*name*/) { return {}; }

  std::unique_ptr<testing::child_process> start_node(const std::string& name,
                                                     const std::string& node_secret,
                                                     const std::string& log_level = "warn") {
    std::vector<std::string> argv{THAW_BINARY, "node", "--head", control_, "--name", name,
                                  "--set", "cluster.secret=\"" + node_secret + "\"", "--set",
                                  "node.threads=1", "--set", "loader.pool_bytes=\"128MiB\"",
                                  "--set", "loader.chunk_bytes=\"64KiB\"", "--set",
                                  "cluster.heartbeat=0.5", "--set", "cluster.timeout=3",
                                  "--log-level", log_level};
    for (const auto& kv : node_settings(name)) {
      argv.push_back("--set");
      argv.push_back(kv);
    }
    return std::make_unique<testing::child_process>(argv, true, cwd_of(name));
  }

  json status() {
    auto r = client_->request("GET", "/admin/status");
    if (!r || r->status != 200)
      return json::object();
    return json::parse(r->body, nullptr, false);
  }

  /// Waits (bounded) until the head reports `n` nodes.
  bool wait_for_nodes(std::size_t n) {
    for (int i = 0; i < 300; ++i) {
      auto s = status();
      if (s.contains("nodes") && s["nodes"].size() == n)
        return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  /// The node that runs an instance of `model` ("" when none does, after a bounded wait).
  std::string node_of(const std::string& model) {
    for (int i = 0; i < 300; ++i) {
      auto s = status();
      for (auto& n : s.value("nodes", json::array()))
        for (auto& inst : n["instances"])
          if (inst["model"] == model)
            return n["name"].get<std::string>();
      std::this_thread::sleep_for(100ms);
    }
    return {};
  }

  /// Whether `node` (any node when "") runs an instance of `model`.
  bool runs(const std::string& model, const std::string& node = {}) {
    for (auto& n : status().value("nodes", json::array()))
      if (node.empty() || n["name"] == node)
        for (auto& inst : n["instances"])
          if (inst["model"] == model)
            return true;
    return false;
  }

  /// Waits (bounded, 30 s) until `node` (any node when "") runs no instance of `model`.
  bool wait_not_running(const std::string& model, const std::string& node = {}) {
    for (int i = 0; i < 1500; ++i) {
      if (!runs(model, node))
        return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  /// POST /admin/models/{model}/migrate on a connection of its own: status and JSON body.
  std::pair<int, json> migrate(const std::string& model, const std::string& from,
                               const std::string& to) {
    auto c = http::client::connect("127.0.0.1", http_port_);
    if (!c)
      return {0, {}};
    auto r = (*c)->request("POST", "/admin/models/" + model + "/migrate",
                           json{{"from", from}, {"to", to}, {"max_gap", 1}}.dump(),
                           {{"content-type", "application/json"}});
    if (!r)
      return {0, {}};
    return {r->status, json::parse(r->body, nullptr, false)};
  }

  /// The value of a metric in the head's /metrics, summed over its series.
  double metric(const std::string& name, const std::string& filter = {}) {
    auto r = client_->request("GET", "/metrics");
    return metrics::scraped_sum(r ? r->body : std::string{}, name, filter);
  }

  testing::temp_dir dir_;
  std::unique_ptr<testing::child_process> head_;
  std::vector<std::unique_ptr<testing::child_process>> nodes_;
  std::uint16_t http_port_ = 0;
  std::string control_;
  std::unique_ptr<http::client> client_;
};

TEST_F(ClusterProcess, TwoNodesServeTwoModelsWithConcurrentStreams) {
  auto s = status();
  ASSERT_EQ(s["nodes"].size(), 2u);
  std::vector<std::string> names;
  for (auto& n : s["nodes"])
    names.push_back(n["name"]);
  EXPECT_EQ(names, (std::vector<std::string>{"node-a", "node-b"}));

  std::vector<std::pair<int, sse_result>> results(4);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < results.size(); ++i)
    threads.emplace_back([&, i] {
      results[i] = stream_completion(http_port_, i % 2 == 0 ? "tiny" : "big", 12);
    });
  for (auto& t : threads)
    t.join();
  for (std::size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].first, 200) << "request " << i;
    EXPECT_TRUE(results[i].second.done) << "request " << i;
    EXPECT_TRUE(results[i].second.error.empty()) << results[i].second.error;
    EXPECT_EQ(results[i].second.tokens, 12) << "request " << i;
  }
  // Greedy decoding: the same model gives the same text wherever it ran.
  EXPECT_EQ(results[0].second.text, results[2].second.text);
  EXPECT_EQ(results[1].second.text, results[3].second.text);
  // A node stops cleanly on SIGTERM, instances and all, and the head lets it go.
  nodes_[0]->signal(SIGTERM);
  EXPECT_EQ(nodes_[0]->wait(60s), 0);
  EXPECT_TRUE(wait_for_nodes(1));
}

TEST_F(ClusterProcess, NodesWithTheWrongSecretOrATakenNameAreRefusedAndTheClusterCarriesOn) {
  auto intruder = start_node("node-x", "not-the-secret");
  const auto refusal = wait_for_line(*intruder, "wrong cluster secret", 60s);
  EXPECT_FALSE(refusal.empty()) << "the node did not say why it was refused";
  const auto code = intruder->wait(30s);
  ASSERT_TRUE(code.has_value()) << "the refused node kept running";
  EXPECT_NE(*code, 0);
  EXPECT_FALSE(wait_for_line(*head_, "refused node 'node-x'", 30s).empty())
      << "the head did not log the refusal";
  // A stranger that is not a CAF peer at all (a port scanner, a stray client): the connection
  // fails and nothing else does.
  {
    const auto colon = control_.rfind(':');
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(std::stoi(control_.substr(colon + 1))));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n" + std::string(4096, '\x7f');
    EXPECT_GT(::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL), 0);
    ::close(fd);
  }
  // The right secret under a name already in the cluster: refused too.
  auto twin = start_node("node-a", secret);
  EXPECT_FALSE(wait_for_line(*twin, "already in the cluster", 60s).empty());
  const auto twin_code = twin->wait(30s);
  ASSERT_TRUE(twin_code.has_value()) << "the second node-a kept running";
  EXPECT_NE(*twin_code, 0);
  auto s = status();
  ASSERT_EQ(s["nodes"].size(), 2u);
  for (auto& n : s["nodes"])
    EXPECT_NE(n["name"], "node-x");
  auto [code2, r] = stream_completion(http_port_, "tiny", 6);
  EXPECT_EQ(code2, 200);
  EXPECT_EQ(r.tokens, 6);
  EXPECT_TRUE(r.done);
}

TEST_F(ClusterProcess, ANodeKilledMidStreamFailsOverWithTheSameOutputAndOthersCarryOn) {
  // Place the models one after the other, so the scheduler sees the first node busy and puts
  // the second model on the other node.
  ASSERT_EQ(stream_completion(http_port_, "tiny", 2).first, 200);
  const auto tiny_node = node_of("tiny");
  ASSERT_FALSE(tiny_node.empty());
  // The reference: the same greedy request, run without failure.
  auto [ref_status, reference] = stream_completion(http_port_, "big", 240);
  ASSERT_EQ(ref_status, 200);
  ASSERT_EQ(reference.tokens, 240);
  const auto big_node = node_of("big");
  ASSERT_FALSE(big_node.empty());
  ASSERT_NE(tiny_node, big_node) << "both models were placed on " << tiny_node;
  auto& victim = nodes_[big_node == "node-a" ? 0 : 1];

  // Requests to the other node run throughout.
  std::atomic<bool> killed{false};
  std::vector<std::pair<int, sse_result>> others;
  std::thread other_thread([&] {
    for (int i = 0; i < 200 && (!killed || others.size() < 3); ++i)
      others.push_back(stream_completion(http_port_, "tiny", 20));
  });
  auto [big_status, big] = stream_completion(http_port_, "big", 240, [&] {
    victim->signal(SIGKILL);
    killed = true;
  });
  other_thread.join();
  EXPECT_TRUE(killed);
  // The killed node's stream resumed on the node left, from the tokens the client had: the
  // client sees exactly the output of the run without failure.
  EXPECT_EQ(big_status, 200);
  EXPECT_TRUE(big.error.empty()) << "error: '" << big.error << "'";
  EXPECT_EQ(big.tokens, 240);
  EXPECT_EQ(big.text, reference.text);
  EXPECT_TRUE(big.done);
  EXPECT_GE(metric("thaw_failovers_total"), 1.0);
  for (const auto& [code, r] : others) {
    EXPECT_EQ(code, 200);
    EXPECT_EQ(r.tokens, 20);
    EXPECT_TRUE(r.error.empty()) << r.error;
  }
  ASSERT_TRUE(wait_for_nodes(1));
  EXPECT_EQ(node_of("big"), tiny_node);
}

TEST_F(ClusterProcess, AStreamMigratedMidGenerationGetsExactlyTheUnmigratedTokens) {
  auto [ref_status, reference] = stream_completion(http_port_, "big", 200);
  ASSERT_EQ(ref_status, 200);
  ASSERT_EQ(reference.tokens, 200);
  const auto from = node_of("big");
  ASSERT_FALSE(from.empty());
  const std::string to = from == "node-a" ? "node-b" : "node-a";

  std::pair<int, json> report;
  std::thread mover;
  auto [st, moved] = stream_completion(http_port_, "big", 200, [&] {
    mover = std::thread([&] { report = migrate("big", from, to); });
  });
  mover.join();
  EXPECT_EQ(st, 200);
  EXPECT_TRUE(moved.error.empty()) << moved.error;
  EXPECT_EQ(moved.tokens, 200);
  EXPECT_EQ(moved.text, reference.text) << "the migrated stream differs from the unmigrated one";
  EXPECT_TRUE(moved.done);
  ASSERT_EQ(report.first, 200) << report.second.dump();
  EXPECT_EQ(report.second["moved"], 1) << report.second.dump();
  EXPECT_EQ(report.second["aborted"], false) << report.second.dump();
  EXPECT_GE(report.second["rounds"].get<int>(), 1);
  // The source stopped (its slot is free); the model runs on the target now.
  EXPECT_EQ(node_of("big"), to);
  (void)wait_not_running("big", from);
  for (auto& n : status()["nodes"]) {
    if (n["name"] == from) {
      EXPECT_TRUE(n["instances"].empty()) << n.dump();
    }
  }
  // The client-visible pause against the stream's own decode steps.
  const double pauses = metric("thaw_migration_pause_seconds_count");
  const double pause = metric("thaw_migration_pause_seconds_sum");
  const double itl = metric("vllm:inter_token_latency_seconds_sum") /
                     std::max(1.0, metric("vllm:inter_token_latency_seconds_count"));
  EXPECT_EQ(pauses, 1.0);
  std::printf("migration pause %.2f ms, mean inter-token latency %.2f ms (%.2f steps)\n",
              pause * 1e3, itl * 1e3, itl > 0 ? pause / itl : 0.0);
  EXPECT_EQ(metric("thaw_migrations_total", "outcome=\"completed\""), 1.0);

  // Migrating again, back, with the admin client: a model with no stream running moves at once.
  testing::child_process cli({THAW_BINARY, "migrate", "big", "--from", to, "--to", from, "--url",
                              "http://127.0.0.1:" + std::to_string(http_port_)});
  const auto said = wait_for_line(cli, "moved", 60s);
  EXPECT_NE(said.find("big " + to + " -> " + from + ": 0 moved"), std::string::npos) << said;
  EXPECT_EQ(cli.wait(30s), 0);
  // Bad requests name the problem.
  auto [code3, none] = migrate("big", "node-zzz", to);
  EXPECT_EQ(code3, 404) << none.dump();
  auto [code4, same] = migrate("big", from, from);
  EXPECT_EQ(code4, 400) << same.dump();
}

/// A migration of "big" from node-a to node-b, with the node `victim` killed once node-b holds
/// the migrated request (prefilling it, before the handoff). node-b is restarted first to log at
/// info level, so the test sees that moment. Returns the stream's reference (the same request
/// unmigrated), the stream, and the migration's answer.
struct killed_migration {
  sse_result reference, stream;
  int stream_status = 0;
  std::pair<int, json> report;
};

class ClusterMigrationKill : public ClusterProcess {
protected:
  static constexpr int stream_tokens = 170;
  killed_migration run(std::size_t victim) {
    killed_migration out;
    nodes_[1]->signal(SIGTERM);
    EXPECT_TRUE(nodes_[1]->wait(60s).has_value());
    EXPECT_TRUE(wait_for_nodes(1));
    // A prompt of ~75 of the model's 256 positions, whose prefill on the target takes long
    // enough to kill a node meanwhile, and a stream long enough that the migration reaches the
    // target while it runs. node-b is warmed first (below), so the migration's start there is
    // a start from its DRAM tier with the tokenizer parsed, not a cold one: the race between
    // the stream's end and the target's hold no longer hinges on a cold start's time.
    std::string prompt;
    for (int i = 0; i < 5; ++i)
      prompt += "Once upon a time there was a little girl who liked to play. ";
    out.reference = stream_completion(http_port_, "big", stream_tokens, nullptr, prompt).second;
    EXPECT_EQ(out.reference.tokens, stream_tokens);
    EXPECT_EQ(node_of("big"), "node-a");
    nodes_[1] = start_node("node-b", secret, "info");
    EXPECT_FALSE(wait_for_line(*nodes_[1], "joined", 60s).empty());
    EXPECT_TRUE(wait_for_nodes(2));
    // Warm node-b: big there and back with no stream running (each moves at once).
    EXPECT_EQ(migrate("big", "node-a", "node-b").first, 200);
    EXPECT_EQ(migrate("big", "node-b", "node-a").first, 200);
    EXPECT_TRUE(wait_not_running("big", "node-b"));
    EXPECT_EQ(node_of("big"), "node-a");
    std::thread mover, killer;
    auto [st, stream] = stream_completion(
        http_port_, "big", stream_tokens,
        [&] {
          mover = std::thread([&] { out.report = migrate("big", "node-a", "node-b"); });
          killer = std::thread([&] {
            if (!wait_for_line(*nodes_[1], "for a migration", 60s).empty())
              nodes_[victim]->signal(SIGKILL);
          });
        },
        prompt);
    mover.join();
    killer.join();
    out.stream_status = st;
    out.stream = stream;
    return out;
  }
};

TEST_F(ClusterMigrationKill, ATargetKilledMidMigrationLeavesTheStreamOnItsSource) {
  auto r = run(1);
  EXPECT_EQ(r.stream_status, 200);
  EXPECT_TRUE(r.stream.error.empty()) << r.stream.error;
  EXPECT_EQ(r.stream.text, r.reference.text);
  EXPECT_EQ(r.stream.tokens, stream_tokens);
  ASSERT_EQ(r.report.first, 200) << r.report.second.dump();
  EXPECT_EQ(r.report.second["aborted"], true) << r.report.second.dump();
  EXPECT_EQ(r.report.second["moved"], 0) << r.report.second.dump();
  EXPECT_NE(r.report.second["reason"].get<std::string>().find("lost"), std::string::npos)
      << r.report.second.dump();
  EXPECT_EQ(node_of("big"), "node-a");
  EXPECT_EQ(metric("thaw_migrations_total", "outcome=\"aborted\""), 1.0);
}

TEST_F(ClusterMigrationKill, ASourceKilledMidMigrationFailsOverToTheTargetWithTheSameOutput) {
  auto r = run(0);
  // The stream resumes from its committed tokens on the instance left (the migration's
  // target): the client sees the unmigrated run's output.
  EXPECT_EQ(r.stream_status, 200);
  EXPECT_TRUE(r.stream.error.empty()) << r.stream.error;
  EXPECT_EQ(r.stream.text, r.reference.text);
  EXPECT_EQ(r.stream.tokens, stream_tokens);
  EXPECT_GE(r.report.first, 500) << r.report.second.dump();
  EXPECT_NE(r.report.second.dump().find("source instance was lost"), std::string::npos)
      << r.report.second.dump();
  EXPECT_GE(metric("thaw_failovers_total"), 1.0);
  EXPECT_EQ(node_of("big"), "node-b");
}

/// The scheduler with locality-migrate, short keep-alives.
class ClusterLocalityMigrate : public ClusterProcess {
protected:
  std::string model_settings(const std::string& model) override {
    return model == "tiny" ? "keep_alive = 3\n" : "keep_alive = 1\n";
  }
  // The network is assumed slow (1 MB/s): loading tiny (2 MB) over it costs seconds, moving a
  // big stream to where big is in DRAM costs a fraction of one, so the decision does not hinge
  // on how fast this machine happens to copy or compute while the test runs.
  std::string head_settings() override {
    return "[placement]\npolicy = \"locality-migrate\"\nremote_gbps = 0.001\n";
  }
};

TEST_F(ClusterLocalityMigrate, TheSchedulerMovesARunningStreamToStartAModelWhereItsBytesAre) {
  // tiny starts first; while it idles (keep-alive 3 s) on its node, big goes to the other one.
  // Once both have scaled to zero, each node holds one of them in its DRAM tier.
  ASSERT_EQ(stream_completion(http_port_, "tiny", 2).first, 200);
  const auto tiny_home = node_of("tiny");
  auto [ref_status, reference] = stream_completion(http_port_, "big", 240);
  ASSERT_EQ(ref_status, 200);
  const auto big_home = node_of("big");
  ASSERT_FALSE(tiny_home.empty());
  ASSERT_NE(big_home, tiny_home);
  ASSERT_TRUE(wait_not_running("tiny"));
  ASSERT_TRUE(wait_not_running("big"));

  // A long big stream, moved by hand onto tiny's node (whose DRAM holds tiny). While it runs,
  // a tiny request comes: tiny's best node is full, the other node is free but holds no tiny.
  // Moving the big stream back to its home (big is in that node's DRAM) and loading tiny from
  // DRAM beats loading tiny over the network, so the scheduler migrates, then places tiny.
  std::pair<int, sse_result> tiny_result;
  std::pair<int, json> moved_by_hand;
  std::thread actor;
  auto [st, big] = stream_completion(http_port_, "big", 240, [&] {
    actor = std::thread([&] {
      moved_by_hand = migrate("big", big_home, tiny_home);
      // The source instance stops right after the handoff; wait for its slot to be free.
      (void)wait_not_running("big", big_home);
      tiny_result = stream_completion(http_port_, "tiny", 4);
    });
  });
  actor.join();
  ASSERT_EQ(moved_by_hand.first, 200) << moved_by_hand.second.dump();
  EXPECT_EQ(moved_by_hand.second["moved"], 1) << moved_by_hand.second.dump();
  EXPECT_EQ(tiny_result.first, 200);
  EXPECT_EQ(tiny_result.second.tokens, 4);
  EXPECT_EQ(st, 200);
  EXPECT_TRUE(big.error.empty()) << big.error;
  EXPECT_EQ(big.text, reference.text) << "two migrations changed the stream";
  EXPECT_EQ(metric("thaw_migrations_total", "outcome=\"completed\""), 2.0)
      << "the scheduler did not migrate";
  if (HasFailure()) // what the head decided, for whoever reads the failure
    for (auto line = head_->read_line(500ms); line; line = head_->read_line(200ms))
      if (line->find("scheduler") != std::string::npos || line->find("router") != std::string::npos)
        std::fprintf(stderr, "head: %s\n", line->c_str());
  EXPECT_EQ(metric("thaw_loads_total", "model_name=\"tiny\",tier=\"dram\""), 1.0);
  EXPECT_EQ(node_of("tiny"), tiny_home);
}

/// A third model, "far", deployed by a relative checkpoint path: the head and node-a run where
/// it is (the test's directory), node-b in a directory of its own, as if on another machine's
/// disk, where "far" holds another model (other weights). node-b can only get far's deployed
/// bytes from node-a, over UCX, into pool chunks of another size than node-a's.
class ClusterRemoteTier : public ClusterProcess {
protected:
  void SetUp() override {
    testing::make_hf(dir_ / "hf-far", "stories15m");
    testing::import(dir_ / "hf-far", dir_ / "far");
    testing::make_hf(dir_ / "hf-other", "stories15m", dtype::f32, 99);
    std::filesystem::create_directories(dir_ / "b-disk");
    testing::import(dir_ / "hf-other", dir_ / "b-disk" / "far");
    ClusterProcess::SetUp();
  }
  std::string head_settings() override {
    return "[[models]]\nname = \"far\"\ncheckpoint = \"far\"\n";
  }
  std::string cwd_of(const std::string& who) override {
    return (who == "node-b" ? dir_ / "b-disk" : dir_.path()).string();
  }
  std::vector<std::string> node_settings(const std::string& name) override {
    if (name == "node-b")
      return {"loader.chunk_bytes=\"16KiB\""};
    return {};
  }
};

TEST_F(ClusterRemoteTier, AModelNotOnANodesDiskIsPulledFromAPeersDramMidStream) {
  std::string prompt;
  for (int i = 0; i < 5; ++i)
    prompt += "Once upon a time there was a little girl who liked to play. ";
  // The reference with node-a alone (node-b could pull far from node-a's SSD and run it), then
  // node-b again, logging at info level.
  nodes_[1]->signal(SIGTERM);
  ASSERT_TRUE(nodes_[1]->wait(60s).has_value());
  ASSERT_TRUE(wait_for_nodes(1));
  auto [ref_status, reference] = stream_completion(http_port_, "far", 170, nullptr, prompt);
  ASSERT_EQ(ref_status, 200) << reference.error;
  ASSERT_EQ(node_of("far"), "node-a");
  nodes_[1] = start_node("node-b", secret, "info");
  ASSERT_FALSE(wait_for_line(*nodes_[1], "joined", 60s).empty());
  ASSERT_TRUE(wait_for_nodes(2));

  // Moved mid-stream to node-b, which has no copy: it pulls far from node-a's DRAM tier.
  std::pair<int, json> report;
  std::thread mover;
  auto [st, moved] = stream_completion(
      http_port_, "far", 170,
      [&] { mover = std::thread([&] { report = migrate("far", "node-a", "node-b"); }); }, prompt);
  mover.join();
  ASSERT_EQ(report.first, 200) << report.second.dump();
  EXPECT_EQ(report.second["moved"], 1) << report.second.dump();
  EXPECT_EQ(st, 200);
  EXPECT_TRUE(moved.error.empty()) << moved.error;
  EXPECT_EQ(moved.text, reference.text) << "the pulled weights gave another stream";
  EXPECT_EQ(node_of("far"), "node-b");
  const auto pulled = wait_for_line(*nodes_[1], "pulled far", 10s);
  EXPECT_NE(pulled.find("from node node-a over UCX"), std::string::npos) << pulled;
  EXPECT_EQ(metric("thaw_loads_total", "model_name=\"far\",tier=\"remote\""), 1.0);
  // node-b reports far in its DRAM tier, where a later start finds it, and the pull's speed.
  for (auto& n : status()["nodes"])
    if (n["name"] == "node-b") {
      EXPECT_EQ(n["dram_models"], json::array({"far"})) << n.dump();
      EXPECT_EQ(n["loads_remote"], 1) << n.dump();
      EXPECT_GT(n["remote_bandwidth"].get<double>(), 0.0) << n.dump();
    }
}

/// As ClusterRemoteTier, but node-a's slot is too small for any instance: node-a can only lend.
class ClusterRemoteTierFullLender : public ClusterRemoteTier {
protected:
  std::vector<std::string> node_settings(const std::string& name) override {
    if (name == "node-a")
      return {"node.slot_memory_bytes=\"1MiB\""};
    return ClusterRemoteTier::node_settings(name);
  }
};

TEST_F(ClusterRemoteTierFullLender, ANodeThatCannotRunAModelLendsItFromItsDiskThroughItsDram) {
  // far is on node-a's disk only, and node-a has no room to run it: node-b, whose own "far" is
  // another model, pulls it through node-a, which reads it from its SSD into its DRAM tier to
  // lend it.
  auto [st, out] = stream_completion(http_port_, "far", 8);
  ASSERT_EQ(st, 200) << out.error;
  EXPECT_TRUE(out.error.empty()) << out.error;
  EXPECT_EQ(out.tokens, 8);
  EXPECT_EQ(node_of("far"), "node-b");
  EXPECT_EQ(metric("thaw_loads_total", "model_name=\"far\",tier=\"remote\""), 1.0);
  for (auto& n : status()["nodes"]) {
    if (n["name"] == "node-a") {
      EXPECT_EQ(n["dram_models"], json::array({"far"})) << n.dump();
    }
    if (n["name"] == "node-b") {
      EXPECT_EQ(n["loads_remote"], 1) << n.dump();
      EXPECT_EQ(n["loads_ssd"], 0) << n.dump(); // its own, other "far" was not used
    }
  }
}

TEST_F(ClusterProcess, AHungNodeIsDroppedAndStopsWhenItWakes) {
  ASSERT_EQ(stream_completion(http_port_, "tiny", 2).first, 200);
  const auto tiny_node = node_of("tiny");
  ASSERT_FALSE(tiny_node.empty());
  auto& hung = nodes_[tiny_node == "node-a" ? 0 : 1];
  // Stopped, its socket stays open: only the missing heartbeats tell the head.
  hung->signal(SIGSTOP);
  ASSERT_TRUE(wait_for_nodes(1)) << "the head still lists the stopped node";
  // The model is started again on the node that is left.
  auto [code, r] = stream_completion(http_port_, "tiny", 4);
  EXPECT_EQ(code, 200);
  EXPECT_EQ(r.tokens, 4);
  EXPECT_NE(node_of("tiny"), tiny_node);
  // Woken up, the node finds its connection to the head closed and stops with a clear line.
  hung->signal(SIGCONT);
  EXPECT_FALSE(wait_for_line(*hung, "lost the head", 60s).empty());
  const auto exit = hung->wait(30s);
  ASSERT_TRUE(exit.has_value()) << "the node kept running without a head";
  EXPECT_NE(*exit, 0);
}

TEST_F(ClusterProcess, NodesStopWhenTheHeadGoesAway) {
  head_->signal(SIGKILL);
  for (auto& n : nodes_) {
    EXPECT_FALSE(wait_for_line(*n, "lost the head", 60s).empty());
    const auto exit = n->wait(30s);
    ASSERT_TRUE(exit.has_value()) << "a node kept running without a head";
    EXPECT_NE(*exit, 0);
  }
}

/// With the directory `thaw cluster init` makes, the control connections run over TLS: a node
/// with the cluster's certificates joins and serves; one with another cluster's certificates
/// cannot connect, even with the right secret.
TEST(ClusterTls, NodesWithTheClustersCertificatesJoinOthersAreRefusedAndTheClusterCarriesOn) {
  testing::temp_dir dir;
  testing::make_hf(dir / "hf", "tiny");
  testing::import(dir / "hf", dir / "tiny");
  for (const char* name : {"cluster", "other"}) {
    testing::child_process init({THAW_BINARY, "cluster", "init", (dir / name).string()});
    ASSERT_EQ(init.wait(60s), 0);
  }
  for (const char* f : {"secret", "ca.pem", "ca.key", "head.pem", "head.key", "node.pem",
                        "node.key"})
    EXPECT_TRUE(std::filesystem::exists(dir / "cluster" / f)) << f;
  EXPECT_EQ(std::filesystem::status(dir / "cluster" / "node.key").permissions() &
                std::filesystem::perms::others_read,
            std::filesystem::perms::none);
  // TLS is on by default where cluster.dir holds the certificates.
  const std::string cluster_dir = "cluster.dir=\"" + (dir / "cluster").string() + "\"";
  testing::child_process head({THAW_BINARY, "head", "--port", "0", "--control-port", "0",
                               "--set", cluster_dir, "--set", "cluster.heartbeat=0.5", "--set",
                               "cluster.timeout=3", "--log-level", "warn"},
                              true);
  const auto line = wait_for_line(head, "thaw head: http://127.0.0.1:", 120s);
  ASSERT_FALSE(line.empty());
  const auto http_port = static_cast<std::uint16_t>(std::stoi(line.substr(line.find("1:") + 2)));
  const auto control = line.substr(line.find("control ") + 8);
  auto node_args = [&](const std::string& cdir) {
    return std::vector<std::string>{
        THAW_BINARY, "node", "--head", control, "--set", cdir,
        "--set", "node.threads=1", "--set", "loader.pool_bytes=\"64MiB\"", "--set",
        "loader.chunk_bytes=\"64KiB\"",
        "--set", "cluster.heartbeat=0.5", "--set", "cluster.timeout=3", "--set",
        "cluster.connect_timeout=3", "--log-level", "warn"};
  };
  testing::child_process node(node_args(cluster_dir), true);
  ASSERT_FALSE(wait_for_line(node, "joined", 60s).empty());

  auto c = http::client::connect("127.0.0.1", http_port);
  ASSERT_TRUE(c);
  auto node_count = [&] {
    return json::parse((*c)->request("GET", "/admin/status")->body)["nodes"].size();
  };
  std::size_t nodes = 0;
  for (int i = 0; i < 300 && nodes != 1; ++i, std::this_thread::sleep_for(100ms))
    nodes = node_count();
  EXPECT_EQ(nodes, 1u);
  json body = {{"model", "tiny"}, {"prompt", "Hello"}, {"max_tokens", 5}, {"ignore_eos", true}};
  // Deployed through the admin API this time; the instance starts on the TLS-joined node.
  json deploy = {{"name", "tiny"}, {"checkpoint", (dir / "tiny").string()}};
  auto d = (*c)->request("POST", "/admin/models", deploy.dump(),
                         {{"content-type", "application/json"}});
  ASSERT_TRUE(d);
  ASSERT_LT(d->status, 300) << d->body;
  auto r = (*c)->request("POST", "/v1/completions", body.dump(),
                         {{"content-type", "application/json"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["usage"]["completion_tokens"], 5);

  // With the node connected: one with another cluster's certificates (and this cluster's
  // secret), then one without TLS. The head refuses both at the handshake and logs why.
  std::string secret_text;
  std::getline(std::ifstream{dir / "cluster" / "secret"}, secret_text);
  auto foreign_args = node_args("cluster.dir=\"" + (dir / "other").string() + "\"");
  foreign_args.insert(foreign_args.end(), {"--set", "cluster.secret=\"" + secret_text + "\""});
  auto plain_args = node_args("cluster.secret=\"" + secret_text + "\"");
  for (auto* args : {&foreign_args, &plain_args}) {
    testing::child_process stranger(*args, true);
    EXPECT_FALSE(wait_for_line(stranger, "cannot reach the head", 60s).empty());
    const auto code = stranger.wait(30s);
    ASSERT_TRUE(code.has_value());
    EXPECT_NE(*code, 0);
    EXPECT_FALSE(wait_for_line(head, "TLS: refused a connection", 30s).empty());
  }
  // The connected node stays (CAF 0.17.6 alone dropped it: openssl_error_queue.hpp), past the
  // heartbeat timeout, and serves a stream from start to end.
  std::this_thread::sleep_for(4s);
  EXPECT_EQ(node_count(), 1u);
  auto [code2, s2] = stream_completion(http_port, "tiny", 40);
  EXPECT_EQ(code2, 200);
  EXPECT_EQ(s2.tokens, 40);
  EXPECT_TRUE(s2.done);
  EXPECT_FALSE(node.wait(100ms).has_value()) << "the node exited";
}

} // namespace
} // namespace thaw
