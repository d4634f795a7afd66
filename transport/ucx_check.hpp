#pragma once
/// `THAW_UCX_CHECK`, the one check macro for UCX calls (CONVENTIONS.md rule 10): a failed call
/// becomes an `errc::io_error` naming the call, the file and line, and UCX's own status string,
/// returned from the enclosing function instead of exiting.

#include "runtime/common/error.hpp"

#include <string>
#include <string_view>

#include <ucs/type/status.h>

namespace thaw::transport {

/// An error for a UCX call that returned `status`: "ucp_mem_map(...): Input/output error
/// (transport/data_plane.cpp:120)". `context` (may be empty) names what was operated on.
[[nodiscard]] inline error ucx_error(ucs_status_t status, std::string_view call,
                                     std::string_view context, const char* file, int line) {
  std::string_view base{file};
  if (auto pos = base.rfind("/transport/"); pos != std::string_view::npos)
    base = base.substr(pos + 1);
  std::string msg;
  if (!context.empty()) {
    msg += context;
    msg += ": ";
  }
  msg += call;
  msg += ": ";
  msg += ucs_status_string(status);
  msg += " (";
  msg += base;
  msg += ':';
  msg += std::to_string(line);
  msg += ')';
  return make_error(errc::io_error, std::move(msg));
}

} // namespace thaw::transport

/// Checks a UCX call returning ucs_status_t; anything but UCS_OK returns an io_error from the
/// enclosing function. `context` names the subject (a peer "host:port", a key, "" for none).
#define THAW_UCX_CHECK(call, context)                                                              \
  do {                                                                                             \
    if (const ucs_status_t thaw_ucx_status_ = (call); thaw_ucx_status_ != UCS_OK)                  \
      return ::thaw::unexpected(                                                                   \
          ::thaw::transport::ucx_error(thaw_ucx_status_, #call, (context), __FILE__, __LINE__));   \
  } while (false)
