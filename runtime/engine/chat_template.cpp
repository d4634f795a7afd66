// Hand-written renderings of the ChatML (Qwen3), Llama 2 and Llama 3 Jinja chat templates.

#include "runtime/engine/chat_template.hpp"

#include "runtime/engine/tokenizer.hpp"

namespace thaw {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Python's str.strip() / Jinja's trim (ASCII whitespace is enough for these templates).
std::string_view strip(std::string_view s) {
  while (!s.empty() && is_space(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && is_space(s.back()))
    s.remove_suffix(1);
  return s;
}

std::string_view lstrip_char(std::string_view s, char c) {
  while (!s.empty() && s.front() == c)
    s.remove_prefix(1);
  return s;
}

std::string_view rstrip_char(std::string_view s, char c) {
  while (!s.empty() && s.back() == c)
    s.remove_suffix(1);
  return s;
}

std::string_view after_last(std::string_view s, std::string_view sep) {
  const auto p = s.rfind(sep);
  return p == std::string_view::npos ? s : s.substr(p + sep.size());
}

std::string_view before_first(std::string_view s, std::string_view sep) {
  const auto p = s.find(sep);
  return p == std::string_view::npos ? s : s.substr(0, p);
}

status check_roles(std::span<const chat_message> messages) {
  if (messages.empty())
    return make_error(errc::invalid_argument, "chat template: the conversation has no messages");
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const auto& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant" && r != "tool")
      return make_error(errc::invalid_argument, "chat template: message " + std::to_string(i) +
                                                    " has role '" + r +
                                                    "' (system, user, assistant or tool)");
  }
  return {};
}

// Qwen3's template: the first system message, then users/assistants/tools; assistant turns
// after the last user query keep (or gain an empty) <think> block.
std::string render_chatml(std::span<const chat_message> messages, const chat_options& o, bool thinking) {
  std::string out;
  const auto n = messages.size();
  if (messages[0].role == "system")
    out += "<|im_start|>system\n" + messages[0].content + "<|im_end|>\n";
  std::size_t last_query = n - 1;
  for (std::size_t k = n; k-- > 0;) {
    const auto& c = messages[k].content;
    const bool tool_response = c.starts_with("<tool_response>") && c.ends_with("</tool_response>");
    if (messages[k].role == "user" && !tool_response) {
      last_query = k;
      break;
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    const auto& m = messages[i];
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    } else if (m.role == "assistant") {
      std::string_view content = m.content;
      std::string_view reasoning;
      if (thinking && content.find("</think>") != std::string_view::npos) {
        reasoning = lstrip_char(after_last(rstrip_char(before_first(m.content, "</think>"), '\n'), "<think>"), '\n');
        content = lstrip_char(after_last(m.content, "</think>"), '\n');
      }
      out += "<|im_start|>assistant\n";
      if (thinking && i > last_query && (i + 1 == n || !reasoning.empty())) {
        out += "<think>\n";
        out += rstrip_char(lstrip_char(reasoning, '\n'), '\n');
        out += "\n</think>\n\n";
        out += lstrip_char(content, '\n');
      } else {
        out += content;
      }
      out += "<|im_end|>\n";
    } else if (m.role == "tool") {
      if (i == 0 || messages[i - 1].role != "tool")
        out += "<|im_start|>user";
      out += "\n<tool_response>\n" + m.content + "\n</tool_response>";
      if (i + 1 == n || messages[i + 1].role != "tool")
        out += "<|im_end|>\n";
    }
  }
  if (o.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (thinking && !o.enable_thinking)
      out += "<think>\n\n</think>\n\n";
  }
  return out;
}

expected<std::string> render_llama2(std::span<const chat_message> messages, const std::string& bos,
                                    const std::string& eos) {
  std::span<const chat_message> loop = messages;
  const std::string* system = nullptr;
  if (messages[0].role == "system") {
    system = &messages[0].content;
    loop = messages.subspan(1);
  }
  std::string out;
  for (std::size_t i = 0; i < loop.size(); ++i) {
    const auto& m = loop[i];
    if ((m.role == "user") != (i % 2 == 0))
      return make_error(errc::invalid_argument,
                        "chat template: Llama 2 roles must alternate user/assistant/user/... "
                        "(message " + std::to_string(i + (system ? 1 : 0)) + " is '" + m.role + "')");
    std::string content = m.content;
    if (i == 0 && system)
      content = "<<SYS>>\n" + *system + "\n<</SYS>>\n\n" + m.content;
    if (m.role == "user")
      out += bos + "[INST] " + std::string{strip(content)} + " [/INST]";
    else if (m.role == "assistant")
      out += " " + std::string{strip(content)} + " " + eos;
  }
  return out;
}

std::string render_llama3(std::span<const chat_message> messages, const chat_options& o,
                          const std::string& bos) {
  std::string out = bos;
  for (const auto& m : messages)
    out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + std::string{strip(m.content)} +
           "<|eot_id|>";
  if (o.add_generation_prompt)
    out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

} // namespace

std::string_view to_string(chat_family f) noexcept {
  switch (f) {
  case chat_family::chatml:
    return "chatml";
  case chat_family::llama2:
    return "llama2";
  case chat_family::llama3:
    return "llama3";
  }
  return "unknown";
}

expected<chat_template> chat_template::from_source(std::string_view source, std::string bos,
                                                   std::string eos) {
  if (source.empty())
    return make_error(errc::not_found,
                      "tokenizer_config.json has no chat_template; this model has no chat format");
  if (source.find("<|im_start|>") != std::string_view::npos)
    return chat_template{chat_family::chatml, source.find("</think>") != std::string_view::npos,
                         std::move(bos), std::move(eos)};
  if (source.find("<|start_header_id|>") != std::string_view::npos)
    return chat_template{chat_family::llama3, false, bos.empty() ? "<|begin_of_text|>" : std::move(bos),
                         std::move(eos)};
  if (source.find("[INST]") != std::string_view::npos)
    return chat_template{chat_family::llama2, false, bos.empty() ? "<s>" : std::move(bos),
                         eos.empty() ? "</s>" : std::move(eos)};
  return make_error(errc::unsupported,
                    "chat_template is none of ChatML (<|im_start|>), Llama 2 ([INST]) or Llama 3 "
                    "(<|start_header_id|>)");
}

expected<chat_template> chat_template::from_tokenizer(const tokenizer& tok) {
  std::string bos;
  std::string eos;
  if (tok.bos_id() >= 0) {
    THAW_ASSIGN(bos, tok.token_text(tok.bos_id()));
  }
  if (!tok.eos_ids().empty()) {
    THAW_ASSIGN(eos, tok.token_text(tok.eos_ids().front()));
  }
  return from_source(tok.chat_template_source(), std::move(bos), std::move(eos));
}

expected<std::string> chat_template::apply(std::span<const chat_message> messages,
                                           const chat_options& options) const {
  THAW_TRY(check_roles(messages));
  switch (family_) {
  case chat_family::chatml:
    return render_chatml(messages, options, qwen3_thinking_);
  case chat_family::llama2:
    // The Llama 2 template has no generation prompt: the prompt ends with " [/INST]".
    return render_llama2(messages, bos_, eos_);
  case chat_family::llama3:
    return render_llama3(messages, options, bos_);
  }
  return make_error(errc::internal, "chat template: unknown family");
}

} // namespace thaw
