// The embedded server end to end in one process: real actors, real HTTP on 127.0.0.1, the
// tiny model on CPU slots. Outputs are checked against the engine driven directly.

#include "actors/embedded.hpp"
#include "actors/node.hpp"
#include "runtime/common/metrics.hpp"
#include "runtime/engine/engine.hpp"
#include "runtime/engine/host_model_runner.hpp"
#include "runtime/engine/tokenizer.hpp"
#include "gpu/host/host_device.hpp"
#include "runtime/loader/remote_tier.hpp"
#include "tests/support/test_checkpoint.hpp"
#include "tests/support/test_models.hpp"
#include "transport/http_client.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <regex>
#include <thread>

namespace thaw {
namespace {

using json = nlohmann::json;

class ServeTest : public testing::tiny_model_suite {
protected:
  void start(serve_options o = {}, std::uint64_t pool_bytes = 64ull << 20) {
    o.http.port = 0;
    o.node.loader.pool_bytes = pool_bytes;
    o.node.loader.chunk_bytes = 64 << 10;
    o.node.threads = 1;
    if (o.models.empty()) {
      model_spec m;
      m.name = "tiny";
      m.checkpoint = ckpt();
      m.kv_blocks = 64;
      m.chat_template = "llama2";
      o.models.push_back(m);
    }
    auto s = embedded_server::start(std::move(o));
    ASSERT_TRUE(s) << s.err().to_string();
    server_ = std::move(*s);
    auto c = http::client::connect("127.0.0.1", server_->port());
    ASSERT_TRUE(c) << c.err().to_string();
    client_ = std::move(*c);
  }

  http::response post(const std::string& target, const json& body, http::header_map h = {}) {
    h["content-type"] = "application/json";
    auto r = client_->request("POST", target, body.dump(), h);
    EXPECT_TRUE(r) << r.err().to_string();
    return r ? *r : http::response{};
  }
  http::response get(const std::string& target, http::header_map h = {}) {
    auto r = client_->request("GET", target, {}, h);
    EXPECT_TRUE(r) << r.err().to_string();
    return r ? *r : http::response{};
  }

  /// The value of a metric series in /metrics text ("name{labels} value"), summed over series
  /// whose line contains `filter`.
  double metric(const std::string& name, const std::string& filter = {}) {
    return metrics::scraped_sum(get("/metrics").body, name, filter);
  }


  /// Greedy completion of `prompt` by the engine alone, for reference.
  static std::string engine_text(const std::string& prompt, int max_tokens) {
    auto tok = tokenizer::load(testing::llama2_tokenizer());
    EXPECT_TRUE(tok);
    host_runner_options ro;
    ro.num_kv_blocks = 64;
    auto model = load_host_model(ckpt(), ro);
    EXPECT_TRUE(model) << model.err().to_string();
    engine e(*model->runner, &*tok);
    generation_request r;
    r.prompt = *tok->encode(prompt, true);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    r.ignore_eos = true;
    EXPECT_TRUE(e.add(r));
    std::string out;
    while (e.has_work())
      for (auto& ev : e.step())
        out += ev.text;
    return out;
  }

  std::unique_ptr<embedded_server> server_;
  std::unique_ptr<http::client> client_;
};

TEST_F(ServeTest, CompletionMatchesTheEngineAlone) {
  start();
  auto r = post("/v1/completions", {{"model", "tiny"},
                                    {"prompt", "Once upon a time"},
                                    {"max_tokens", 12},
                                    {"temperature", 0},
                                    {"ignore_eos", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = json::parse(r.body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
  EXPECT_EQ(j["choices"][0]["text"], engine_text("Once upon a time", 12));
  EXPECT_EQ(metric("thaw_cold_starts_total"), 1);
  EXPECT_EQ(metric("vllm:generation_tokens_total"), 12);
}

TEST_F(ServeTest, StreamingSendsTheSameTextAsSseThenDone) {
  start();
  json body = {{"model", "tiny"},          {"prompt", "Once upon a time"},
               {"max_tokens", 10},         {"temperature", 0},
               {"ignore_eos", true},       {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  std::string raw;
  auto r = client_->stream("POST", "/v1/completions", body.dump(),
                           {{"content-type", "application/json"}}, [&](std::string_view d) {
                             raw += d;
                             return true;
                           });
  ASSERT_TRUE(r) << r.err().to_string();
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->headers["content-type"].find("text/event-stream"), std::string::npos);
  std::string text;
  int usage_chunks = 0;
  bool done = false;
  std::size_t pos = 0;
  while ((pos = raw.find("data: ", pos)) != std::string::npos) {
    const auto end = raw.find("\n\n", pos);
    ASSERT_NE(end, std::string::npos);
    const auto payload = raw.substr(pos + 6, end - pos - 6);
    pos = end + 2;
    if (payload == "[DONE]") {
      done = true;
      continue;
    }
    auto j = json::parse(payload);
    if (j.contains("usage") && !j["usage"].is_null()) {
      ++usage_chunks;
      EXPECT_EQ(j["usage"]["completion_tokens"], 10);
    }
    for (auto& c : j["choices"])
      text += c["text"].get<std::string>();
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(usage_chunks, 1);
  EXPECT_EQ(text, engine_text("Once upon a time", 10));
}

TEST_F(ServeTest, ChatAndModelsAndHealth) {
  start();
  EXPECT_EQ(get("/health").status, 200);
  auto models = json::parse(get("/v1/models").body);
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  auto r = post("/v1/chat/completions",
                {{"model", "tiny"},
                 {"messages", json::array({{{"role", "user"}, {"content", "Hi there"}}})},
                 {"max_tokens", 4},
                 {"ignore_eos", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = json::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
}

TEST_F(ServeTest, BadInputGetsClearErrorsAndTheServerCarriesOn) {
  start();
  auto expect_error = [&](const http::response& r, int status, const std::string& needle) {
    EXPECT_EQ(r.status, status) << r.body;
    auto j = json::parse(r.body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << r.body;
    EXPECT_NE(j["error"]["message"].get<std::string>().find(needle), std::string::npos)
        << r.body;
  };
  auto raw = client_->request("POST", "/v1/completions", "{not json",
                              {{"content-type", "application/json"}});
  ASSERT_TRUE(raw);
  EXPECT_EQ(raw->status, 400);
  expect_error(post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"temperature", "hot"}}),
               400, "temperature");
  expect_error(post("/v1/completions", {{"model", "nope"}, {"prompt", "x"}}), 404, "nope");
  std::string long_prompt;
  for (int i = 0; i < 2000; ++i)
    long_prompt += "hello ";
  expect_error(post("/v1/completions", {{"model", "tiny"}, {"prompt", long_prompt}}), 400,
               "context");
  expect_error(get("/v1/nothing"), 404, "/v1/nothing");
  auto big = client_->request("POST", "/v1/completions", std::string(2 << 20, 'x'),
                              {{"content-type", "application/json"}});
  if (big) { // the server may close the connection after a 413
    EXPECT_EQ(big->status, 413);
  }
  auto c = http::client::connect("127.0.0.1", server_->port());
  ASSERT_TRUE(c);
  client_ = std::move(*c);
  auto ok = post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 2}});
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST_F(ServeTest, ApiKeysLimitModelsAndAdmin) {
  serve_options o;
  o.gateway.keys = {{"user-key", {"tiny"}, false}, {"other-key", {"else"}, false},
                    {"admin-key", {"*"}, true}};
  start(o);
  auto body = json{{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 2}};
  EXPECT_EQ(post("/v1/completions", body).status, 401);
  EXPECT_EQ(post("/v1/completions", body, {{"authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(post("/v1/completions", body, {{"authorization", "Bearer user-key"}}).status, 200);
  // Another tenant's key sees no such model, not even in the list.
  EXPECT_EQ(post("/v1/completions", body, {{"authorization", "Bearer other-key"}}).status, 404);
  auto models = json::parse(get("/v1/models", {{"authorization", "Bearer other-key"}}).body);
  EXPECT_TRUE(models["data"].empty());
  EXPECT_EQ(get("/admin/status", {{"authorization", "Bearer user-key"}}).status, 403);
  EXPECT_EQ(get("/admin/status", {{"authorization", "Bearer admin-key"}}).status, 200);
}

TEST_F(ServeTest, AdminDeploysAndDeletesModels) {
  start();
  auto r = post("/admin/models", {{"name", "tiny2"}, {"checkpoint", ckpt()}, {"keep_alive", "1s"}});
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(post("/admin/models", {{"name", "tiny2"}, {"checkpoint", ckpt()}}).status, 409);
  auto missing = post("/admin/models", {{"name", "x"}, {"checkpoint", "/no/such/dir"}});
  EXPECT_EQ(missing.status, 404) << missing.body;
  EXPECT_EQ(post("/v1/completions", {{"model", "tiny2"}, {"prompt", "x"}, {"max_tokens", 2}}).status,
            200);
  auto status = json::parse(get("/admin/status").body);
  EXPECT_EQ(status["nodes"].size(), 1u);
  EXPECT_EQ(status["models"].size(), 2u);
  auto del = client_->request("DELETE", "/admin/models/tiny2");
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200) << del->body;
  EXPECT_EQ(post("/v1/completions", {{"model", "tiny2"}, {"prompt", "x"}}).status, 404);
  EXPECT_EQ(client_->request("DELETE", "/admin/models/tiny2")->status, 404);
}

TEST_F(ServeTest, ADisconnectedClientCancelsItsSequenceAndFreesItsBlocks) {
  start();
  // 16 choices of 240 tokens: far more work than the client waits for (one SSE event).
  json body = {{"model", "tiny"}, {"prompt", "Once upon a time"}, {"max_tokens", 240},
               {"n", 16}, {"ignore_eos", true}, {"stream", true}};
  std::string seen;
  auto r = client_->stream("POST", "/v1/completions", body.dump(),
                           {{"content-type", "application/json"}}, [&](std::string_view d) {
                             seen += d;
                             return seen.find("data: ") == std::string::npos;
                           });
  EXPECT_NE(seen.find("data: "), std::string::npos);
  auto c = http::client::connect("127.0.0.1", server_->port());
  ASSERT_TRUE(c);
  client_ = std::move(*c);
  // The cancellation travels gateway -> router -> instance; wait for it to land.
  for (int i = 0; i < 200 && (metric("vllm:num_requests_running") != 0 ||
                              metric("vllm:kv_cache_usage_perc") != 0);
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(metric("vllm:num_requests_running"), 0);
  EXPECT_EQ(metric("vllm:kv_cache_usage_perc"), 0);
  EXPECT_LT(metric("vllm:generation_tokens_total"), 16 * 240);
  EXPECT_EQ(metric("vllm:request_success_total"), 0); // cancelled, not finished
}

TEST_F(ServeTest, QueueLimitAnswers429AndScaleInThenDramColdStart) {
  serve_options o;
  model_spec m;
  m.name = "tiny";
  m.checkpoint = ckpt();
  m.kv_blocks = 64;
  m.queue_limit = 1;
  m.keep_alive_ms = 0;
  o.models.push_back(m);
  start(o);
  // The first request waits for the cold start, holding the only place in the queue (seen in
  // /admin/status); a second request meanwhile is refused.
  auto other = http::client::connect("127.0.0.1", server_->port());
  ASSERT_TRUE(other);
  std::thread t([&] {
    json body = {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 200}, {"ignore_eos", true}};
    auto r = (*other)->request("POST", "/v1/completions", body.dump(),
                               {{"content-type", "application/json"}});
    EXPECT_TRUE(r && r->status == 200);
  });
  bool queued = false;
  for (int i = 0; i < 2000 && !queued; ++i) {
    auto m = json::parse(get("/admin/status").body)["models"][0];
    queued = m["queued"] == 1 || m["in_flight"] == 1;
    if (!queued)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(queued);
  auto r = post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 2}});
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["type"], "rate_limit_error") << r.body;
  t.join();
  const json greedy = {{"model", "tiny"}, {"prompt", "Once upon"}, {"max_tokens", 8},
                       {"temperature", 0}, {"ignore_eos", true}};
  // On the first instance: its weights read from SSD into the DRAM tier, where it runs (a CPU
  // node copies nothing).
  auto before = post("/v1/completions", greedy);
  ASSERT_EQ(before.status, 200) << before.body;
  // keep_alive 0: the idle instance stops; the next request starts one on the bytes the DRAM
  // tier still holds, without reading or copying.
  for (int i = 0; i < 300 && json::parse(get("/admin/status").body)["models"][0]["instances"] != 0;
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto after = post("/v1/completions", greedy);
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(json::parse(after.body)["choices"][0]["text"],
            json::parse(before.body)["choices"][0]["text"]);
  EXPECT_EQ(metric("thaw_loads_total", "tier=\"dram\""), 1);
  EXPECT_EQ(metric("thaw_cold_starts_total"), 2);
  const auto node = json::parse(get("/admin/status").body)["nodes"][0];
  EXPECT_EQ(node["starts_in_place"], 2) << node.dump();
  EXPECT_EQ(node["loads_ssd"], 1) << node.dump();
  EXPECT_EQ(node["loads_dram"], 0) << node.dump(); // nothing copied
}

/// Whether node 0 of /admin/status lists `dir` in its DRAM tier.
bool in_dram(const json& status, const std::string& dir) {
  for (const auto& m : status["nodes"][0]["dram_models"])
    if (m == dir)
      return true;
  return false;
}

TEST_F(ServeTest, PrefetchedModelIsInDramBeforeAnyRequestAndColdStartsFromIt) {
  // [[models]] takes the key; the admin API takes the field.
  auto cfg = config::parse("name = \"m\"\ncheckpoint = \"/x\"\nprefetch = true\n");
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  auto from_toml = model_spec_from_config(*cfg);
  ASSERT_TRUE(from_toml) << from_toml.err().to_string();
  EXPECT_TRUE(from_toml->prefetch);

  start(); // "tiny", not prefetched: nothing is in DRAM
  EXPECT_FALSE(in_dram(json::parse(get("/admin/status").body), ckpt()));
  EXPECT_EQ(post("/admin/models", {{"name", "soon"}, {"checkpoint", ckpt()}, {"prefetch", 1}})
                .status,
            400);
  auto r = post("/admin/models", {{"name", "soon"},
                                  {"checkpoint", ckpt()},
                                  {"prefetch", true},
                                  {"keep_alive", 0}});
  ASSERT_EQ(r.status, 201) << r.body;
  // Deploy does not wait for the read; the node reports it once the model is ready in DRAM.
  bool ready = false;
  for (int i = 0; i < 2000 && !ready; ++i) {
    ready = in_dram(json::parse(get("/admin/status").body), ckpt());
    if (!ready)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(ready);
  auto status = json::parse(get("/admin/status").body);
  EXPECT_EQ(status["nodes"][0]["instances"].size(), 0u); // read, not started
  EXPECT_EQ(metric("thaw_cold_starts_total"), 0);

  // The first request's cold start loads from DRAM; nothing is read from SSD for an instance.
  auto body = json{{"model", "soon"}, {"prompt", "Once upon a time"}, {"max_tokens", 6},
                   {"temperature", 0}, {"ignore_eos", true}};
  auto first = post("/v1/completions", body);
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(json::parse(first.body)["choices"][0]["text"], engine_text("Once upon a time", 6));
  EXPECT_EQ(metric("thaw_loads_total", "tier=\"dram\""), 1);
  EXPECT_EQ(metric("thaw_loads_total", "tier=\"ssd\""), 0);

  // keep_alive 0: scaled to zero, the checkpoint stays in DRAM and the next start is from it.
  for (int i = 0; i < 300 && json::parse(get("/admin/status").body)["nodes"][0]["instances"]
                                     .size() != 0;
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  status = json::parse(get("/admin/status").body);
  ASSERT_EQ(status["nodes"][0]["instances"].size(), 0u);
  EXPECT_TRUE(in_dram(status, ckpt()));
  EXPECT_EQ(post("/v1/completions", body).status, 200);
  EXPECT_EQ(metric("thaw_loads_total", "tier=\"dram\""), 2);
  EXPECT_EQ(metric("thaw_loads_total", "tier=\"ssd\""), 0);
  EXPECT_EQ(metric("thaw_cold_starts_total"), 2);
}

/// (prefetch_atom, dir) asked of a node of its own (no scheduler), as the registry asks it.
expected<bool> ask_prefetch(caf::actor_system& sys, const caf::actor& node, const std::string& dir) {
  caf::scoped_actor self{sys};
  expected<bool> out = make_error(errc::internal, "no answer");
  self->request(node, caf::infinite, prefetch_atom::value, dir)
      .receive([&](bool b) { out = b; }, [&](caf::error& e) { out = from_caf(e); });
  return out;
}

node_status ask_status(caf::actor_system& sys, const caf::actor& node) {
  caf::scoped_actor self{sys};
  node_status out;
  self->request(node, caf::infinite, status_atom::value)
      .receive([&](node_status& s) { out = std::move(s); }, [&](caf::error&) {});
  return out;
}

TEST_F(ServeTest, NodePrefetchReadsIntoDramWithoutAnInstanceAndNamesItsErrors) {
  auto cfg = make_actor_system_config();
  caf::actor_system sys{*cfg};
  auto make_node = [&](std::uint64_t pool_bytes) {
    node_options no;
    no.loader.pool_bytes = pool_bytes;
    no.loader.chunk_bytes = 64 << 10;
    auto ctx = node_context::create(no, std::make_shared<metrics::registry>());
    EXPECT_TRUE(ctx) << ctx.err().to_string();
    return spawn_node(sys, std::move(*ctx), caf::actor{});
  };
  auto node = make_node(64ull << 20);
  EXPECT_TRUE(ask_status(sys, node).dram_models.empty());
  auto ok = ask_prefetch(sys, node, ckpt());
  ASSERT_TRUE(ok) << ok.err().to_string();
  auto st = ask_status(sys, node);
  EXPECT_EQ(st.dram_models, std::vector<std::string>{ckpt()});
  EXPECT_TRUE(st.instances.empty());
  EXPECT_GT(st.dram_used_bytes, 0u);
  EXPECT_TRUE(ask_prefetch(sys, node, ckpt())); // there already: true at once

  auto missing = ask_prefetch(sys, node, (dir() / "no-such-model").string());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.err().code, errc::not_found) << missing.err().to_string();

  // A DRAM tier of one 64 KiB chunk can never hold the model.
  auto small = make_node(64 << 10);
  auto full = ask_prefetch(sys, small, ckpt());
  ASSERT_FALSE(full);
  EXPECT_EQ(full.err().code, errc::resource_exhausted) << full.err().to_string();
  EXPECT_NE(full.err().to_string().find("DRAM tier"), std::string::npos) << full.err().to_string();
  EXPECT_TRUE(ask_status(sys, small).dram_models.empty());
  for (auto* n : {&node, &small})
    caf::anon_send_exit(*n, caf::exit_reason::user_shutdown);
}

/// Asks `node` to lend `dir` as `self`: the lender keeps it published while `self` lives.
expected<pull_offer> ask_pull(caf::scoped_actor& self, const caf::actor& node,
                              const std::string& dir, std::uint64_t chunk) {
  expected<pull_offer> out = make_error(errc::internal, "no answer");
  self->request(node, caf::infinite, pull_atom::value, dir, chunk)
      .receive([&](pull_offer& o) { out = std::move(o); },
               [&](caf::error& e) { out = from_caf(e); });
  return out;
}

/// Waits (bounded) until `ctx`'s DRAM tier pins nothing.
bool wait_unpinned(node_context& ctx) {
  for (int i = 0; i < 500 && ctx.ld->tier().pinned_chunks() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return ctx.ld->tier().pinned_chunks() == 0;
}

// The lending side of the remote tier: a node asked for a checkpoint that is only on its SSD
// reads it into DRAM, pins and publishes it; a puller fetches it over UCX into its own tier
// (pool chunks of another size) with every checksum checked; release, or the puller's death,
// unpins it. A node without a data plane, or without the checkpoint, says so.
TEST_F(ServeTest, ANodeLendsACheckpointFromItsSsdOverUcxUntilReleased) {
  auto cfg = make_actor_system_config();
  caf::actor_system sys{*cfg};
  node_options no;
  no.name = "lender";
  no.loader.pool_bytes = 256ull << 20;
  no.loader.chunk_bytes = 1 << 20;
  auto made = node_context::create(no, std::make_shared<metrics::registry>(), true);
  ASSERT_TRUE(made) << made.err().to_string();
  auto ctx = *made;
  ASSERT_NE(ctx->plane, nullptr);
  auto lender = spawn_node(sys, ctx, caf::actor{});
  ASSERT_TRUE(ask_status(sys, lender).dram_models.empty());

  // The puller: a data plane and a loader whose pool it allocated, as a node has.
  auto plane = transport::data_plane::start({});
  ASSERT_TRUE(plane) << plane.err().to_string();
  host_device dev;
  loader_options lo;
  lo.pool_bytes = 256ull << 20;
  lo.chunk_bytes = 256 << 10;
  {
    auto puller =
        loader::create(lo, dev, [&](std::uint64_t n) { return (*plane)->allocate_memory(n); });
    ASSERT_TRUE(puller) << puller.err().to_string();

    caf::scoped_actor asker{sys}; // the puller, as the lender sees it
    auto offer = ask_pull(asker, lender, ckpt(), lo.chunk_bytes);
    ASSERT_TRUE(offer) << offer.err().to_string();
    EXPECT_EQ(offer->node, "lender");
    EXPECT_EQ(offer->chunk_bytes, no.loader.chunk_bytes);
    EXPECT_FALSE(offer->tokenizer_json.empty());
    EXPECT_EQ(ask_status(sys, lender).dram_models, std::vector<std::string>{ckpt()})
        << "read into DRAM from its SSD to be lent";
    EXPECT_GT(ctx->ld->tier().pinned_chunks(), 0u);

    auto model = checkpoint::from_manifest("pulled", offer->manifest);
    ASSERT_TRUE(model) << model.err().to_string();
    data_plane_source source{**plane, remote_location{offer->node, offer->host, offer->port,
                                                      offer->key, offer->chunk_bytes}};
    {
      auto lease = (*puller)->pull(*model, source);
      ASSERT_TRUE(lease) << lease.err().to_string();
    }
    EXPECT_EQ((*puller)->stats().bytes_pulled, model->total_bytes());
    // The pulled bytes are the checkpoint's: a copy load from the puller's tier matches them.
    auto h = (*puller)->load(*model);
    ASSERT_TRUE(h && h->wait());
    auto local = checkpoint::open(ckpt());
    ASSERT_TRUE(local);
    auto buffer = h->take_buffer();
    ASSERT_TRUE(buffer);
    const auto* got = static_cast<const std::byte*>((*buffer)->data());
    EXPECT_EQ(std::vector<std::byte>(got, got + model->total_bytes()),
              testing::concatenated_data(*local));

    caf::anon_send(lender, release_atom::value, offer->key);
    EXPECT_TRUE(wait_unpinned(*ctx)) << "release left the model pinned";
    auto gone = (*plane)->describe(offer->host, offer->port, offer->key);
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.err().code, errc::not_found);

    // A puller that goes away without releasing: the lender notices and unpins.
    {
      caf::scoped_actor brief{sys};
      brief->request(lender, caf::infinite, pull_atom::value, ckpt(), lo.chunk_bytes)
          .receive([](pull_offer&) {}, [](caf::error& e) { FAIL() << from_caf(e).to_string(); });
      EXPECT_GT(ctx->ld->tier().pinned_chunks(), 0u);
    }
    EXPECT_TRUE(wait_unpinned(*ctx)) << "a dead puller's pull stayed pinned";
  }
  (*plane)->stop();

  caf::scoped_actor asker{sys};
  auto missing = ask_pull(asker, lender, (dir() / "no-such-model").string(), lo.chunk_bytes);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.err().code, errc::not_found);
  EXPECT_NE(missing.err().message.find("no-such-model"), std::string::npos);

  auto plain_ctx = node_context::create(no, std::make_shared<metrics::registry>());
  ASSERT_TRUE(plain_ctx);
  auto plain = spawn_node(sys, *plain_ctx, caf::actor{});
  auto refused = ask_pull(asker, plain, ckpt(), lo.chunk_bytes);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.err().code, errc::unsupported);
  EXPECT_NE(refused.err().message.find("node.data_plane"), std::string::npos);

  // A start of a checkpoint the node does not have, with no peer to pull it from, answers
  // not_found at once (the scheduler then asks another node).
  model_spec absent;
  absent.name = "absent";
  absent.checkpoint = (dir() / "no-such-model").string();
  for (auto* n : {&lender, &plain}) {
    std::optional<error> answer;
    asker->request(*n, std::chrono::seconds(10), start_atom::value, absent,
                   std::vector<caf::actor>{})
        .receive([&](instance_started&) { answer = make_error(errc::internal, "started"); },
                 [&](caf::error& e) { answer = from_caf(e); });
    ASSERT_TRUE(answer);
    EXPECT_EQ(answer->code, errc::not_found) << answer->to_string();
    EXPECT_NE(answer->message.find("no-such-model"), std::string::npos) << answer->message;
  }
  for (auto* n : {&lender, &plain})
    caf::anon_send_exit(*n, caf::exit_reason::user_shutdown);
}

// A model with a rhythm of requests is expected again: pushed out of a DRAM tier that holds one
// model, it is read back in while it has no instance, and its next cold start is from DRAM.
TEST_F(ServeTest, AModelWithRecentTrafficIsReadBackIntoDramAfterEviction) {
  testing::temp_dir other_dir;
  testing::make_hf(other_dir / "hf", "tiny", dtype::f32, 2); // same size, other bytes
  testing::import(other_dir / "hf", other_dir / "other");
  const auto other = (other_dir / "other").string();
  serve_options o;
  for (const auto& [name, dir] : {std::pair{"a", ckpt()}, std::pair{"b", other}}) {
    model_spec m;
    m.name = name;
    m.checkpoint = dir;
    m.kv_blocks = 16;
    m.keep_alive_ms = 0;
    o.models.push_back(m);
  }
  start(o, 40 * (64 << 10)); // a DRAM tier with room for one model: its chunks and a few more
  auto ask = [&](const std::string& model) {
    auto r = post("/v1/completions", {{"model", model}, {"prompt", "x"}, {"max_tokens", 2}});
    EXPECT_EQ(r.status, 200) << r.body;
  };
  auto dram = [&](const std::string& dir) {
    return in_dram(json::parse(get("/admin/status").body), dir);
  };
  for (int i = 0; i < 3; ++i) { // a's rhythm: a request every 300 ms
    ask("a");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  ask("b"); // read into the tier in a's place
  EXPECT_TRUE(dram(other));
  EXPECT_FALSE(dram(ckpt()));
  bool back = false;
  for (int i = 0; i < 500 && !back; ++i) { // a's router looks once a second
    back = dram(ckpt());
    if (!back)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(back) << "a was not read back into DRAM";
  EXPECT_FALSE(dram(other)) << "b made room for it";
  const auto ssd_before = metric("thaw_loads_total", "tier=\"ssd\"");
  ask("a");
  EXPECT_EQ(metric("thaw_loads_total", "tier=\"ssd\""), ssd_before) << "a started from DRAM";
}

TEST_F(ServeTest, ABurstOfRequestsToAColdModelIsAllServed) {
  serve_options o;
  model_spec m;
  m.name = "tiny";
  m.checkpoint = ckpt();
  m.kv_blocks = 64;
  m.min_instances = 0;
  m.max_instances = 2;
  m.target_concurrency = 4;
  o.models.push_back(m);
  start(o);
  ASSERT_EQ(json::parse(get("/admin/status").body)["models"][0]["instances"], 0);
  constexpr int n = 16;
  constexpr int tokens = 8;
  std::vector<int> statuses(n, 0);
  std::vector<int> counts(n, -1);
  std::vector<std::string> texts(n);
  std::vector<std::thread> clients;
  for (int i = 0; i < n; ++i)
    clients.emplace_back([&, i] {
      auto c = http::client::connect("127.0.0.1", server_->port());
      if (!c)
        return;
      json body = {{"model", "tiny"}, {"prompt", "Once upon a time"}, {"max_tokens", tokens},
                   {"temperature", 0}, {"ignore_eos", true}};
      auto r = (*c)->request("POST", "/v1/completions", body.dump(),
                             {{"content-type", "application/json"}});
      if (!r)
        return;
      statuses[i] = r->status;
      if (r->status != 200)
        return;
      auto j = json::parse(r->body);
      counts[i] = j["usage"]["completion_tokens"];
      texts[i] = j["choices"][0]["text"];
    });
  for (auto& t : clients)
    t.join();
  const auto expected = engine_text("Once upon a time", tokens);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(statuses[i], 200) << "request " << i;
    EXPECT_EQ(counts[i], tokens) << "request " << i;
    EXPECT_EQ(texts[i], expected) << "request " << i;
  }
  EXPECT_EQ(metric("vllm:request_success_total"), n);
  const auto cold = metric("thaw_cold_starts_total");
  EXPECT_GE(cold, 1);
  EXPECT_LE(cold, 2); // never more than max_instances
  EXPECT_LE(json::parse(get("/admin/status").body)["models"][0]["instances"], 2);
}

/// serve_options from a TOML text.
expected<serve_options> parse(const char* text) {
  auto c = config::parse(text);
  EXPECT_TRUE(c) << text;
  return serve_options::from_config(*c);
}

TEST(ServeOptions, HttpOutputLimitsComeFromTheConfig) {
  auto d = parse("");
  ASSERT_TRUE(d) << d.err().to_string();
  EXPECT_EQ(d->http.max_pending_output_bytes, 8u << 20);
  EXPECT_EQ(d->http.write_timeout, std::chrono::seconds(60));
  auto o = parse("[http]\nmax_pending_output_bytes = \"1MiB\"\nwrite_timeout = \"5s\"\n");
  ASSERT_TRUE(o) << o.err().to_string();
  EXPECT_EQ(o->http.max_pending_output_bytes, 1u << 20);
  EXPECT_EQ(o->http.write_timeout, std::chrono::seconds(5));
  auto bad = parse("[http]\nwrite_timeout = 0\n");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.err().message.find("http.write_timeout"), std::string::npos) << bad.err().message;
}

TEST(ServeOptions, GpuSlotsComeFromTheConfig) {
  auto d = parse("");
  ASSERT_TRUE(d) << d.err().to_string();
  EXPECT_EQ(d->node.gpus, 0) << "CPU slots only unless asked";
  auto o = parse("[node]\ngpus = 2\n");
  ASSERT_TRUE(o) << o.err().to_string();
  EXPECT_EQ(o->node.gpus, 2);
  auto bad = parse("[node]\ngpus = -1\n");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.err().message.find("node.gpus"), std::string::npos) << bad.err().message;
}

TEST(ServeOptions, HowLongAPullWaitsForRoomComesFromTheConfig) {
  auto d = parse("");
  ASSERT_TRUE(d) << d.err().to_string();
  EXPECT_EQ(d->node.pull_room_wait, std::chrono::seconds(30));
  auto o = parse("[node]\npull_room_wait = \"2m\"\n");
  ASSERT_TRUE(o) << o.err().to_string();
  EXPECT_EQ(o->node.pull_room_wait, std::chrono::minutes(2));
  auto bad = parse("[node]\npull_room_wait = -1\n");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.err().message.find("node.pull_room_wait"), std::string::npos)
      << bad.err().message;
}

} // namespace
} // namespace thaw
