#pragma once
/// Internal to thaw::http (included by http_server.cpp and http_connection.cpp only, so that users
/// of http_server.hpp do not compile Asio and Beast): one accepted connection and the responder it
/// hands to the handler.
///
/// A connection's states:
///   reading --(whole request parsed)--> handling --(response written, keep-alive)--> reading
///   reading --(413/431/400 queued)----> closing
///   handling --(response written, Connection: close or HTTP/1.0)--> closing
///   closing --(error response written: shutdown(send), drain until EOF or 5 s)--> closed
///   reading --(idle timeout, EOF)--> closed
///   handling --(EOF or error on the socket, server stop)--> closed, disconnect callback runs
///   handling --(client not reading: output over the limit, or a write stalled)--> closed, as
///     above
/// Every member runs on the connection's strand; the responder posts onto it.

#include "transport/http_server.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

namespace thaw::http::detail {

/// Lets responders outlive the server safely: a responder posts onto the I/O context only while
/// `alive` is true, and the server clears it (holding the lock) before its io_context goes away.
struct lifeline {
  std::shared_mutex mutex;
  bool alive = true;
};

/// What a connection needs from the server that accepted it.
class connection_owner {
public:
  virtual ~connection_owner() = default;
  /// Forgets a closed connection (open_connections() drops by one).
  virtual void remove_connection(std::uint64_t id) = 0;
};

struct connection_settings {
  std::size_t max_body_bytes = 0;
  std::size_t max_header_bytes = 0;
  std::chrono::seconds idle_timeout{60};
  std::size_t max_pending_output_bytes = 8 << 20;
  std::chrono::seconds write_timeout{60};
};

class responder_impl;

class connection : public std::enable_shared_from_this<connection> {
public:
  using socket_type = boost::asio::ip::tcp::socket;

  connection(socket_type socket, std::uint64_t id, const connection_settings& settings,
             const handler& h, connection_owner& owner, std::shared_ptr<lifeline> life);

  /// Starts reading the first request (posts onto the strand).
  void start();
  /// Closes the connection from any thread; a pending response sees a disconnect.
  void abort();
  /// Queues bytes of the current response, in order; `last` marks its final bytes. Strand only.
  void send_output(std::string bytes, bool last);

  [[nodiscard]] socket_type::executor_type executor() { return socket_.get_executor(); }

private:
  enum class state { reading, handling, closing, closed };

  void read();
  void on_read(boost::system::error_code ec, std::size_t n);
  void parse();
  void dispatch();
  void reject(int status, std::string message);
  void flush();
  void on_write(boost::system::error_code ec);
  void on_response_written();
  void begin_drain();
  void arm_timer(std::chrono::steady_clock::duration d);
  void on_timer(boost::system::error_code ec);
  void client_gone();
  void finish_close();

  socket_type socket_;
  boost::asio::steady_timer timer_;
  std::uint64_t id_;
  const connection_settings& settings_;
  const handler& handler_;
  connection_owner& owner_;
  std::shared_ptr<lifeline> life_;

  state state_ = state::reading;
  std::array<char, 16 << 10> read_buf_;
  boost::beast::flat_buffer in_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  bool header_checked_ = false;
  bool reading_ = false;
  bool keep_alive_ = true;

  std::deque<std::string> out_;
  std::vector<std::string> writing_;
  std::size_t pending_bytes_ = 0; ///< in out_ and writing_: not yet taken by the socket
  bool write_pending_ = false;
  bool response_queued_ = false; ///< the current response's last bytes are in out_/writing_
  bool draining_ = false;

  std::shared_ptr<responder_impl> current_;
};

/// The responder handed to the handler: formats the response and posts its bytes onto the
/// connection's strand. Thread-safe; ignores calls out of order or after the client went away.
class responder_impl final : public responder {
public:
  responder_impl(std::weak_ptr<connection> conn, std::shared_ptr<lifeline> life, bool keep_alive,
                 bool chunked);

  void send(int status, std::string content_type, std::string body,
            header_map extra_headers) override;
  void start_stream(int status, std::string content_type, header_map extra_headers) override;
  void write(std::string chunk) override;
  void finish() override;
  void on_disconnect(std::function<void()> callback) override;
  [[nodiscard]] bool done() const override;

  /// The client went away before the response was written (strand only): runs the callback once.
  void client_gone();

private:
  enum class phase { idle, streaming, complete };

  [[nodiscard]] std::string head(int status, const std::string& content_type,
                                 const header_map& extra, const std::string* length) const;
  void deliver(std::string bytes, bool last); // with mutex_ held, to keep calls in order

  std::weak_ptr<connection> conn_;
  std::shared_ptr<lifeline> life_;
  bool keep_alive_;
  bool chunked_;

  mutable std::mutex mutex_;
  phase phase_ = phase::idle;
  bool gone_ = false;
  bool callback_ran_ = false;
  std::function<void()> callback_;
};

/// `{"error":{"message":...,"type":"invalid_request_error","param":null,"code":null}}`
[[nodiscard]] std::string error_json(std::string_view message);

} // namespace thaw::http::detail
