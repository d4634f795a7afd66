// OpenAI request bodies: every class of bad input is a 400 naming the field; good bodies become
// the engine requests a client would expect, tokenized with the real Llama 2 tokenizer.

#include "runtime/api/openai.hpp"

#include "runtime/engine/tokenizer.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>

namespace thaw::api {
namespace {

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

// The Llama 2 chat template is recognised by its "[INST]" marker and rendered by thaw's own code
// (chat_template.cpp), so this short source selects the same rendering as Meta's full template.
const chat_template& llama2_chat() {
  static const chat_template t =
      chat_template::from_source("{{ bos_token + '[INST] ' + content + ' [/INST]' }}").value();
  return t;
}

completion_request parse_ok(endpoint kind, std::string_view body) {
  auto r = parse_request(kind, body);
  if (auto* e = std::get_if<api_error>(&r)) {
    ADD_FAILURE() << body << " -> " << e->message;
    return {};
  }
  return std::get<completion_request>(std::move(r));
}

engine_requests to_engine_ok(const completion_request& req, std::int32_t ctx = 4096) {
  auto r = to_engine_requests(req, llama2(), &llama2_chat(), ctx);
  if (auto* e = std::get_if<api_error>(&r)) {
    ADD_FAILURE() << e->message;
    return {};
  }
  return std::get<engine_requests>(std::move(r));
}

api_error engine_error(const completion_request& req, std::int32_t ctx = 4096,
                       const chat_template* tmpl = &llama2_chat()) {
  auto r = to_engine_requests(req, llama2(), tmpl, ctx);
  EXPECT_TRUE(std::holds_alternative<api_error>(r));
  return std::holds_alternative<api_error>(r) ? std::get<api_error>(r) : api_error{};
}

struct bad_case {
  endpoint kind;
  std::string body;
  std::string param;
  std::string message; ///< a part of the message
};

constexpr auto cmpl = endpoint::completions;
constexpr auto chat = endpoint::chat_completions;

TEST(OpenAIRequest, EveryBadInputIs400NamingTheField) {
  const std::string m = R"("model":"llama",)";
  const std::string p = m + R"("prompt":"hi",)";
  const std::string c = m + R"("messages":[{"role":"user","content":"hi"}],)";
  const std::vector<bad_case> cases{
      {cmpl, "{", "", "not valid JSON"},
      {cmpl, "[1]", "", "JSON object"},
      {cmpl, R"({"prompt":"hi"})", "model", "'model' is required"},
      {cmpl, R"({"model":5,"prompt":"hi"})", "model", "'model' must be a string"},
      {cmpl, "{" + m + R"("n":1})", "prompt", "'prompt' is required"},
      {cmpl, "{" + m + R"("prompt":5})", "prompt", "must be a string, an array"},
      {cmpl, "{" + m + R"("prompt":[]})", "prompt", "'prompt' is empty"},
      {cmpl, "{" + m + R"("prompt":[[]]})", "prompt", "'prompt[0]' is empty"},
      {cmpl, "{" + m + R"("prompt":[1,"a"]})", "prompt", "'prompt[1]' must be a token id"},
      {cmpl, "{" + m + R"("prompt":["a",1]})", "prompt", "must be a string, an array"},
      {cmpl, "{" + m + R"("prompt":[1.5]})", "prompt", "'prompt[0]' must be a token id"},
      {cmpl, "{" + p + R"("temperature":"hot"})", "temperature", "'temperature' must be a number"},
      {cmpl, "{" + p + R"("temperature":true})", "temperature", "'temperature' must be a number"},
      {cmpl, "{" + p + R"("temperature":2.5})", "temperature", "between 0 and 2, got 2.5"},
      {cmpl, "{" + p + R"("temperature":-0.1})", "temperature", "between 0 and 2"},
      {cmpl, "{" + p + R"("top_p":0})", "top_p", "'top_p' must be in (0, 1]"},
      {cmpl, "{" + p + R"("top_p":1.5})", "top_p", "'top_p'"},
      {cmpl, "{" + p + R"("top_k":-2})", "top_k", "'top_k'"},
      {cmpl, "{" + p + R"("top_k":1.5})", "top_k", "'top_k' must be an integer"},
      {cmpl, "{" + p + R"("min_p":2})", "min_p", "'min_p'"},
      {cmpl, "{" + p + R"("seed":"x"})", "seed", "'seed' must be an integer"},
      {cmpl, "{" + p + R"("stop":5})", "stop", "'stop' must be a string or an array"},
      {cmpl, "{" + p + R"("stop":[1]})", "stop", "'stop' must be a string or an array"},
      {cmpl, "{" + p + R"("stop":["a",""]})", "stop", "must not be empty"},
      {cmpl, "{" + p + R"("stop":""})", "stop", "must not be empty"},
      {cmpl, "{" + p + R"("stop":["a","b","c","d","e"]})", "stop", "at most 4"},
      {cmpl, "{" + p + R"("n":0})", "n", "'n' must be between 1 and 16"},
      {cmpl, "{" + p + R"("n":17})", "n", "'n' must be between 1 and 16"},
      {cmpl, "{" + p + R"("n":"2"})", "n", "'n' must be an integer"},
      {cmpl, "{" + p + R"("max_tokens":0})", "max_tokens", "'max_tokens' must be at least 1"},
      {cmpl, "{" + p + R"("max_tokens":"16"})", "max_tokens", "'max_tokens' must be an integer"},
      {cmpl, "{" + p + R"("stream":"yes"})", "stream", "'stream' must be a boolean"},
      {cmpl, "{" + p + R"("stream_options":{"include_usage":true}})", "stream_options",
       "only be given when 'stream' is true"},
      {cmpl, "{" + p + R"("stream":true,"stream_options":5})", "stream_options", "an object"},
      {cmpl, "{" + p + R"("stream":true,"stream_options":{"include_usage":1}})",
       "stream_options.include_usage", "must be a boolean"},
      {cmpl, "{" + p + R"("logprobs":21})", "logprobs", "'logprobs' must be between 0 and 20"},
      {cmpl, "{" + p + R"("logprobs":-1})", "logprobs", "between 0 and 20"},
      {cmpl, "{" + p + R"("logprobs":true})", "logprobs", "'logprobs' must be an integer"},
      {cmpl, "{" + p + R"("echo":"x"})", "echo", "'echo' must be a boolean"},
      {cmpl, "{" + p + R"("echo":true,"logprobs":1})", "echo", "not supported"},
      {cmpl, "{" + p + R"("ignore_eos":1})", "ignore_eos", "must be a boolean"},
      {cmpl, "{" + p + R"("presence_penalty":0.5})", "presence_penalty", "not supported"},
      {cmpl, "{" + p + R"("frequency_penalty":-1})", "frequency_penalty", "not supported"},
      {cmpl, "{" + p + R"("best_of":2})", "best_of", "'best_of' is not supported"},
      {cmpl, "{" + p + R"("logit_bias":{"1":5}})", "logit_bias", "not supported"},
      {chat, "{" + m + R"("n":1})", "messages", "'messages' is required"},
      {chat, "{" + m + R"("messages":"hi"})", "messages", "must be an array"},
      {chat, "{" + m + R"("messages":[]})", "messages", "'messages' is empty"},
      {chat, "{" + m + R"("messages":["hi"]})", "messages[0]", "must be an object"},
      {chat, "{" + m + R"("messages":[{"content":"hi"}]})", "messages[0].role", "must be a string"},
      {chat, "{" + m + R"("messages":[{"role":"robot","content":"hi"}]})", "messages[0].role",
       "one of system, user, assistant, tool"},
      {chat, "{" + m + R"("messages":[{"role":"user","content":5}]})", "messages[0].content",
       "a string or an array of text parts"},
      {chat, "{" + m + R"("messages":[{"role":"user"}]})", "messages[0].content", "a string"},
      {chat, "{" + m + R"("messages":[{"role":"user","content":[{"type":"image_url"}]}]})",
       "messages[0].content[0].type", "must be 'text'"},
      {chat, "{" + m + R"("messages":[{"role":"user","content":[{"type":"text","text":5}]}]})",
       "messages[0].content[0].text", "must be a string"},
      {chat, "{" + c + R"("top_logprobs":2})", "top_logprobs", "needs 'logprobs' set to true"},
      {chat, "{" + c + R"("logprobs":true,"top_logprobs":21})", "top_logprobs", "between 0 and 20"},
      {chat, "{" + c + R"("logprobs":1})", "logprobs", "'logprobs' must be a boolean"},
      {chat, "{" + c + R"("max_completion_tokens":0})", "max_completion_tokens", "at least 1"},
      {chat, "{" + c + R"("temperature":"0"})", "temperature", "'temperature' must be a number"},
      {chat, "{" + c + R"("stream_options":{}})", "stream_options", "'stream' is true"},
  };
  for (const auto& bc : cases) {
    auto r = parse_request(bc.kind, bc.body);
    ASSERT_TRUE(std::holds_alternative<api_error>(r)) << bc.body;
    const auto& e = std::get<api_error>(r);
    EXPECT_EQ(e.status, 400) << bc.body;
    EXPECT_EQ(e.type, "invalid_request_error") << bc.body;
    EXPECT_EQ(e.param, bc.param) << bc.body;
    EXPECT_NE(e.message.find(bc.message), std::string::npos) << bc.body << " -> " << e.message;
  }
}

TEST(OpenAIRequest, HostileBodiesAreErrorsNotCrashes) {
  // Deep nesting, invalid UTF-8 inside a string, a huge number: each a 400.
  const std::string deep = R"({"model":"m","prompt":)" + std::string(100000, '[') +
                           std::string(100000, ']') + "}";
  const std::vector<std::pair<std::string, std::string>> bodies{
      {deep, "prompt"},
      {"{\"model\":\"m\",\"prompt\":\"\xff\xfe\"}", ""},
      {R"({"model":"m","prompt":"x","max_tokens":1e999})", ""}, // not JSON: out of range
      {R"({"model":"m","prompt":"x","seed":18446744073709551615})", "seed"},
      {R"({"model":"m","prompt":[4294967296]})", "prompt"},
  };
  for (const auto& [body, param] : bodies) {
    auto r = parse_request(cmpl, body);
    ASSERT_TRUE(std::holds_alternative<api_error>(r)) << body.substr(0, 80);
    EXPECT_EQ(std::get<api_error>(r).status, 400);
    EXPECT_EQ(std::get<api_error>(r).param, param) << std::get<api_error>(r).message;
  }
}

TEST(OpenAIRequest, DefaultsNullsAndUnknownFields) {
  const auto r = parse_ok(cmpl, R"({"model":"llama","prompt":"Hello","max_tokens":null,
      "logprobs":null,"best_of":null,"stop":null,"seed":null,"user":"u1","foo":{"bar":1},
      "presence_penalty":0,"frequency_penalty":0,"best_of":1})");
  EXPECT_EQ(r.model, "llama");
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0].text, "Hello");
  EXPECT_FALSE(r.prompts[0].is_tokens);
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_EQ(r.sampling.top_p, 1.0f);
  EXPECT_EQ(r.sampling.top_k, 0);
  EXPECT_EQ(r.sampling.logprobs, -1);
  EXPECT_FALSE(r.seeded);
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  EXPECT_TRUE(r.stop.empty());
}

TEST(OpenAIRequest, EveryFieldIsRead) {
  const auto r = parse_ok(cmpl, R"({"model":"m","prompt":["a","b"],"max_tokens":7,
      "temperature":0.5,"top_p":0.9,"top_k":40,"min_p":0.05,"seed":-3,"stop":"END","n":2,
      "best_of":2,"stream":true,"stream_options":{"include_usage":true},"logprobs":3,
      "echo":false,"ignore_eos":true,"repetition_penalty":1})");
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[1].text, "b");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.05f);
  EXPECT_TRUE(r.seeded);
  EXPECT_EQ(r.sampling.seed, static_cast<std::uint64_t>(-3));
  EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(r.n, 2);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.sampling.logprobs, 3);
  EXPECT_TRUE(r.ignore_eos);

  const auto tokens = parse_ok(cmpl, R"({"model":"m","prompt":[[1,2],[3]]})");
  ASSERT_EQ(tokens.prompts.size(), 2u);
  EXPECT_TRUE(tokens.prompts[0].is_tokens);
  EXPECT_EQ(tokens.prompts[0].tokens, (std::vector<std::int32_t>{1, 2}));
  EXPECT_EQ(tokens.prompts[1].tokens, (std::vector<std::int32_t>{3}));
}

TEST(OpenAIRequest, ChatFieldsAndLogprobsMapping) {
  const auto r = parse_ok(chat, R"({"model":"m","messages":[{"role":"system","content":"Be brief."},
      {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"there"}]}],
      "max_completion_tokens":9,"max_tokens":100,"logprobs":true,"top_logprobs":5})");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "Hi\nthere"); // text parts joined with newlines, as vLLM
  EXPECT_EQ(r.max_tokens, 9);                     // max_completion_tokens wins
  EXPECT_EQ(r.sampling.logprobs, 5);
  EXPECT_EQ(parse_ok(chat, R"({"model":"m","messages":[{"role":"user","content":"x"}],
      "logprobs":true})").sampling.logprobs, 0);
  EXPECT_EQ(parse_ok(chat, R"({"model":"m","messages":[{"role":"user","content":"x"}],
      "logprobs":false,"max_tokens":3})").sampling.logprobs, -1);
  EXPECT_EQ(parse_ok(cmpl, R"({"model":"m","prompt":"x","logprobs":0})").sampling.logprobs, 0);
}

TEST(OpenAIRequest, TextPromptsEncodeWithBosAndChoicesGetTheirSeeds) {
  const auto r = parse_ok(cmpl, R"({"model":"m","prompt":["Hello world","The cat sat"],"n":2,
      "seed":42,"stop":["\n"],"ignore_eos":true,"temperature":0.7})");
  const auto e = to_engine_ok(r);
  ASSERT_EQ(e.requests.size(), 4u); // prompt i, choice j -> i * n + j
  const auto a = llama2().encode("Hello world", true).value();
  const auto b = llama2().encode("The cat sat", true).value();
  EXPECT_EQ(a.front(), llama2().bos_id());
  EXPECT_EQ(e.prompt_tokens, (std::vector<std::int32_t>{static_cast<std::int32_t>(a.size()),
                                                        static_cast<std::int32_t>(b.size())}));
  const std::vector<std::vector<std::int32_t>> prompts{a, a, b, b};
  const std::vector<std::uint64_t> seeds{42, 43, 42, 43};
  for (std::size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(e.requests[k].prompt, prompts[k]);
    EXPECT_EQ(e.requests[k].sampling.seed, seeds[k]);
    EXPECT_FLOAT_EQ(e.requests[k].sampling.temperature, 0.7f);
    EXPECT_EQ(e.requests[k].max_tokens, 16); // the completions default
    EXPECT_EQ(e.requests[k].stop, std::vector<std::string>{"\n"});
    EXPECT_TRUE(e.requests[k].ignore_eos);
  }
}

TEST(OpenAIRequest, UnseededChoicesGetDifferentSeeds) {
  const auto e = to_engine_ok(parse_ok(cmpl, R"({"model":"m","prompt":"Hi","n":8})"));
  std::set<std::uint64_t> seeds;
  for (const auto& g : e.requests)
    seeds.insert(g.sampling.seed);
  EXPECT_EQ(seeds.size(), 8u);
}

TEST(OpenAIRequest, TokenPromptsPassThroughAndAreCheckedAgainstTheVocabulary) {
  const auto e =
      to_engine_ok(parse_ok(cmpl, R"({"model":"m","prompt":[1,15043,3186],"max_tokens":4})"));
  ASSERT_EQ(e.requests.size(), 1u);
  EXPECT_EQ(e.requests[0].prompt, (std::vector<std::int32_t>{1, 15043, 3186}));
  EXPECT_EQ(e.requests[0].max_tokens, 4);

  const auto vocab = std::to_string(llama2().vocab_size());
  auto err = engine_error(parse_ok(cmpl, R"({"model":"m","prompt":[[1,2],[1,5,)" + vocab + "]]}"));
  EXPECT_EQ(err.status, 400);
  EXPECT_EQ(err.param, "prompt");
  EXPECT_NE(err.message.find("prompt[1][2] = " + vocab), std::string::npos) << err.message;
  err = engine_error(parse_ok(cmpl, R"({"model":"m","prompt":[-1]})"));
  EXPECT_NE(err.message.find("prompt[0] = -1"), std::string::npos) << err.message;
}

TEST(OpenAIRequest, ChatUsesTheTemplateWithoutASecondBos) {
  const auto r = parse_ok(chat, R"({"model":"llama","messages":[
      {"role":"system","content":"Be brief."},
      {"role":"user","content":"Why is the sky blue?"}],"n":2})");
  const auto e = to_engine_ok(r, 2048);
  const auto text = llama2_chat().apply(r.messages).value();
  EXPECT_EQ(text, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhy is the sky blue? [/INST]");
  const auto ids = llama2().encode(text, false).value();
  ASSERT_EQ(e.requests.size(), 2u);
  EXPECT_EQ(e.requests[0].prompt, ids);
  EXPECT_EQ(e.requests[0].prompt[0], llama2().bos_id());
  EXPECT_NE(e.requests[0].prompt[1], llama2().bos_id());
  // No max_tokens: all the context that is left.
  EXPECT_EQ(e.requests[0].max_tokens, 2048 - static_cast<std::int32_t>(ids.size()));

  auto err = engine_error(r, 2048, nullptr);
  EXPECT_EQ(err.message, "model llama has no chat template");
  err = engine_error(parse_ok(chat, R"({"model":"m","messages":[{"role":"user","content":"a"},
      {"role":"user","content":"b"}]})"));
  EXPECT_EQ(err.param, "messages");
  EXPECT_NE(err.message.find("alternate"), std::string::npos) << err.message;
}

TEST(OpenAIRequest, ContextLimitIsEnforcedWithVllmsMessage) {
  const auto r =
      parse_ok(cmpl, R"({"model":"m","prompt":"one two three four five","max_tokens":10})");
  const auto len =
      static_cast<std::int32_t>(llama2().encode("one two three four five").value().size());
  // prompt + max_tokens past the context: rejected, not truncated.
  auto err = engine_error(r, len + 9);
  EXPECT_EQ(err.status, 400);
  EXPECT_EQ(err.message, "This model's maximum context length is " + std::to_string(len + 9) +
                             " tokens. However, you requested " + std::to_string(len + 10) +
                             " tokens (" + std::to_string(len) +
                             " in the messages, 10 in the completion). Please reduce the length "
                             "of the messages or completion.");
  EXPECT_EQ(to_engine_ok(r, len + 10).requests[0].max_tokens, 10);
  // A prompt that fills the context leaves no room at all.
  err = engine_error(parse_ok(cmpl, R"({"model":"m","prompt":"one two three four five"})"), len);
  EXPECT_EQ(err.param, "prompt");
  EXPECT_NE(err.message.find("(" + std::to_string(len) + " in the messages, 1 in the completion)"),
            std::string::npos)
      << err.message;
  // The completions default of 16 shrinks to the room left.
  const auto e = to_engine_ok(parse_ok(cmpl, R"({"model":"m","prompt":"one two three four five"})"),
                              len + 5);
  EXPECT_EQ(e.requests[0].max_tokens, 5);
  err = engine_error(
      parse_ok(chat, R"({"model":"m","messages":[{"role":"user","content":"hi"}]})"), 4);
  EXPECT_EQ(err.param, "messages");
}

} // namespace
} // namespace thaw::api
