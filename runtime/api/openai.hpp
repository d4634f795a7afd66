#pragma once
/// The OpenAI-compatible API's wire format (ARCHITECTURE.md section 10), CAF-free: parsing and
/// validating `POST /v1/completions` and `POST /v1/chat/completions` bodies, turning them into
/// engine requests with a model's tokenizer, and writing responses, SSE chunks and errors in the
/// shapes OpenAI (and vLLM) clients expect. The gateway actor only moves these between HTTP and
/// messages (CONVENTIONS.md rule 3).

#include "runtime/engine/chat_template.hpp"
#include "runtime/engine/engine.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace thaw {
class tokenizer;
}

namespace thaw::api {

/// An error as the client sees it: HTTP status and the nested OpenAI form
/// `{"error":{"message","type","param","code"}}`.
struct api_error {
  int status = 400;
  std::string message;                        ///< names the field or model concerned
  std::string type = "invalid_request_error"; ///< OpenAI's types: invalid_request_error,
                                              ///< authentication_error, not_found_error,
                                              ///< rate_limit_error, server_error, ...
  std::string param;                          ///< the offending field, "" when none
  std::string code;                           ///< e.g. "model_not_found", "" when none
};
[[nodiscard]] std::string to_json(const api_error& e);
/// 400 invalid_request_error naming `param`.
[[nodiscard]] api_error bad_request(std::string message, std::string param = {});
/// The api_error for an engine or runtime error (invalid_argument -> 400, not_found -> 404,
/// resource_exhausted -> 429, cancelled -> 499, anything else -> 500 server_error).
[[nodiscard]] api_error from_error(const error& e);

/// Either a T or an api_error.
template <class T>
using result = std::variant<T, api_error>;

enum class endpoint : std::uint8_t { completions, chat_completions };

/// One prompt of /v1/completions: text, or token ids given directly.
struct prompt_input {
  std::string text;
  std::vector<std::int32_t> tokens;
  bool is_tokens = false;
};

/// A parsed, validated request body (before tokenization).
struct completion_request {
  endpoint kind = endpoint::completions;
  std::string model;
  std::vector<prompt_input> prompts;  ///< completions: one or more prompts
  std::vector<chat_message> messages; ///< chat: the conversation
  std::optional<std::int32_t> max_tokens; ///< absent: completions 16 (less if the context has
                                          ///< less room left), chat up to the context
  sampling_params sampling;           ///< temperature, top_p, top_k, min_p, seed, logprobs
  bool seeded = false;                ///< the client gave a seed
  std::vector<std::string> stop;      ///< at most 4 (OpenAI), no empty strings
  std::int32_t n = 1;                 ///< choices per prompt, 1..16
  bool stream = false;
  bool include_usage = false;         ///< stream_options.include_usage
  bool ignore_eos = false;            ///< vLLM extension
  bool echo = false;                  ///< completions: prefix each choice's text with its prompt
};

/// Parses and checks a body: malformed JSON, wrong types, out-of-range values, unsupported
/// options (a non-zero presence/frequency penalty, best_of != n, ...) are 400 errors naming the
/// field. Unknown fields are ignored, as vLLM does.
[[nodiscard]] result<completion_request> parse_request(endpoint kind, std::string_view body);

/// The engine requests for a parsed request: one per (prompt, choice), in choice-index order
/// (prompt i, sample j -> index i * n + j). Chat applies `tmpl` (null: 400, the model has no
/// chat template) and encodes without BOS (the template writes it); text prompts are encoded with
/// BOS; token prompts are checked against the vocabulary (400 naming the index). Each choice
/// j > 0 of a seeded request gets seed + j; unseeded choices each get a random seed, so choices
/// differ. max_tokens absent: completions min(16, room left), chat all the room left. A prompt
/// that leaves no room in `max_context`, or an explicit max_tokens past it, is 400 with vLLM's
/// "This model's maximum context length is M tokens. However, you requested N tokens (P in the
/// messages, C in the completion). ...".
struct engine_requests {
  std::vector<generation_request> requests;
  std::vector<std::int32_t> prompt_tokens; ///< per prompt
};
[[nodiscard]] result<engine_requests> to_engine_requests(const completion_request& req,
                                                         const tokenizer& tok,
                                                         const chat_template* tmpl,
                                                         std::int32_t max_context);

/// What one choice produced, accumulated from sequence events.
struct choice_output {
  std::int32_t index = 0;
  std::string text;
  std::vector<std::int32_t> tokens;
  std::vector<float> logprobs;                  ///< per token, when requested
  std::vector<std::vector<token_logprob>> top;  ///< per token, when requested
  finish_reason finish = finish_reason::none;
  std::string stop_reason;
};

struct usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;
};

/// Identity of a response: "cmpl-..." or "chatcmpl-...", the unix time, the model name.
struct response_meta {
  std::string id;
  std::int64_t created = 0;
  std::string model;
};
/// A fresh identity: a random id with the endpoint's prefix, created now.
[[nodiscard]] response_meta new_meta(endpoint kind, std::string model);

/// Characters (Unicode code points) of UTF-8 text: what OpenAI's text_offset counts.
[[nodiscard]] std::int64_t char_count(std::string_view utf8) noexcept;

/// The non-streaming response body ("text_completion" or "chat.completion").
[[nodiscard]] std::string response_json(const completion_request& req, const response_meta& meta,
                                        const std::vector<choice_output>& choices,
                                        const usage& u, const tokenizer& tok);

/// One streaming chunk for a choice: the new text (and its tokens' logprobs when requested),
/// and the finish reason on the last one. Chat chunks carry the role on a choice's first chunk.
/// Returns the SSE event "data: {...}\n\n".
struct chunk_delta {
  std::int32_t index = 0;
  bool first = false;
  std::string text;
  std::vector<std::int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<std::vector<token_logprob>> top;
  finish_reason finish = finish_reason::none;
  std::string stop_reason;
  /// Completions logprobs: characters (code points, as OpenAI counts) of this choice's text sent
  /// before this chunk, where the text_offset of the chunk's first token starts.
  std::int64_t text_offset = 0;
};
[[nodiscard]] std::string stream_event(const completion_request& req, const response_meta& meta,
                                       const chunk_delta& delta, const tokenizer& tok);
/// The final usage chunk (choices: []) when stream_options.include_usage.
[[nodiscard]] std::string usage_event(const completion_request& req, const response_meta& meta,
                                      const usage& u);
/// "data: [DONE]\n\n"
[[nodiscard]] std::string_view done_event() noexcept;
/// An error inside a stream: "data: {"error":{...}}\n\n".
[[nodiscard]] std::string error_event(const api_error& e);

/// GET /v1/models body for the given model names (owned_by "thaw").
[[nodiscard]] std::string models_json(const std::vector<std::string>& names, std::int64_t created);

} // namespace thaw::api
