#pragma once
/// Chat templates without Jinja (ARCHITECTURE.md section 6): the family is recognised from
/// tokenizer_config.json's "chat_template" string and rendered by hand, byte for byte as the
/// Jinja template would render it, for ChatML (Qwen2/Qwen3, with Qwen3's <think> handling),
/// Llama 2 ([INST] ... [/INST]) and Llama 3 (<|start_header_id|> ...).

#include "runtime/common/error.hpp"

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace thaw {

class tokenizer;

/// The template families thaw renders.
enum class chat_family : std::uint8_t {
  chatml, ///< "<|im_start|>{role}\n{content}<|im_end|>\n" (Qwen2, Qwen3)
  llama2, ///< "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>"
  llama3, ///< "<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
};

/// "chatml", "llama2", "llama3".
[[nodiscard]] std::string_view to_string(chat_family f) noexcept;

/// One message of a conversation; role is "system", "user", "assistant" or "tool".
struct chat_message {
  std::string role;
  std::string content;
};

/// Options of a rendering.
struct chat_options {
  bool add_generation_prompt = true; ///< end with the assistant's header
  bool enable_thinking = true;       ///< Qwen3: false adds an empty <think></think> block
};

class chat_template {
public:
  /// Recognises the family of a Jinja chat template: "<|im_start|>" is ChatML, "[INST]" Llama 2,
  /// "<|start_header_id|>" Llama 3. An empty source is `not_found`, anything else `unsupported`.
  /// `bos_token`/`eos_token` are the strings the template writes (Llama 2 "<s>"/"</s>", Llama 3
  /// "<|begin_of_text|>"); empty picks the family's usual ones.
  [[nodiscard]] static expected<chat_template> from_source(std::string_view source,
                                                           std::string bos_token = {},
                                                           std::string eos_token = {});
  /// The template of a loaded tokenizer (tokenizer_config.json beside its tokenizer.json), with
  /// its BOS/EOS token strings.
  [[nodiscard]] static expected<chat_template> from_tokenizer(const tokenizer& tok);

  [[nodiscard]] chat_family family() const noexcept { return family_; }

  /// The prompt text for `messages`. Unknown roles, an empty conversation, and (Llama 2) roles
  /// that do not alternate user/assistant are `invalid_argument`.
  [[nodiscard]] expected<std::string> apply(std::span<const chat_message> messages,
                                            const chat_options& options = {}) const;

private:
  chat_template(chat_family f, bool qwen3_thinking, std::string bos, std::string eos)
      : family_(f), qwen3_thinking_(qwen3_thinking), bos_(std::move(bos)), eos_(std::move(eos)) {}

  chat_family family_;
  bool qwen3_thinking_; ///< the ChatML template handles <think> blocks (Qwen3)
  std::string bos_;
  std::string eos_;
};

} // namespace thaw
