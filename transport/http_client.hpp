#pragma once
/// A small blocking HTTP/1.1 client over Boost.Beast, for `thaw deploy/status/models/bench serve`
/// and the tests: one keep-alive connection, whole responses or a streamed body read chunk by
/// chunk (SSE).

#include "runtime/common/error.hpp"
#include "transport/http_server.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace thaw::http {

struct response {
  int status = 0;
  header_map headers; ///< lower-case names
  std::string body;
};

class client {
public:
  /// Connects to host:port. `io_error` naming host:port when the connection fails.
  [[nodiscard]] static expected<std::unique_ptr<client>> connect(
      const std::string& host, std::uint16_t port,
      std::chrono::milliseconds timeout = std::chrono::seconds(30));
  virtual ~client() = default;
  /// Sends a request and reads the whole response (reconnecting once if the server closed the
  /// kept-alive connection). Extra headers such as {"authorization", "Bearer k"}.
  [[nodiscard]] virtual expected<response> request(const std::string& method,
                                                   const std::string& target, std::string body = {},
                                                   header_map headers = {}) = 0;
  /// Like request(), but hands the body to `on_data` piece by piece as it arrives (chunked
  /// responses); `on_data` returning false closes the connection at once (a client that goes
  /// away). The returned response has status and headers and an empty body.
  [[nodiscard]] virtual expected<response> stream(const std::string& method,
                                                  const std::string& target, std::string body,
                                                  header_map headers,
                                                  std::function<bool(std::string_view)> on_data) = 0;
};

/// Splits "http://host:port" (or "host:port") into host and port.
[[nodiscard]] expected<std::pair<std::string, std::uint16_t>> parse_url(const std::string& url);

} // namespace thaw::http
