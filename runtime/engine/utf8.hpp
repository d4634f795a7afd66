#pragma once
/// UTF-8 as the engine handles it: checks, repair with U+FFFD, and code point conversion. Used by
/// the tokenizer (encode, decode, streaming) and the stop matcher (stop strings).

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace thaw {

/// Whether `s` is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF).
[[nodiscard]] bool valid_utf8(std::string_view s) noexcept;

/// `bytes` with every ill-formed subsequence replaced by U+FFFD (one per maximal subpart).
[[nodiscard]] std::string to_valid_utf8(std::string_view bytes);

/// Length of the tail of `bytes` that is an incomplete but so far valid UTF-8 sequence (0-3).
[[nodiscard]] std::size_t incomplete_utf8_tail(std::string_view bytes) noexcept;

/// Code points of valid UTF-8 `s`, with the byte offset of each (and s.size() at the end).
void decode_utf8(std::string_view s, std::vector<char32_t>& cps, std::vector<std::size_t>& offsets);

/// Appends the UTF-8 encoding of `cp`.
void append_utf8(std::string& out, char32_t cp);

} // namespace thaw
