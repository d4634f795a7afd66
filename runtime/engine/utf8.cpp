// UTF-8 checks and conversions shared by the tokenizer and the stop matcher.

#include "runtime/engine/utf8.hpp"

namespace thaw {
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

} // namespace thaw
