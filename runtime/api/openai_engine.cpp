// A parsed request to engine requests: the chat template, the tokenizer, the context limit and
// per-choice seeds.

#include "runtime/api/openai.hpp"

#include "runtime/engine/tokenizer.hpp"

#include <algorithm>
#include <random>

namespace thaw::api {

namespace {

using ids = std::vector<std::int32_t>;

result<ids> chat_prompt(const completion_request& req, const tokenizer& tok,
                        const chat_template* tmpl) {
  if (tmpl == nullptr)
    return bad_request("model " + req.model + " has no chat template", "model");
  auto text = tmpl->apply(req.messages);
  if (!text)
    return bad_request(text.err().message, "messages");
  // The template writes BOS itself; encoding with add_special would give two.
  auto tokens = tok.encode(*text, /*add_special=*/false);
  if (!tokens)
    return bad_request(tokens.err().message, "messages");
  return std::move(*tokens);
}

result<ids> completion_prompt(const completion_request& req, std::size_t i, const tokenizer& tok) {
  const auto& p = req.prompts[i];
  if (!p.is_tokens) {
    auto tokens = tok.encode(p.text, /*add_special=*/true);
    if (!tokens)
      return bad_request(tokens.err().message, "prompt");
    return std::move(*tokens);
  }
  const auto where = req.prompts.size() > 1 ? "prompt[" + std::to_string(i) + "]" : "prompt";
  for (std::size_t k = 0; k < p.tokens.size(); ++k) {
    const auto id = p.tokens[k];
    if (id < 0 || id >= tok.vocab_size())
      return bad_request(where + "[" + std::to_string(k) + "] = " + std::to_string(id) +
                             " is not a token id of the model (0.." +
                             std::to_string(tok.vocab_size() - 1) + ")",
                         "prompt");
  }
  return p.tokens;
}

// The tokens to generate for a prompt of `len` tokens, or vLLM's context-length error. An
// explicit max_tokens must fit (vLLM rejects rather than truncates); the completions default of
// 16 shrinks to the room left, and chat's default is all of it.
result<std::int32_t> max_tokens_for(const completion_request& req, std::int64_t len,
                                    std::int32_t max_context) {
  const bool chat = req.kind == endpoint::chat_completions;
  const std::int64_t room = static_cast<std::int64_t>(max_context) - len;
  const std::int64_t max_tokens = req.max_tokens ? *req.max_tokens
                                  : chat         ? room
                                                 : std::min<std::int64_t>(16, room);
  if (room >= 1 && len + max_tokens <= max_context)
    return static_cast<std::int32_t>(max_tokens);
  const auto asked = std::max<std::int64_t>(max_tokens, 1);
  return bad_request("This model's maximum context length is " + std::to_string(max_context) +
                         " tokens. However, you requested " + std::to_string(len + asked) +
                         " tokens (" + std::to_string(len) + " in the messages, " +
                         std::to_string(asked) +
                         " in the completion). Please reduce the length of the messages or "
                         "completion.",
                     room < 1 ? (chat ? "messages" : "prompt") : "max_tokens");
}

} // namespace

result<engine_requests> to_engine_requests(const completion_request& req, const tokenizer& tok,
                                           const chat_template* tmpl, std::int32_t max_context) {
  const bool chat = req.kind == endpoint::chat_completions;
  const std::size_t prompts = chat ? 1 : req.prompts.size();
  engine_requests out;
  // Seeded once per thread: opening the entropy device per request cost ~2% of a short request.
  thread_local std::mt19937 entropy{std::random_device{}()};
  for (std::size_t i = 0; i < prompts; ++i) {
    auto prompt = chat ? chat_prompt(req, tok, tmpl) : completion_prompt(req, i, tok);
    if (auto* e = std::get_if<api_error>(&prompt))
      return std::move(*e);
    auto& tokens = std::get<ids>(prompt);
    if (tokens.empty())
      return bad_request("the prompt is empty", chat ? "messages" : "prompt");
    const auto len = static_cast<std::int64_t>(tokens.size());
    const auto max_tokens = max_tokens_for(req, len, max_context);
    if (auto* e = std::get_if<api_error>(&max_tokens))
      return std::move(*e);
    out.prompt_tokens.push_back(static_cast<std::int32_t>(tokens.size()));
    for (std::int32_t j = 0; j < req.n; ++j) {
      generation_request g;
      g.prompt = tokens;
      g.sampling = req.sampling;
      // Choices of one prompt must differ: seed + j when seeded, else a random seed each.
      g.sampling.seed = req.seeded ? req.sampling.seed + static_cast<std::uint64_t>(j)
                                   : (static_cast<std::uint64_t>(entropy()) << 32) ^ entropy();
      g.max_tokens = std::get<std::int32_t>(max_tokens);
      g.stop = req.stop;
      g.ignore_eos = req.ignore_eos;
      out.requests.push_back(std::move(g));
    }
  }
  return out;
}

} // namespace thaw::api
