#pragma once
/// The HTTP/1.1 edge (ARCHITECTURE.md section 9): a Boost.Beast server with keep-alive, limits on
/// header and body size, chunked streaming (SSE) and client-disconnect detection. CAF-free: the
/// gateway actor hands it a handler; the handler translates and posts, it never blocks.
///
/// A connection's life:
///   accept --> read request --(too big: 413, malformed: 400, then close)
///          --> handler(request, responder) --> response (whole, or streamed in chunks)
///          --> keep-alive ? read next request : close
/// While a response is pending the server keeps a read posted on the socket, so a client that
/// goes away is noticed even when nothing is being written; the responder's disconnect callback
/// then runs once, and later writes are dropped.

#include "runtime/common/error.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace thaw::http {

/// Header names are stored lower-case.
using header_map = std::map<std::string, std::string>;

struct request {
  std::string method;  ///< "GET", "POST", ...
  std::string target;  ///< as sent: "/v1/models?x=1"
  std::string path;    ///< target without the query: "/v1/models"
  header_map headers;  ///< lower-case names
  std::string body;
  /// The value of a header (lower-case name), or "" when absent.
  [[nodiscard]] std::string_view header(std::string_view name) const;
};

/// Replies to one request. Thread-safe: any thread may call it, once the handler has it (the
/// server posts the work to its I/O thread). Either send() once, or start_stream(), any number of
/// write()s, then finish(). Calls after the client disconnected, or out of order, are ignored.
class responder {
public:
  virtual ~responder() = default;
  /// A whole response with Content-Length.
  virtual void send(int status, std::string content_type, std::string body,
                    header_map extra_headers = {}) = 0;
  /// Starts a chunked response (Transfer-Encoding: chunked), e.g. "text/event-stream".
  virtual void start_stream(int status, std::string content_type,
                            header_map extra_headers = {}) = 0;
  /// One chunk of a streamed response; empty chunks are skipped.
  virtual void write(std::string chunk) = 0;
  /// Ends a streamed response (the zero-length chunk); the connection may then serve the next
  /// request.
  virtual void finish() = 0;
  /// `callback` runs once, on the I/O thread, if the client disconnects before the response is
  /// complete. Set it from the handler; setting it after a disconnect runs it at once.
  virtual void on_disconnect(std::function<void()> callback) = 0;
  /// True once the client has gone or the response is complete.
  [[nodiscard]] virtual bool done() const = 0;
};

/// Called on the I/O thread for every well-formed request. Must not block.
using handler = std::function<void(request, std::shared_ptr<responder>)>;

struct server_options {
  std::string address = "127.0.0.1";
  std::uint16_t port = 0;                    ///< 0: any free port (see server::port())
  std::size_t max_body_bytes = 1 << 20;      ///< larger bodies get 413
  std::size_t max_header_bytes = 16 << 10;   ///< larger headers get 431
  int io_threads = 1;
  std::chrono::seconds idle_timeout{60};     ///< keep-alive connections idle this long are closed
  /// A client that does not read its response: bytes queued beyond this, or a write that makes
  /// no progress for write_timeout, close the connection, and the response's disconnect
  /// callback runs (a streamed completion is cancelled and its KV blocks freed) instead of the
  /// server holding the stream in memory for as long as the client lingers.
  std::size_t max_pending_output_bytes = 8 << 20;
  std::chrono::seconds write_timeout{60};
};

class server {
public:
  /// Binds and starts serving on background I/O threads. `io_error` naming the address when the
  /// port cannot be bound.
  [[nodiscard]] static expected<std::unique_ptr<server>> start(server_options options,
                                                               handler h);
  virtual ~server() = default;
  /// The bound port (the chosen one when options.port was 0).
  [[nodiscard]] virtual std::uint16_t port() const = 0;
  /// Stops accepting, closes every connection (their disconnect callbacks run) and joins the I/O
  /// threads. Idempotent; the destructor calls it.
  virtual void stop() = 0;
  /// Connections open now (for tests and /metrics).
  [[nodiscard]] virtual std::size_t open_connections() const = 0;
};

} // namespace thaw::http
