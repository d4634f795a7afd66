// Parsing and validating OpenAI request bodies: vLLM's accepted fields, types and ranges.

#include "runtime/api/openai.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>

namespace thaw::api {

namespace {

using json = nlohmann::json;
using opt_error = std::optional<api_error>;

// Returns the api_error of a check from the enclosing function, if there is one.
#define THAW_API_TRY(expr)                                                                         \
  do {                                                                                             \
    if (auto thaw_api_error_ = (expr))                                                             \
      return std::move(*thaw_api_error_);                                                          \
  } while (false)

// A field's value, or null when it is absent or JSON null (OpenAI treats both as "not given").
const json* field(const json& body, std::string_view name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

opt_error read_number(const json& body, const char* name, std::optional<double>& out) {
  const auto* v = field(body, name);
  if (v == nullptr)
    return {};
  // Booleans are not numbers here, though some JSON libraries would convert them.
  if (!v->is_number())
    return bad_request(std::string("'") + name + "' must be a number", name);
  const auto d = v->get<double>();
  if (!std::isfinite(d))
    return bad_request(std::string("'") + name + "' must be a finite number", name);
  out = d;
  return {};
}

// Integers; a float with an integral value (2.0) is accepted, as pydantic does for vLLM.
opt_error read_int(const json& body, const char* name, std::optional<std::int64_t>& out) {
  const auto* v = field(body, name);
  if (v == nullptr)
    return {};
  const auto wrong = bad_request(std::string("'") + name + "' must be an integer", name);
  if (v->is_number_unsigned()) {
    const auto u = v->get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return bad_request(std::string("'") + name + "' is out of range", name);
    out = static_cast<std::int64_t>(u);
  } else if (v->is_number_integer()) {
    out = v->get<std::int64_t>();
  } else if (v->is_number_float()) {
    const auto d = v->get<double>();
    if (!std::isfinite(d) || std::trunc(d) != d || std::fabs(d) > 9.0e18)
      return wrong;
    out = static_cast<std::int64_t>(d);
  } else {
    return wrong;
  }
  return {};
}

opt_error read_bool(const json& body, const char* name, bool& out) {
  const auto* v = field(body, name);
  if (v == nullptr)
    return {};
  if (!v->is_boolean())
    return bad_request(std::string("'") + name + "' must be a boolean", name);
  out = v->get<bool>();
  return {};
}

// "'temperature' must be between 0 and 2, got 3.5"
opt_error out_of_range(const char* name, const std::string& range, const json& body) {
  return bad_request(std::string("'") + name + "' must be " + range + ", got " +
                         body.at(name).dump(),
                     name);
}

opt_error read_prompt(const json& body, completion_request& req) {
  const auto* p = field(body, "prompt");
  if (p == nullptr)
    return bad_request("'prompt' is required", "prompt");
  const auto shape =
      bad_request("'prompt' must be a string, an array of strings, an array of token ids or an "
                  "array of arrays of token ids",
                  "prompt");
  auto token_list = [&](const json& arr, std::string where) -> opt_error {
    prompt_input in;
    in.is_tokens = true;
    if (arr.empty())
      return bad_request("'" + where + "' is empty", "prompt");
    for (std::size_t k = 0; k < arr.size(); ++k) {
      const auto& t = arr[k];
      if (!t.is_number_integer() ||
          t.get<std::int64_t>() > std::numeric_limits<std::int32_t>::max() ||
          t.get<std::int64_t>() < std::numeric_limits<std::int32_t>::min())
        return bad_request("'" + where + "[" + std::to_string(k) +
                               "]' must be a token id (an integer)",
                           "prompt");
      in.tokens.push_back(t.get<std::int32_t>());
    }
    req.prompts.push_back(std::move(in));
    return {};
  };
  if (p->is_string()) {
    req.prompts.push_back(prompt_input{p->get<std::string>(), {}, false});
    return {};
  }
  if (!p->is_array())
    return shape;
  if (p->empty())
    return bad_request("'prompt' is empty", "prompt");
  const auto& first = p->front();
  if (first.is_number())
    return token_list(*p, "prompt");
  for (std::size_t i = 0; i < p->size(); ++i) {
    const auto& item = (*p)[i];
    const auto where = "prompt[" + std::to_string(i) + "]";
    if (first.is_string() && item.is_string())
      req.prompts.push_back(prompt_input{item.get<std::string>(), {}, false});
    else if (first.is_array() && item.is_array())
      THAW_API_TRY(token_list(item, where));
    else
      return shape;
  }
  return {};
}

opt_error read_messages(const json& body, completion_request& req) {
  const auto* m = field(body, "messages");
  if (m == nullptr)
    return bad_request("'messages' is required", "messages");
  if (!m->is_array())
    return bad_request("'messages' must be an array of messages", "messages");
  if (m->empty())
    return bad_request("'messages' is empty", "messages");
  for (std::size_t i = 0; i < m->size(); ++i) {
    const auto& msg = (*m)[i];
    const auto where = "messages[" + std::to_string(i) + "]";
    if (!msg.is_object())
      return bad_request("'" + where + "' must be an object with 'role' and 'content'", where);
    const auto* role = field(msg, "role");
    if (role == nullptr || !role->is_string())
      return bad_request("'" + where + ".role' must be a string", where + ".role");
    chat_message out;
    out.role = role->get<std::string>();
    if (out.role != "system" && out.role != "user" && out.role != "assistant" && out.role != "tool")
      return bad_request("'" + where +
                             ".role' must be one of system, user, assistant, tool; got '" +
                             out.role + "'",
                         where + ".role");
    const auto* content = field(msg, "content");
    if (content != nullptr && content->is_string()) {
      out.content = content->get<std::string>();
    } else if (content != nullptr && content->is_array()) {
      // Text parts are joined with newlines, as vLLM does.
      for (std::size_t k = 0; k < content->size(); ++k) {
        const auto& part = (*content)[k];
        const auto pw = where + ".content[" + std::to_string(k) + "]";
        const auto* type = part.is_object() ? field(part, "type") : nullptr;
        if (type == nullptr || !type->is_string() || *type != "text")
          return bad_request("'" + pw + ".type' must be 'text' (thaw serves text-only models)",
                             pw + ".type");
        const auto* text = field(part, "text");
        if (text == nullptr || !text->is_string())
          return bad_request("'" + pw + ".text' must be a string", pw + ".text");
        if (k > 0)
          out.content += '\n';
        out.content += text->get<std::string>();
      }
    } else {
      return bad_request("'" + where + ".content' must be a string or an array of text parts",
                         where + ".content");
    }
    req.messages.push_back(std::move(out));
  }
  return {};
}

opt_error read_stop(const json& body, completion_request& req) {
  const auto* s = field(body, "stop");
  if (s == nullptr)
    return {};
  const auto shape = bad_request("'stop' must be a string or an array of strings", "stop");
  if (s->is_string()) {
    req.stop.push_back(s->get<std::string>());
  } else if (s->is_array()) {
    for (const auto& item : *s) {
      if (!item.is_string())
        return shape;
      req.stop.push_back(item.get<std::string>());
    }
  } else {
    return shape;
  }
  if (req.stop.size() > 4)
    return bad_request("'stop' has " + std::to_string(req.stop.size()) +
                           " strings; at most 4 are allowed",
                       "stop");
  for (const auto& st : req.stop)
    if (st.empty())
      return bad_request("'stop' strings must not be empty", "stop");
  return {};
}

// Sampling fields shared by both endpoints.
opt_error read_sampling(const json& body, completion_request& req) {
  auto& sp = req.sampling;
  std::optional<double> d;
  THAW_API_TRY(read_number(body, "temperature", d));
  if (d) {
    if (*d < 0 || *d > 2)
      return out_of_range("temperature", "between 0 and 2", body);
    sp.temperature = static_cast<float>(*d);
  }
  d.reset();
  THAW_API_TRY(read_number(body, "top_p", d));
  if (d) {
    if (*d <= 0 || *d > 1)
      return out_of_range("top_p", "in (0, 1]", body);
    sp.top_p = static_cast<float>(*d);
  }
  d.reset();
  THAW_API_TRY(read_number(body, "min_p", d));
  if (d) {
    if (*d < 0 || *d > 1)
      return out_of_range("min_p", "between 0 and 1", body);
    sp.min_p = static_cast<float>(*d);
  }
  std::optional<std::int64_t> i;
  THAW_API_TRY(read_int(body, "top_k", i));
  if (i) {
    if (*i < -1 || *i > std::numeric_limits<std::int32_t>::max())
      return out_of_range("top_k", "-1 or 0 (off), or a positive integer", body);
    sp.top_k = static_cast<std::int32_t>(*i);
  }
  i.reset();
  THAW_API_TRY(read_int(body, "seed", i));
  if (i) {
    sp.seed = static_cast<std::uint64_t>(*i); // negative seeds wrap: still one stream per value
    req.seeded = true;
  }
  // Penalties thaw's sampler does not apply: the neutral value is accepted, anything else is
  // refused rather than silently ignored.
  for (const auto* name : {"presence_penalty", "frequency_penalty"}) {
    d.reset();
    THAW_API_TRY(read_number(body, name, d));
    if (d && *d != 0)
      return bad_request(std::string("'") + name + "' is not supported (only 0)", name);
  }
  d.reset();
  THAW_API_TRY(read_number(body, "repetition_penalty", d));
  if (d && *d != 1)
    return bad_request("'repetition_penalty' is not supported (only 1)", "repetition_penalty");
  if (const auto* bias = field(body, "logit_bias"); bias != nullptr) {
    if (!bias->is_object())
      return bad_request("'logit_bias' must be an object", "logit_bias");
    if (!bias->empty())
      return bad_request("'logit_bias' is not supported", "logit_bias");
  }
  return {};
}

opt_error read_common(const json& body, completion_request& req) {
  const auto* model = field(body, "model");
  if (model == nullptr)
    return bad_request("'model' is required", "model");
  if (!model->is_string())
    return bad_request("'model' must be a string", "model");
  req.model = model->get<std::string>();

  THAW_API_TRY(read_sampling(body, req));
  THAW_API_TRY(read_stop(body, req));

  std::optional<std::int64_t> i;
  THAW_API_TRY(read_int(body, "n", i));
  if (i) {
    if (*i < 1 || *i > 16)
      return out_of_range("n", "between 1 and 16", body);
    req.n = static_cast<std::int32_t>(*i);
  }
  i.reset();
  THAW_API_TRY(read_int(body, "best_of", i));
  if (i && *i != req.n)
    return bad_request("'best_of' is not supported unless it equals 'n'", "best_of");

  // Chat prefers the newer max_completion_tokens, as vLLM does.
  std::optional<std::int64_t> max_tokens;
  const char* max_name = "max_tokens";
  if (req.kind == endpoint::chat_completions) {
    THAW_API_TRY(read_int(body, "max_completion_tokens", max_tokens));
    if (max_tokens)
      max_name = "max_completion_tokens";
  }
  if (!max_tokens)
    THAW_API_TRY(read_int(body, "max_tokens", max_tokens));
  if (max_tokens) {
    if (*max_tokens < 1 || *max_tokens > std::numeric_limits<std::int32_t>::max())
      return out_of_range(max_name, "at least 1", body);
    req.max_tokens = static_cast<std::int32_t>(*max_tokens);
  }

  THAW_API_TRY(read_bool(body, "stream", req.stream));
  if (const auto* so = field(body, "stream_options"); so != nullptr) {
    if (!req.stream)
      return bad_request("'stream_options' can only be given when 'stream' is true",
                         "stream_options");
    if (!so->is_object())
      return bad_request("'stream_options' must be an object", "stream_options");
    if (const auto* iu = field(*so, "include_usage"); iu != nullptr) {
      if (!iu->is_boolean())
        return bad_request("'stream_options.include_usage' must be a boolean",
                           "stream_options.include_usage");
      req.include_usage = iu->get<bool>();
    }
  }
  THAW_API_TRY(read_bool(body, "ignore_eos", req.ignore_eos));
  if (const auto* user = field(body, "user"); user != nullptr && !user->is_string())
    return bad_request("'user' must be a string", "user");
  return {};
}

opt_error read_completion_fields(const json& body, completion_request& req) {
  THAW_API_TRY(read_prompt(body, req));
  std::optional<std::int64_t> lp;
  THAW_API_TRY(read_int(body, "logprobs", lp));
  if (lp) {
    if (*lp < 0 || *lp > sampling_params::max_logprobs)
      return out_of_range("logprobs", "between 0 and 20", body);
    req.sampling.logprobs = static_cast<std::int32_t>(*lp);
  }
  THAW_API_TRY(read_bool(body, "echo", req.echo));
  // The engine reports no prompt logprobs, which echo with logprobs would need.
  if (req.echo && lp)
    return bad_request("'echo' together with 'logprobs' is not supported", "echo");
  return {};
}

opt_error read_chat_fields(const json& body, completion_request& req) {
  THAW_API_TRY(read_messages(body, req));
  bool logprobs = false;
  THAW_API_TRY(read_bool(body, "logprobs", logprobs));
  std::optional<std::int64_t> top;
  THAW_API_TRY(read_int(body, "top_logprobs", top));
  if (top) {
    if (*top < 0 || *top > sampling_params::max_logprobs)
      return out_of_range("top_logprobs", "between 0 and 20", body);
    if (!logprobs)
      return bad_request("'top_logprobs' needs 'logprobs' set to true", "top_logprobs");
  }
  if (logprobs)
    req.sampling.logprobs = static_cast<std::int32_t>(top.value_or(0));
  return {};
}

} // namespace

result<completion_request> parse_request(endpoint kind, std::string_view body) {
  // Without exceptions: a malformed body (or invalid UTF-8 in a string) is a discarded value.
  const auto doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded())
    return bad_request("the request body is not valid JSON");
  if (!doc.is_object())
    return bad_request("the request body must be a JSON object");
  completion_request req;
  req.kind = kind;
  THAW_API_TRY(read_common(doc, req));
  THAW_API_TRY(kind == endpoint::completions ? read_completion_fields(doc, req)
                                             : read_chat_fields(doc, req));
  if (auto st = req.sampling.validate(); !st)
    return bad_request(st.err().message);
  return req;
}

} // namespace thaw::api
