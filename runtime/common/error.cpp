#include "runtime/common/error.hpp"

namespace thaw {

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::none: return "none";
    case errc::invalid_argument: return "invalid_argument";
    case errc::not_found: return "not_found";
    case errc::already_exists: return "already_exists";
    case errc::io_error: return "io_error";
    case errc::no_space: return "no_space";
    case errc::corrupt: return "corrupt";
    case errc::unsupported: return "unsupported";
    case errc::parse_error: return "parse_error";
    case errc::resource_exhausted: return "resource_exhausted";
    case errc::cancelled: return "cancelled";
    case errc::device_error: return "device_error";
    case errc::internal: return "internal";
  }
  return "unknown";
}

std::string error::to_string() const {
  std::string out{thaw::to_string(code)};
  out += ": ";
  out += message;
  return out;
}

error with_context(error e, std::string_view context) {
  std::string message{context};
  message += ": ";
  message += e.message;
  e.message = std::move(message);
  return e;
}

} // namespace thaw
