// OpenAI responses: bodies, SSE chunks, usage and error events parse back (with nlohmann::json,
// as a client would) into the fields OpenAI clients read.

#include "runtime/api/openai.hpp"

#include "runtime/engine/tokenizer.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>

namespace thaw::api {
namespace {

using json = nlohmann::json;

const tokenizer& llama2() {
  static const tokenizer tok = [] {
    auto t = tokenizer::load(std::filesystem::path{THAW_SOURCE_DIR} /
                             "assets/tokenizers/llama2/tokenizer.json");
    if (!t)
      throw std::runtime_error(t.err().to_string());
    return std::move(*t);
  }();
  return tok;
}

completion_request parse_ok(endpoint kind, std::string_view body) {
  auto r = parse_request(kind, body);
  EXPECT_TRUE(std::holds_alternative<completion_request>(r)) << body;
  return std::holds_alternative<completion_request>(r) ? std::get<completion_request>(r)
                                                       : completion_request{};
}

// One SSE event: "data: <json>\n\n", nothing else.
json parse_event(const std::string& ev) {
  EXPECT_TRUE(ev.starts_with("data: ")) << ev;
  EXPECT_TRUE(ev.ends_with("\n\n")) << ev;
  const auto payload = ev.substr(6, ev.size() - 8);
  EXPECT_EQ(payload.find('\n'), std::string::npos) << "one line per event";
  return json::parse(payload);
}

const response_meta meta{"cmpl-abc", 1700000000, "llama"};

// "Hello world" as the model would generate it, with logprobs and top-2 alternatives.
choice_output hello_choice(std::int32_t index) {
  choice_output c;
  c.index = index;
  c.tokens = llama2().encode("Hello world", false).value();
  c.text = llama2().decode(c.tokens).value();
  for (std::size_t k = 0; k < c.tokens.size(); ++k) {
    c.logprobs.push_back(-0.5f * static_cast<float>(k + 1));
    c.top.push_back({{c.tokens[k], c.logprobs.back()}, {13, -4.0f}});
  }
  c.finish = finish_reason::length;
  return c;
}

TEST(OpenAIResponse, CompletionBodyWithUsageAndStopReason) {
  const auto req = parse_ok(endpoint::completions, R"({"model":"llama","prompt":"Hi","n":2})");
  auto a = hello_choice(0);
  auto b = hello_choice(1);
  b.text = "Hello";
  b.finish = finish_reason::stop;
  b.stop_reason = " world";
  const auto j = json::parse(response_json(req, meta, {a, b}, {5, 4, 3}, llama2()));
  EXPECT_EQ(j["id"], "cmpl-abc");
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], "llama");
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["text"], "Hello world");
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(j["choices"][0]["stop_reason"].is_null());
  EXPECT_EQ(j["choices"][1]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][1]["stop_reason"], " world");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
  EXPECT_EQ(j["usage"]["total_tokens"], 9);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
}

TEST(OpenAIResponse, CompletionLogprobsUseVocabularyStringsAndCharacterOffsets) {
  const auto req =
      parse_ok(endpoint::completions, R"({"model":"llama","prompt":"Hi","logprobs":2})");
  auto c = hello_choice(0);
  c.logprobs[0] = -INFINITY; // JSON has no infinity: reported as -9999 like vLLM
  const auto j = json::parse(response_json(req, meta, {c}, {}, llama2()));
  const auto& lp = j["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), c.tokens.size());
  for (std::size_t k = 0; k < c.tokens.size(); ++k) {
    const auto text = llama2().token_text(c.tokens[k]).value();
    EXPECT_EQ(lp["tokens"][k], text);
    EXPECT_TRUE(lp["top_logprobs"][k].contains(text));
    EXPECT_TRUE(lp["top_logprobs"][k].contains(llama2().token_text(13).value()));
  }
  EXPECT_EQ(lp["tokens"][0], "\xe2\x96\x81Hello"); // "▁Hello"
  EXPECT_EQ(lp["token_logprobs"][0], -9999.0);
  EXPECT_EQ(lp["token_logprobs"][1], -1.0);
  // Offsets point into the returned text: "Hello" at 0, " world" at 5.
  EXPECT_EQ(lp["text_offset"], json::parse("[0,5]"));
}

TEST(OpenAIResponse, EchoPrefixesThePrompt) {
  auto req = parse_ok(endpoint::completions, R"({"model":"llama","prompt":"Say:","echo":true})");
  auto j = json::parse(response_json(req, meta, {hello_choice(0)}, {}, llama2()));
  EXPECT_EQ(j["choices"][0]["text"], "Say:Hello world");
  // Token prompts echo their text; choice 3 of n=2 belongs to prompt 1.
  req = parse_ok(endpoint::completions,
                 R"({"model":"llama","prompt":[[1,15043],[1,3186]],"n":2,"echo":true})");
  j = json::parse(response_json(req, meta, {hello_choice(3)}, {}, llama2()));
  EXPECT_EQ(j["choices"][0]["text"],
            llama2().decode(std::vector<std::int32_t>{1, 3186}).value() + "Hello world");
  const auto ev =
      parse_event(stream_event(req, meta, {.index = 1, .first = true, .text = "x"}, llama2()));
  EXPECT_EQ(ev["choices"][0]["text"],
            llama2().decode(std::vector<std::int32_t>{1, 15043}).value() + "x");
}

TEST(OpenAIResponse, ChatBodyWithTopLogprobs) {
  const auto req = parse_ok(endpoint::chat_completions,
                            R"({"model":"llama","messages":[{"role":"user","content":"Hi"}],
                                "logprobs":true,"top_logprobs":1})");
  const response_meta m{"chatcmpl-1", 1, "llama"};
  const auto j = json::parse(response_json(req, m, {hello_choice(0)}, {7, 2, 0}, llama2()));
  EXPECT_EQ(j["object"], "chat.completion");
  const auto& ch = j["choices"][0];
  EXPECT_EQ(ch["message"]["role"], "assistant");
  EXPECT_EQ(ch["message"]["content"], "Hello world");
  EXPECT_EQ(ch["finish_reason"], "length");
  const auto& content = ch["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], "\xe2\x96\x81Hello");
  EXPECT_EQ(content[0]["logprob"], -0.5);
  EXPECT_EQ(content[0]["bytes"], json::parse("[226,150,129,72,101,108,108,111]"));
  ASSERT_EQ(content[0]["top_logprobs"].size(), 1u); // top_logprobs: 1 of the 2 the engine gave
  EXPECT_EQ(content[0]["top_logprobs"][0]["token"], "\xe2\x96\x81Hello");
  EXPECT_EQ(j["usage"]["total_tokens"], 9);
}

TEST(OpenAIResponse, ChatStreamChunksCarryRoleThenContentThenFinish) {
  const auto req = parse_ok(endpoint::chat_completions,
                            R"({"model":"llama","messages":[{"role":"user","content":"Hi"}],
                                "stream":true})");
  const response_meta m{"chatcmpl-1", 1, "llama"};
  auto first =
      parse_event(stream_event(req, m, {.index = 0, .first = true, .text = "Hel"}, llama2()));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["id"], "chatcmpl-1");
  EXPECT_EQ(first["choices"][0]["delta"], json::parse(R"({"role":"assistant","content":"Hel"})"));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(first["choices"][0]["logprobs"].is_null());
  EXPECT_FALSE(first.contains("usage")); // only with include_usage

  auto next = parse_event(stream_event(req, m, {.index = 0, .text = "lo"}, llama2()));
  EXPECT_EQ(next["choices"][0]["delta"], json::parse(R"({"content":"lo"})"));
  auto last = parse_event(stream_event(
      req, m, {.index = 0, .finish = finish_reason::stop, .stop_reason = "END"}, llama2()));
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(last["choices"][0]["stop_reason"], "END");
}

TEST(OpenAIResponse, CompletionStreamChunksWithLogprobsAndUsage) {
  const auto req = parse_ok(endpoint::completions,
                            R"({"model":"llama","prompt":"Hi","stream":true,"logprobs":1,
                                "stream_options":{"include_usage":true}})");
  const auto c = hello_choice(0);
  chunk_delta d{.index = 2, .first = false, .text = " world", .tokens = {c.tokens[1]},
                .logprobs = {c.logprobs[1]}, .top = {c.top[1]}};
  d.text_offset = char_count("Hello");
  const auto ev = parse_event(stream_event(req, meta, d, llama2()));
  EXPECT_EQ(ev["object"], "text_completion");
  EXPECT_TRUE(ev.contains("usage"));
  EXPECT_TRUE(ev["usage"].is_null());
  const auto& ch = ev["choices"][0];
  EXPECT_EQ(ch["index"], 2);
  EXPECT_EQ(ch["text"], " world");
  EXPECT_EQ(ch["logprobs"]["tokens"], json::array({"\xe2\x96\x81world"}));
  EXPECT_EQ(ch["logprobs"]["text_offset"], json::array({5}));
  EXPECT_EQ(ch["logprobs"]["token_logprobs"], json::array({-1.0}));

  const auto u = parse_event(usage_event(req, meta, {10, 6, 4}));
  EXPECT_EQ(u["object"], "text_completion");
  EXPECT_EQ(u["choices"], json::array());
  EXPECT_EQ(u["usage"]["prompt_tokens"], 10);
  EXPECT_EQ(u["usage"]["completion_tokens"], 6);
  EXPECT_EQ(u["usage"]["total_tokens"], 16);
  EXPECT_EQ(u["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
  EXPECT_EQ(done_event(), "data: [DONE]\n\n");
}

TEST(OpenAIResponse, ErrorsUseTheNestedOpenAIForm) {
  auto e = bad_request("'temperature' must be a number", "temperature");
  auto j = json::parse(to_json(e));
  EXPECT_EQ(j["error"]["message"], "'temperature' must be a number");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_TRUE(j["error"]["code"].is_null());
  j = parse_event(error_event(bad_request("bad")));
  EXPECT_TRUE(j["error"]["param"].is_null());
  EXPECT_EQ(j["error"]["message"], "bad");

  EXPECT_EQ(from_error(make_error(errc::invalid_argument, "x")).status, 400);
  const auto nf = from_error(make_error(errc::not_found, "model foo"));
  EXPECT_EQ(nf.status, 404);
  EXPECT_EQ(nf.type, "not_found_error");
  EXPECT_EQ(nf.message, "model foo");
  EXPECT_EQ(from_error(make_error(errc::resource_exhausted, "x")).status, 429);
  EXPECT_EQ(from_error(make_error(errc::cancelled, "x")).status, 499);
  const auto internal = from_error(make_error(errc::device_error, "cuda"));
  EXPECT_EQ(internal.status, 500);
  EXPECT_EQ(internal.type, "server_error");
}

TEST(OpenAIResponse, ModelsListAndMeta) {
  const auto j = json::parse(models_json({"llama", "qwen"}, 42));
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][1]["id"], "qwen");
  EXPECT_EQ(j["data"][1]["object"], "model");
  EXPECT_EQ(j["data"][1]["created"], 42);
  EXPECT_EQ(j["data"][1]["owned_by"], "thaw");
  EXPECT_EQ(json::parse(models_json({}, 0))["data"], json::array());

  const auto a = new_meta(endpoint::chat_completions, "llama");
  const auto b = new_meta(endpoint::completions, "llama");
  EXPECT_TRUE(a.id.starts_with("chatcmpl-"));
  EXPECT_TRUE(b.id.starts_with("cmpl-"));
  EXPECT_NE(a.id.substr(9), b.id.substr(5));
  EXPECT_GT(a.created, 1600000000);
  EXPECT_EQ(char_count("h\xc3\xa9llo \xe2\x96\x81"), 7);
}

} // namespace
} // namespace thaw::api
