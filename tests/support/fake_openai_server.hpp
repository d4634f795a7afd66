#pragma once
// A fake OpenAI server for tests of `thaw bench serve`, made with thaw's real http::server:
// POST /v1/completions streams max_tokens chunks of one word each, the usage chunk and
// "data: [DONE]", as a server with ignore_eos would; GET /v1/models lists "m-a" and "m-b".
// Model "missing" gets a 404 with an OpenAI error body. With `hold`, streamed answers wait
// until release(), so a test can keep client threads busy without timing anything.

#include "transport/http_server.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace thaw::testing {

class fake_openai_server {
public:
  explicit fake_openai_server(bool hold = false) : hold_(hold) {
    auto s = http::server::start({}, [this](http::request req, std::shared_ptr<http::responder> r) {
      handle(std::move(req), std::move(r));
    });
    EXPECT_TRUE(s) << s.err().to_string();
    if (s)
      server_ = std::move(*s);
  }
  ~fake_openai_server() {
    if (server_)
      server_->stop();
  }
  fake_openai_server(const fake_openai_server&) = delete;
  fake_openai_server& operator=(const fake_openai_server&) = delete;

  [[nodiscard]] std::string url() const {
    return "http://127.0.0.1:" + std::to_string(server_ ? server_->port() : 0);
  }

  /// Answers the held requests and stops holding.
  void release() {
    std::vector<std::pair<nlohmann::json, std::shared_ptr<http::responder>>> held;
    {
      std::lock_guard lock(mutex_);
      hold_ = false;
      held.swap(held_);
    }
    for (auto& [body, r] : held)
      answer(body, *r);
  }

  /// The bodies of every completion request received so far.
  [[nodiscard]] std::vector<nlohmann::json> bodies() {
    std::lock_guard lock(mutex_);
    return bodies_;
  }

private:
  void handle(http::request req, std::shared_ptr<http::responder> r) {
    if (req.method == "GET" && req.path == "/v1/models") {
      r->send(200, "application/json",
              R"({"object":"list","data":[{"id":"m-a","object":"model"},)"
              R"({"id":"m-b","object":"model"}]})");
      return;
    }
    if (req.method != "POST" || req.path != "/v1/completions") {
      r->send(404, "application/json", R"({"error":{"message":"no such route"}})");
      return;
    }
    auto body = nlohmann::json::parse(req.body, nullptr, false);
    {
      std::lock_guard lock(mutex_);
      bodies_.push_back(body);
      if (hold_) {
        held_.emplace_back(body, std::move(r));
        return;
      }
    }
    answer(body, *r);
  }

  static void answer(const nlohmann::json& body, http::responder& r) {
    if (!body.is_object() || body.value("model", "") == "missing") {
      r.send(404, "application/json",
             R"({"error":{"message":"model 'missing' does not exist","type":"not_found_error"}})");
      return;
    }
    const int n = body.value("max_tokens", 16);
    const std::string prompt = body.value("prompt", std::string());
    const auto prompt_words = static_cast<int>(std::count(prompt.begin(), prompt.end(), ' ') + 1);
    r.start_stream(200, "text/event-stream");
    for (int i = 0; i < n; ++i) {
      nlohmann::json chunk{
          {"id", "cmpl-1"},
          {"object", "text_completion"},
          {"model", body["model"]},
          {"choices", {{{"index", 0}, {"text", " tok"}, {"finish_reason", nullptr}}}}};
      r.write("data: " + chunk.dump() + "\n\n");
    }
    nlohmann::json usage{{"id", "cmpl-1"},
                         {"choices", nlohmann::json::array()},
                         {"usage", {{"prompt_tokens", prompt_words}, {"completion_tokens", n}}}};
    r.write("data: " + usage.dump() + "\n\n");
    r.write("data: [DONE]\n\n");
    r.finish();
  }

  std::unique_ptr<http::server> server_;
  std::mutex mutex_;
  bool hold_;
  std::vector<nlohmann::json> bodies_;
  std::vector<std::pair<nlohmann::json, std::shared_ptr<http::responder>>> held_;
};

} // namespace thaw::testing
