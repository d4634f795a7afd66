// UTF-8 handling, NFC (ICU) and the hand-written scanner for the Qwen split regex.

#include "runtime/engine/tokenizer_impl.hpp"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

namespace thaw::tok_detail {
namespace {

// Length of the well-formed sequence at s[i], or 0 if ill-formed; `complete` is false when the
// bytes so far are a valid prefix that runs off the end of s.
std::size_t sequence_length(std::string_view s, std::size_t i, bool& truncated) noexcept {
  truncated = false;
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80)
    return 1;
  std::size_t len = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0)
      lo = 0xA0; // no overlongs
    if (b0 == 0xED)
      hi = 0x9F; // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0)
      lo = 0x90;
    if (b0 == 0xF4)
      hi = 0x8F; // nothing past U+10FFFF
  } else {
    return 0;
  }
  for (std::size_t k = 1; k < len; ++k) {
    if (i + k >= s.size()) {
      truncated = true;
      return 0;
    }
    const auto b = static_cast<unsigned char>(s[i + k]);
    const unsigned char l = k == 1 ? lo : 0x80;
    const unsigned char h = k == 1 ? hi : 0xBF;
    if (b < l || b > h)
      return 0;
  }
  return len;
}

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

bool valid_utf8(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    bool truncated = false;
    const auto n = sequence_length(s, i, truncated);
    if (n == 0)
      return false;
    i += n;
  }
  return true;
}

std::string to_valid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (std::size_t i = 0; i < bytes.size();) {
    bool truncated = false;
    const auto n = sequence_length(bytes, i, truncated);
    if (n > 0) {
      out.append(bytes.substr(i, n));
      i += n;
      continue;
    }
    // One U+FFFD for the maximal valid prefix (at least one byte), as Unicode recommends.
    std::size_t skip = 1;
    const auto b0 = static_cast<unsigned char>(bytes[i]);
    if (b0 >= 0xC2 && b0 <= 0xF4) {
      while (i + skip < bytes.size() && skip < 4) {
        bool t = false;
        // Does bytes[i, i+skip+1) still form a valid prefix?
        if (sequence_length(bytes.substr(i, skip + 1), 0, t) == 0 && !t)
          break;
        ++skip;
      }
    }
    out += "\xEF\xBF\xBD";
    i += skip;
  }
  return out;
}

std::size_t incomplete_utf8_tail(std::string_view bytes) noexcept {
  const std::size_t n = bytes.size();
  for (std::size_t k = 1; k <= 3 && k <= n; ++k) {
    const auto b = static_cast<unsigned char>(bytes[n - k]);
    if ((b & 0xC0) == 0x80)
      continue; // continuation byte: look further back for the lead
    if (b < 0x80)
      return 0;
    bool truncated = false;
    (void)sequence_length(bytes, n - k, truncated);
    return truncated ? k : 0;
  }
  return 0;
}

void decode_utf8(std::string_view s, std::vector<char32_t>& cps, std::vector<std::size_t>& offsets) {
  cps.clear();
  offsets.clear();
  for (std::size_t i = 0; i < s.size();) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    std::size_t n = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
    char32_t c = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
    for (std::size_t k = 1; k < n; ++k)
      c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    cps.push_back(c);
    offsets.push_back(i);
    i += n;
  }
  offsets.push_back(s.size());
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

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
