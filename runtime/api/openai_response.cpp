// Writing OpenAI responses: errors, non-streaming bodies, SSE chunks, the usage chunk and the
// model list, in the shapes (and key order) OpenAI and vLLM use.

#include "runtime/api/openai.hpp"

#include "runtime/engine/tokenizer.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <random>

namespace thaw::api {

namespace {

// Ordered, so that bodies read like OpenAI's ("id" first, "usage" last).
using json = nlohmann::ordered_json;

std::string dump(const json& j) {
  // Text comes from the detokenizer (valid UTF-8) and vocabulary strings; replace rather than
  // throw should anything else slip through.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json error_object(const api_error& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"param", e.param.empty() ? json(nullptr) : json(e.param)},
            {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

json finish_json(finish_reason f) {
  return f == finish_reason::none ? json(nullptr) : json(std::string(to_string(f)));
}

json stop_reason_json(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

// JSON has no infinities; vLLM reports a -inf logprob as -9999.
double finite_logprob(float lp) { return std::isfinite(lp) ? lp : -9999.0; }

std::string token_string(const tokenizer& tok, std::int32_t id) {
  auto t = tok.token_text(id);
  return t ? std::move(*t) : std::string{};
}

json utf8_bytes(const std::string& s) {
  json out = json::array();
  for (const char c : s)
    out.push_back(static_cast<unsigned char>(c));
  return out;
}

// Where each token's text starts, in characters from `base`: the streaming detokenizer's output
// before the token, which is how the text the client receives is built.
std::vector<std::int64_t> text_offsets(const tokenizer& tok, const std::vector<std::int32_t>& ids,
                                       std::int64_t base) {
  std::vector<std::int64_t> out;
  detokenizer detok(tok);
  for (const auto id : ids) {
    out.push_back(base);
    auto piece = detok.push(id);
    if (piece)
      base += char_count(*piece);
  }
  return out;
}

struct token_view {
  const std::vector<std::int32_t>& tokens;
  const std::vector<float>& logprobs;
  const std::vector<std::vector<token_logprob>>& top;
};

// /v1/completions: {tokens, token_logprobs, top_logprobs: [{text: logprob}], text_offset}; each
// top dict also holds the sampled token, as vLLM's does.
json completion_logprobs(const tokenizer& tok, const token_view& v, std::int64_t base) {
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  const auto off = text_offsets(tok, v.tokens, base);
  for (std::size_t k = 0; k < v.tokens.size(); ++k) {
    const auto text = token_string(tok, v.tokens[k]);
    const double lp = k < v.logprobs.size() ? finite_logprob(v.logprobs[k]) : 0.0;
    tokens.push_back(text);
    lps.push_back(lp);
    json top = json::object();
    if (k < v.top.size())
      for (const auto& t : v.top[k])
        top[token_string(tok, t.id)] = finite_logprob(t.logprob);
    if (!top.contains(text))
      top[text] = lp;
    tops.push_back(std::move(top));
    offsets.push_back(off[k]);
  }
  return {{"tokens", tokens},
          {"token_logprobs", lps},
          {"top_logprobs", tops},
          {"text_offset", offsets}};
}

// /v1/chat/completions: {content: [{token, logprob, bytes, top_logprobs: [...]}]}.
json chat_logprobs(const tokenizer& tok, const token_view& v, std::int32_t top_n) {
  json content = json::array();
  for (std::size_t k = 0; k < v.tokens.size(); ++k) {
    const auto text = token_string(tok, v.tokens[k]);
    json top = json::array();
    if (k < v.top.size()) {
      for (std::size_t t = 0; t < v.top[k].size() && static_cast<std::int32_t>(t) < top_n; ++t) {
        const auto tt = token_string(tok, v.top[k][t].id);
        top.push_back({{"token", tt},
                       {"logprob", finite_logprob(v.top[k][t].logprob)},
                       {"bytes", utf8_bytes(tt)}});
      }
    }
    content.push_back({{"token", text},
                       {"logprob", k < v.logprobs.size() ? finite_logprob(v.logprobs[k]) : 0.0},
                       {"bytes", utf8_bytes(text)},
                       {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}};
}

json logprobs_json(const completion_request& req, const tokenizer& tok, const token_view& v,
                   std::int64_t base) {
  if (req.sampling.logprobs < 0)
    return nullptr;
  return req.kind == endpoint::chat_completions ? chat_logprobs(tok, v, req.sampling.logprobs)
                                                : completion_logprobs(tok, v, base);
}

// echo: the prompt of choice `index` (prompt index / n), as text.
std::string echo_text(const completion_request& req, std::int32_t index, const tokenizer& tok) {
  const auto p = static_cast<std::size_t>(index / std::max(req.n, 1));
  if (p >= req.prompts.size())
    return {};
  const auto& in = req.prompts[p];
  if (!in.is_tokens)
    return in.text;
  auto text = tok.decode(in.tokens);
  return text ? std::move(*text) : std::string{};
}

json usage_json(const usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

json head(const completion_request& req, const response_meta& meta, bool chunk) {
  const bool chat = req.kind == endpoint::chat_completions;
  return {{"id", meta.id},
          {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                          : "text_completion"},
          {"created", meta.created},
          {"model", meta.model}};
}

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

} // namespace

std::int64_t char_count(std::string_view utf8) noexcept {
  std::int64_t n = 0;
  for (const char c : utf8)
    n += (static_cast<unsigned char>(c) & 0xC0) != 0x80; // count all but continuation bytes
  return n;
}

std::string to_json(const api_error& e) { return dump(error_object(e)); }

api_error bad_request(std::string message, std::string param) {
  api_error e;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

api_error from_error(const error& e) {
  api_error out;
  out.message = e.message;
  switch (e.code) {
  case errc::invalid_argument: out.status = 400; break;
  case errc::not_found: out.status = 404; out.type = "not_found_error"; break;
  case errc::resource_exhausted: out.status = 429; out.type = "rate_limit_error"; break;
  // 499: nginx's "client closed request"; OpenAI has no type for it.
  case errc::cancelled: out.status = 499; out.type = "cancelled"; break;
  default: out.status = 500; out.type = "server_error"; out.message = e.to_string(); break;
  }
  return out;
}

response_meta new_meta(endpoint kind, std::string model) {
  // Seeded once per thread: opening the entropy device per request cost ~2% of a short request.
  thread_local std::mt19937 entropy{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  response_meta m;
  m.id = kind == endpoint::chat_completions ? "chatcmpl-" : "cmpl-";
  for (int i = 0; i < 4; ++i) {
    auto bits = entropy();
    for (int k = 0; k < 8; ++k, bits >>= 4)
      m.id += hex[bits & 0xF];
  }
  m.created = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  m.model = std::move(model);
  return m;
}

std::string response_json(const completion_request& req, const response_meta& meta,
                          const std::vector<choice_output>& choices, const usage& u,
                          const tokenizer& tok) {
  const bool chat = req.kind == endpoint::chat_completions;
  json body = head(req, meta, false);
  json list = json::array();
  for (const auto& c : choices) {
    const token_view v{c.tokens, c.logprobs, c.top};
    json choice = {{"index", c.index}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      choice["logprobs"] = logprobs_json(req, tok, v, 0);
    } else {
      const auto prefix = req.echo ? echo_text(req, c.index, tok) : std::string{};
      choice["text"] = prefix + c.text;
      choice["logprobs"] = logprobs_json(req, tok, v, char_count(prefix));
    }
    choice["finish_reason"] = finish_json(c.finish);
    choice["stop_reason"] = stop_reason_json(c.stop_reason);
    list.push_back(std::move(choice));
  }
  body["choices"] = std::move(list);
  body["usage"] = usage_json(u);
  return dump(body);
}

std::string stream_event(const completion_request& req, const response_meta& meta,
                         const chunk_delta& delta, const tokenizer& tok) {
  const bool chat = req.kind == endpoint::chat_completions;
  json body = head(req, meta, true);
  const token_view v{delta.tokens, delta.logprobs, delta.top};
  json choice = {{"index", delta.index}};
  if (chat) {
    // OpenAI: the role on a choice's first chunk, then content only; the last chunk of a
    // choice may carry nothing but its finish reason.
    json d = json::object();
    if (delta.first)
      d["role"] = "assistant";
    if (delta.first || !delta.text.empty())
      d["content"] = delta.text;
    choice["delta"] = std::move(d);
  } else {
    const auto prefix = req.echo && delta.first ? echo_text(req, delta.index, tok) : std::string{};
    choice["text"] = prefix + delta.text;
  }
  choice["logprobs"] = delta.tokens.empty()
                           ? json(nullptr)
                           : logprobs_json(req, tok, v, delta.text_offset);
  choice["finish_reason"] = finish_json(delta.finish);
  choice["stop_reason"] = stop_reason_json(delta.stop_reason);
  body["choices"] = json::array({std::move(choice)});
  if (req.include_usage)
    body["usage"] = nullptr;
  return sse(body);
}

std::string usage_event(const completion_request& req, const response_meta& meta,
                        const usage& u) {
  json body = head(req, meta, true);
  body["choices"] = json::array();
  body["usage"] = usage_json(u);
  return sse(body);
}

std::string_view done_event() noexcept { return "data: [DONE]\n\n"; }

std::string error_event(const api_error& e) { return sse(error_object(e)); }

std::string models_json(const std::vector<std::string>& names, std::int64_t created) {
  json data = json::array();
  for (const auto& n : names)
    data.push_back({{"id", n}, {"object", "model"}, {"created", created}, {"owned_by", "thaw"}});
  return dump({{"object", "list"}, {"data", std::move(data)}});
}

} // namespace thaw::api
