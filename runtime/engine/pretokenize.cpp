// NFC (ICU) and the hand-written scanner for the Qwen split regex.

#include "runtime/engine/tokenizer_impl.hpp"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

namespace thaw::tok_detail {
namespace {

bool is_letter(char32_t c) noexcept {
  return U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_L_MASK;
}
bool is_number(char32_t c) noexcept {
  return U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_N_MASK;
}
bool is_space(char32_t c) noexcept { return u_isUWhiteSpace(static_cast<UChar32>(c)); }
bool is_crlf(char32_t c) noexcept { return c == U'\r' || c == U'\n'; }
// [^\s\p{L}\p{N}]
bool is_other(char32_t c) noexcept { return !is_space(c) && !is_letter(c) && !is_number(c); }

} // namespace

expected<std::string> nfc(std::string_view s) {
  bool ascii = true;
  for (char c : s)
    ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii)
    return std::string{s};
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* norm = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status))
    return make_error(errc::internal, std::string{"ICU NFC normalizer: "} + u_errorName(status));
  const auto in = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<std::int32_t>(s.size())));
  if (norm->isNormalized(in, status) && U_SUCCESS(status))
    return std::string{s};
  status = U_ZERO_ERROR;
  const icu::UnicodeString out = norm->normalize(in, status);
  if (U_FAILURE(status))
    return make_error(errc::internal, std::string{"ICU NFC normalize: "} + u_errorName(status));
  std::string result;
  out.toUTF8String(result);
  return result;
}

void split_qwen(std::string_view text, std::vector<std::pair<std::size_t, std::size_t>>& pieces,
                std::size_t max_digits) {
  pieces.clear();
  thread_local std::vector<char32_t> cps;
  thread_local std::vector<std::size_t> off;
  decode_utf8(text, cps, off);
  const std::size_t n = cps.size();
  auto lower = [](char32_t c) { return c >= U'A' && c <= U'Z' ? c + 32 : c; };
  std::size_t i = 0;
  while (i < n) {
    std::size_t end = 0; // exclusive, in code points; 0 = no match yet
    const char32_t c = cps[i];
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (c == U'\'' && i + 1 < n) {
      const char32_t a = lower(cps[i + 1]);
      const char32_t b = i + 2 < n ? lower(cps[i + 2]) : 0;
      if (a == U's' || a == U't' || a == U'm' || a == U'd')
        end = i + 2;
      else if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l'))
        end = i + 3;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!end) {
      std::size_t j = i;
      if (!is_letter(c) && !is_crlf(c) && !is_number(c) && i + 1 < n && is_letter(cps[i + 1]))
        j = i + 1;
      if (is_letter(cps[j])) {
        while (j < n && is_letter(cps[j]))
          ++j;
        end = j;
      }
    }
    // \p{N} (Qwen) or \p{N}{1,3} (Llama 3)
    if (!end && is_number(c)) {
      end = i + 1;
      while (end < n && end - i < max_digits && is_number(cps[end]))
        ++end;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    if (!end) {
      std::size_t j = i;
      if (c == U' ' && i + 1 < n && is_other(cps[i + 1]))
        j = i + 1;
      if (is_other(cps[j])) {
        while (j < n && is_other(cps[j]))
          ++j;
        while (j < n && is_crlf(cps[j]))
          ++j;
        end = j;
      }
    }
    if (!end && is_space(c)) {
      std::size_t e = i;
      std::size_t last_crlf = n;
      while (e < n && is_space(cps[e])) {
        if (is_crlf(cps[e]))
          last_crlf = e;
        ++e;
      }
      if (last_crlf != n)
        end = last_crlf + 1; // \s*[\r\n]+ : \s* backs off to the last line break
      else if (e == n)
        end = e; // \s+(?!\S) at the end of the text
      else if (e - 1 > i)
        end = e - 1; // \s+(?!\S) leaves the last space to the next word
      else
        end = e; // \s+
    }
    if (!end)
      end = i + 1; // not reachable with the categories above; keep the scanner total
    pieces.emplace_back(off[i], off[end]);
    i = end;
  }
}

} // namespace thaw::tok_detail
