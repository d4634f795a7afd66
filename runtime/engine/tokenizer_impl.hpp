#pragma once
/// Internals of thaw::tokenizer shared by tokenizer.cpp (loading, encode/decode pipeline),
/// tokenizer_bpe.cpp (merges by rank) and pretokenize.cpp (UTF-8, ICU, the split scanner).
/// Not part of the engine's interface.

#include "runtime/engine/tokenizer.hpp"
#include "runtime/engine/utf8.hpp"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace thaw {

namespace tok_detail {

/// Hash that lets unordered_map<std::string, ...> be searched with a string_view.
struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

/// NFC normal form of valid UTF-8 `s` (ICU); `s` itself when it is already normalized.
[[nodiscard]] expected<std::string> nfc(std::string_view s);

/// Pieces of `text` under the GPT-2 family split regex used by Qwen2/Qwen3
/// ((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|
/// \s*[\r\n]+|\s+(?!\S)|\s+), as byte ranges [begin, end), leftmost alternative first.
/// With `max_digits` 3, \p{N} becomes \p{N}{1,3}: the Llama 3 regex.
void split_qwen(std::string_view text, std::vector<std::pair<std::size_t, std::size_t>>& pieces,
                std::size_t max_digits = 1);

} // namespace tok_detail

struct tokenizer::impl {
  enum class model_kind : std::uint8_t { sentencepiece_bpe, byte_level_bpe };

  struct added_token {
    std::string content;
    std::int32_t id = -1;
    bool special = false;
  };

  struct merge {
    std::int32_t rank = 0;
    std::int32_t result = 0;
  };

  model_kind kind = model_kind::sentencepiece_bpe;
  std::vector<std::string> id_to_token;                                     ///< by id
  std::unordered_map<std::string, std::int32_t, tok_detail::string_hash, std::equal_to<>> vocab;
  std::unordered_map<std::uint64_t, merge> merges;                          ///< (left, right) ids
  std::vector<added_token> added;                                           ///< by length desc
  std::array<std::vector<std::uint32_t>, 256> added_by_first_byte;          ///< indices in added
  std::vector<std::uint8_t> special;                                        ///< by id: 1 special
  std::vector<std::int16_t> byte_of_token;                                  ///< <0xNN> -> NN, or -1
  std::array<std::int32_t, 256> byte_token{};                               ///< byte -> id

  // SentencePiece-style normalizer: Prepend + Replace(" " -> "▁").
  std::string prepend;
  std::string space_replacement;
  bool nfc = false;
  bool split_regex = false; ///< Qwen-style Split pre-tokenizer before ByteLevel
  std::size_t split_max_digits = 1; ///< 3 for the Llama 3 regex
  bool ignore_merges = false;       ///< a piece that is a whole token skips BPE (Llama 3)
  std::array<std::string, 256> byte_chars; ///< byte -> its byte-level character (UTF-8)
  bool byte_fallback = false;
  bool split_words = false; ///< no token has "▁" after another character: BPE word by word
  std::int32_t unk_id = -1;
  bool strip_leading_space = false; ///< decoder Strip(" ", 1, 0)

  std::vector<std::int32_t> prefix_ids; ///< post-processor tokens before the sequence
  std::vector<std::int32_t> suffix_ids; ///< and after it
  std::int32_t bos = -1;
  std::vector<std::int32_t> eos;
  std::string chat_template;
  std::uint64_t serial = 0; ///< unique per loaded tokenizer: keys the per-thread word cache

  [[nodiscard]] static std::uint64_t pair_key(std::int32_t a, std::int32_t b) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
           static_cast<std::uint32_t>(b);
  }

  /// Applies merges by rank to `symbols` (token ids) in place.
  void bpe(std::vector<std::int32_t>& symbols) const;
  /// Appends the ids of one word (bytes of a pre-token, or a normalized SentencePiece word),
  /// from the calling thread's cache when it was seen before.
  void encode_word(std::string_view word, std::vector<std::int32_t>& out) const;
  /// Encodes one segment of text that holds no added token.
  [[nodiscard]] expected<void> encode_segment(std::string_view text,
                                              std::vector<std::int32_t>& out) const;
  /// Raw bytes of `ids` through the decoder, before U+FFFD replacement.
  [[nodiscard]] expected<std::string> decode_bytes(std::span<const std::int32_t> ids,
                                                   bool skip_special, bool strip_first) const;
};

} // namespace thaw
