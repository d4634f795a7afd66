#pragma once
// Text helpers the Beast-based server and client share (private to transport/).

#include <boost/beast/core/string.hpp>

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace thaw::http::detail {

inline std::string_view sv(boost::beast::string_view s) {
  return {s.data(), s.size()};
}

/// Header names are case-insensitive; thaw stores them lower-case.
inline std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

} // namespace thaw::http::detail
