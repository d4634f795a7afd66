#include "transport/http_connection.hpp"

#include "transport/beast_text.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/status.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>

namespace thaw::http::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using boost::system::error_code;

namespace {

// How long a connection that is being closed after an error response keeps draining what the
// client still sends, so that closing with unread input does not reset the connection (and
// destroy the response in the client's receive queue) before the client has read it.
constexpr auto drain_time = std::chrono::seconds(5);

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    case '\t': out += "\\t"; break;
    default:
      if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
        out += buf;
      } else {
        out += c;
      }
    }
  }
  out += '"';
}


} // namespace

std::string error_json(std::string_view message) {
  std::string out = R"({"error":{"message":)";
  append_json_string(out, message);
  out += R"(,"type":"invalid_request_error","param":null,"code":null}})";
  return out;
}

// ---- connection -------------------------------------------------------------------------------

connection::connection(socket_type socket, std::uint64_t id, const connection_settings& settings,
                       const handler& h, connection_owner& owner, std::shared_ptr<lifeline> life)
    : socket_(std::move(socket)), timer_(socket_.get_executor()), id_(id), settings_(settings),
      handler_(h), owner_(owner), life_(std::move(life)) {}

void connection::start() {
  asio::post(executor(), [self = shared_from_this()] {
    if (self->state_ == state::closed)
      return;
    self->arm_timer(self->settings_.idle_timeout);
    self->read();
  });
}

void connection::abort() {
  asio::post(executor(), [self = shared_from_this()] { self->client_gone(); });
}

void connection::read() {
  if (reading_ || state_ == state::closed)
    return;
  // While a response is pending the read is there to notice a disconnect; bytes a client
  // pipelines meanwhile are kept for the next request, up to one largest request's worth.
  if (state_ == state::handling &&
      in_.size() >= settings_.max_header_bytes + settings_.max_body_bytes)
    return;
  reading_ = true;
  // Into a buffer of its own, not in_.prepare(): parse() and the drain consume from in_ while
  // this read is outstanding, and flat_buffer may move its storage when they do.
  socket_.async_read_some(asio::buffer(read_buf_),
                          [self = shared_from_this()](error_code ec, std::size_t n) {
                            self->on_read(ec, n);
                          });
}

void connection::on_read(error_code ec, std::size_t n) {
  reading_ = false;
  if (state_ == state::closed)
    return;
  if (ec) {
    // EOF or an error: a client that closes between requests simply leaves; one that goes away
    // while its response is pending is a disconnect the handler must hear about.
    if (state_ == state::handling)
      client_gone();
    else
      finish_close();
    return;
  }
  auto space = in_.prepare(n);
  std::memcpy(space.data(), read_buf_.data(), n);
  in_.commit(n);
  switch (state_) {
  case state::reading:
    parse();
    break;
  case state::closing:
    in_.consume(in_.size());
    break;
  case state::handling:
  case state::closed:
    break;
  }
  read();
}

void connection::parse() {
  while (state_ == state::reading && in_.size() > 0) {
    if (!parser_) {
      parser_.emplace();
      parser_->header_limit(static_cast<std::uint32_t>(
          std::min<std::size_t>(settings_.max_header_bytes, UINT32_MAX)));
      // The body limit is checked against Content-Length once the header is in (to name the
      // size in the 413), then set for chunked bodies. Not boost::none: Beast 1.74 compares
      // Content-Length with the optional limit, and none then rejects every body.
      parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
      header_checked_ = false;
    }
    error_code ec;
    std::size_t used = parser_->put(in_.data(), ec);
    in_.consume(used);
    if (ec == bhttp::error::need_more)
      return;
    if (ec == bhttp::error::header_limit)
      return reject(431, "request header is larger than the limit of " +
                             std::to_string(settings_.max_header_bytes) + " bytes");
    if (ec == bhttp::error::body_limit)
      return reject(413, "request body is more than " +
                             std::to_string(settings_.max_body_bytes) + " bytes, the limit is " +
                             std::to_string(settings_.max_body_bytes));
    if (ec)
      return reject(400, "malformed HTTP request: " + ec.message());
    if (parser_->is_header_done() && !header_checked_) {
      header_checked_ = true;
      if (auto len = parser_->content_length(); len && *len > settings_.max_body_bytes)
        return reject(413, "request body is " + std::to_string(*len) +
                               " bytes, the limit is " +
                               std::to_string(settings_.max_body_bytes));
      parser_->body_limit(settings_.max_body_bytes);
      // curl and others wait for this before sending a larger body.
      auto expect = parser_->get()[bhttp::field::expect];
      if (!parser_->is_done() && beast::iequals(expect, "100-continue")) {
        out_.push_back("HTTP/1.1 100 Continue\r\n\r\n");
        flush();
      }
    }
    if (parser_->is_done())
      return dispatch();
    if (used == 0)
      return;
  }
}

void connection::dispatch() {
  auto& msg = parser_->get();
  request req;
  req.method = std::string(sv(msg.method_string()));
  req.target = std::string(sv(msg.target()));
  req.path = req.target.substr(0, req.target.find('?'));
  for (const auto& field : msg) {
    auto [it, inserted] =
        req.headers.emplace(lower(sv(field.name_string())), std::string(sv(field.value())));
    if (!inserted) // repeated header: one comma-separated value (RFC 9110 section 5.3)
      it->second.append(", ").append(sv(field.value()));
  }
  req.body = std::move(msg.body());
  // HTTP/1.0 closes after the response even with "Connection: keep-alive"; it has no chunking.
  bool http11 = msg.version() >= 11;
  keep_alive_ = http11 && msg.keep_alive();
  parser_.reset();

  state_ = state::handling;
  timer_.cancel();
  current_ = std::make_shared<responder_impl>(weak_from_this(), life_, keep_alive_, http11);
  auto responder = current_;
  try {
    handler_(std::move(req), responder);
  } catch (const std::exception& e) {
    spdlog::error("http: handler threw: {}", e.what());
    responder->send(500, "application/json", error_json("internal error"), {});
  } catch (...) {
    spdlog::error("http: handler threw a non-exception");
    responder->send(500, "application/json", error_json("internal error"), {});
  }
  read(); // notices a client that goes away while the response is pending
}

void connection::reject(int status, std::string message) {
  auto reason = bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(status)));
  std::string body = error_json(message);
  std::string bytes = "HTTP/1.1 " + std::to_string(status) + " " + std::string(sv(reason)) +
                      "\r\nContent-Type: application/json\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  parser_.reset();
  state_ = state::closing;
  timer_.cancel();
  out_.push_back(std::move(bytes));
  flush();
}

void connection::send_output(std::string bytes, bool last) {
  if (state_ != state::handling || response_queued_)
    return;
  pending_bytes_ += bytes.size();
  if (pending_bytes_ > settings_.max_pending_output_bytes) {
    spdlog::warn("http: connection {}: the client is not reading ({} bytes of its response "
                 "queued, limit {}); closing it",
                 id_, pending_bytes_, settings_.max_pending_output_bytes);
    return client_gone();
  }
  if (!bytes.empty())
    out_.push_back(std::move(bytes));
  response_queued_ = last;
  if (!write_pending_ && out_.empty() && last)
    return on_response_written();
  flush();
}

void connection::flush() {
  if (write_pending_ || out_.empty() || state_ == state::closed)
    return;
  write_pending_ = true;
  // Whatever has queued up goes out in one gather write; each piece keeps its own chunk framing.
  writing_.assign(std::make_move_iterator(out_.begin()), std::make_move_iterator(out_.end()));
  out_.clear();
  std::vector<asio::const_buffer> buffers;
  buffers.reserve(writing_.size());
  for (const auto& piece : writing_)
    buffers.emplace_back(asio::buffer(piece));
  // While a response is written, the timer watches for a client that stopped reading.
  if (state_ == state::handling)
    arm_timer(settings_.write_timeout);
  asio::async_write(socket_, buffers, [self = shared_from_this()](error_code ec, std::size_t) {
    self->on_write(ec);
  });
}

void connection::on_write(error_code ec) {
  write_pending_ = false;
  for (const auto& piece : writing_)
    pending_bytes_ -= piece.size();
  writing_.clear();
  if (state_ == state::closed)
    return;
  if (ec)
    return client_gone();
  if (!out_.empty())
    return flush();
  if (state_ == state::handling && response_queued_)
    on_response_written();
  else if (state_ == state::closing)
    begin_drain();
}

void connection::on_response_written() {
  current_.reset();
  response_queued_ = false;
  if (!keep_alive_) {
    state_ = state::closing;
    return begin_drain();
  }
  state_ = state::reading;
  arm_timer(settings_.idle_timeout);
  parse(); // a request the client pipelined may already be in the buffer
  read();
}

void connection::begin_drain() {
  if (draining_)
    return;
  draining_ = true;
  error_code ignored;
  socket_.shutdown(socket_type::shutdown_send, ignored);
  in_.consume(in_.size());
  arm_timer(drain_time);
  read();
}

void connection::arm_timer(std::chrono::steady_clock::duration d) {
  timer_.expires_after(d); // cancels the previous wait
  timer_.async_wait([self = shared_from_this()](error_code ec) { self->on_timer(ec); });
}

void connection::on_timer(error_code ec) {
  if (ec == asio::error::operation_aborted || state_ == state::closed)
    return;
  if (timer_.expiry() > std::chrono::steady_clock::now())
    return; // re-armed after this wait had already completed
  if (state_ == state::reading || state_ == state::closing)
    finish_close();
  else if (state_ == state::handling && write_pending_) {
    spdlog::warn("http: connection {}: a write made no progress in {} s; closing it", id_,
                 settings_.write_timeout.count());
    client_gone();
  }
}

void connection::client_gone() {
  if (state_ == state::closed)
    return;
  auto pending = std::move(current_);
  finish_close();
  if (pending)
    pending->client_gone();
}

void connection::finish_close() {
  if (state_ == state::closed)
    return;
  state_ = state::closed;
  error_code ignored;
  socket_.shutdown(socket_type::shutdown_both, ignored);
  socket_.close(ignored);
  timer_.cancel();
  out_.clear();
  pending_bytes_ = 0;
  current_.reset();
  owner_.remove_connection(id_);
}

// ---- responder --------------------------------------------------------------------------------

responder_impl::responder_impl(std::weak_ptr<connection> conn, std::shared_ptr<lifeline> life,
                               bool keep_alive, bool chunked)
    : conn_(std::move(conn)), life_(std::move(life)), keep_alive_(keep_alive), chunked_(chunked) {}

std::string responder_impl::head(int status, const std::string& content_type,
                                 const header_map& extra, const std::string* length) const {
  auto reason = bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(status)));
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(sv(reason)) + "\r\n";
  if (!content_type.empty())
    out.append("Content-Type: ").append(content_type).append("\r\n");
  for (const auto& [name, value] : extra)
    out.append(name).append(": ").append(value).append("\r\n");
  if (length)
    out.append("Content-Length: ").append(*length).append("\r\n");
  else if (chunked_)
    out.append("Transfer-Encoding: chunked\r\n");
  // Without chunking (HTTP/1.0) the end of the body is the end of the connection.
  if (!keep_alive_ || (!length && !chunked_))
    out.append("Connection: close\r\n");
  out.append("\r\n");
  return out;
}

void responder_impl::send(int status, std::string content_type, std::string body,
                          header_map extra_headers) {
  std::lock_guard lock(mutex_);
  if (phase_ != phase::idle || gone_)
    return;
  phase_ = phase::complete;
  auto length = std::to_string(body.size());
  std::string bytes = head(status, content_type, extra_headers, &length);
  bytes += body;
  deliver(std::move(bytes), true);
}

void responder_impl::start_stream(int status, std::string content_type, header_map extra_headers) {
  std::lock_guard lock(mutex_);
  if (phase_ != phase::idle || gone_)
    return;
  phase_ = phase::streaming;
  deliver(head(status, content_type, extra_headers, nullptr), false);
}

void responder_impl::write(std::string chunk) {
  std::lock_guard lock(mutex_);
  if (phase_ != phase::streaming || gone_ || chunk.empty())
    return;
  if (!chunked_)
    return deliver(std::move(chunk), false);
  char size[24];
  int n = std::snprintf(size, sizeof size, "%zx\r\n", chunk.size());
  std::string bytes;
  bytes.reserve(static_cast<std::size_t>(n) + chunk.size() + 2);
  bytes.append(size, static_cast<std::size_t>(n)).append(chunk).append("\r\n");
  deliver(std::move(bytes), false);
}

void responder_impl::finish() {
  std::lock_guard lock(mutex_);
  if (phase_ != phase::streaming || gone_)
    return;
  phase_ = phase::complete;
  deliver(chunked_ ? std::string("0\r\n\r\n") : std::string(), true);
}

void responder_impl::deliver(std::string bytes, bool last) {
  auto conn = conn_.lock();
  if (!conn)
    return;
  std::shared_lock life_lock(life_->mutex);
  if (!life_->alive)
    return;
  asio::post(conn->executor(), [conn, bytes = std::move(bytes), last]() mutable {
    conn->send_output(std::move(bytes), last);
  });
}

void responder_impl::on_disconnect(std::function<void()> callback) {
  std::unique_lock lock(mutex_);
  if (callback_ran_ || !gone_) {
    if (!callback_ran_)
      callback_ = std::move(callback);
    return;
  }
  // The client has already gone: run it now, once.
  callback_ran_ = true;
  lock.unlock();
  if (callback)
    callback();
}

bool responder_impl::done() const {
  std::lock_guard lock(mutex_);
  return gone_ || phase_ == phase::complete;
}

void responder_impl::client_gone() {
  std::function<void()> callback;
  {
    std::lock_guard lock(mutex_);
    if (gone_)
      return;
    gone_ = true;
    if (callback_) {
      callback_ran_ = true;
      callback = std::move(callback_);
    }
  }
  if (!callback)
    return;
  try {
    callback();
  } catch (const std::exception& e) {
    spdlog::error("http: disconnect callback threw: {}", e.what());
  } catch (...) {
    spdlog::error("http: disconnect callback threw a non-exception");
  }
}

} // namespace thaw::http::detail
