#pragma once
/// Hugging Face tokenizer.json, implemented in the project (ARCHITECTURE.md section 6): BPE with
/// byte fallback and the SentencePiece-style normalizer (Llama 2), byte-level BPE with the
/// pre-tokenizer split regex (GPT-2, Llama 3, Qwen), merges by rank, added and special tokens,
/// BOS/EOS from the configs; and a streaming detokenizer that never emits a broken UTF-8
/// sequence.

#include "runtime/common/error.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace thaw {

class tokenizer {
public:
  /// Reads `tokenizer_json` and, when present beside it, tokenizer_config.json (BOS/EOS,
  /// add_bos_token, chat template). Errors name the file and what is wrong or unsupported.
  [[nodiscard]] static expected<tokenizer> load(const std::filesystem::path& tokenizer_json);
  /// The same from text; `config_json` may be empty.
  [[nodiscard]] static expected<tokenizer> parse(std::string_view tokenizer_json,
                                                 std::string_view config_json = {},
                                                 std::string_view source = "tokenizer.json");

  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;
  ~tokenizer();

  /// Token ids of `text`, special tokens written in the text recognised as such. With
  /// `add_special`, BOS (and whatever else the tokenizer's post-processor adds) as the model
  /// expects. Text that is not valid UTF-8 is `invalid_argument`.
  [[nodiscard]] expected<std::vector<std::int32_t>> encode(std::string_view text,
                                                           bool add_special = true) const;

  /// Text of `ids`; special tokens left out when `skip_special`. Ids outside the vocabulary
  /// are `invalid_argument`. Bytes that do not form valid UTF-8 become U+FFFD.
  [[nodiscard]] expected<std::string> decode(std::span<const std::int32_t> ids,
                                             bool skip_special = true) const;

  [[nodiscard]] std::int32_t vocab_size() const noexcept;
  [[nodiscard]] std::int32_t bos_id() const noexcept;              ///< -1: none
  [[nodiscard]] const std::vector<std::int32_t>& eos_ids() const noexcept;
  [[nodiscard]] bool is_special(std::int32_t id) const noexcept;
  /// Whether encode(text, add_special=true) puts BOS first (Llama 2 yes, Qwen3 no).
  [[nodiscard]] bool add_bos() const noexcept;
  /// The vocabulary string of `id` as stored in tokenizer.json ("▁Hello", "<0x0A>", "Ġworld");
  /// `invalid_argument` outside the vocabulary.
  [[nodiscard]] expected<std::string> token_text(std::int32_t id) const;
  /// tokenizer_config.json's "chat_template" (empty when it has none).
  [[nodiscard]] const std::string& chat_template_source() const noexcept;

  struct impl;
  [[nodiscard]] const impl& internals() const noexcept { return *impl_; }

private:
  explicit tokenizer(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// Streaming detokenization: push ids one by one; each call returns the text that has become
/// final (possibly empty), never a partial UTF-8 sequence, and the concatenation of every
/// returned piece plus flush() equals tokenizer::decode of all pushed ids. The state is a pure
/// function of the ids pushed, so replaying them rebuilds it (live migration does).
class detokenizer {
public:
  explicit detokenizer(const tokenizer& tok, bool skip_special = true);
  /// Ids outside the vocabulary are `invalid_argument` and change nothing.
  [[nodiscard]] expected<std::string> push(std::int32_t id);
  /// Whatever is held back (incomplete UTF-8 becomes U+FFFD); the detokenizer is then empty.
  [[nodiscard]] std::string flush();

private:
  const tokenizer* tok_;
  bool skip_special_;
  std::vector<std::int32_t> ids_; ///< ids since the last point where the text was final
  std::string emitted_;           ///< text of ids_ already returned
  bool started_ = false;          ///< some text was final (Llama 2 strips only the first space)
};

} // namespace thaw
