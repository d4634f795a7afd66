#include "transport/http_client.hpp"

#include "transport/beast_text.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <exception>
#include <limits>

namespace thaw::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

// Responses may be of any size. (Not boost::none: Beast 1.74 compares Content-Length with the
// optional limit, and none then rejects every body.)
constexpr std::uint64_t no_body_limit = std::numeric_limits<std::uint64_t>::max();

using detail::lower;
using detail::sv;

// Errors that mean the server closed a kept-alive connection before reading our request: the
// request can be sent again on a fresh connection.
bool stale_connection(const error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::connection_aborted;
}

class client_impl final : public client {
public:
  client_impl(std::string host, std::uint16_t port, std::chrono::milliseconds timeout)
      : host_(std::move(host)), port_(port), timeout_(timeout), stream_(ioc_) {}

  ~client_impl() override { close(); }

  status open() {
    close();
    auto where = host_ + ":" + std::to_string(port_);
    error_code ec;
    tcp::resolver resolver(ioc_);
    auto endpoints = resolver.resolve(host_, std::to_string(port_), ec);
    if (ec)
      return make_error(errc::io_error, "cannot resolve " + where + ": " + ec.message());
    stream_.expires_after(timeout_);
    stream_.connect(endpoints, ec);
    if (ec)
      return make_error(errc::io_error, "cannot connect to " + where + ": " + ec.message());
    stream_.socket().set_option(tcp::no_delay(true), ec);
    buffer_.clear();
    connected_ = true;
    used_ = false;
    return {};
  }

  expected<response> request(const std::string& method, const std::string& target,
                             std::string body, header_map headers) override {
    return exchange(method, target, std::move(body), headers, nullptr);
  }

  expected<response> stream(const std::string& method, const std::string& target,
                            std::string body, header_map headers,
                            std::function<bool(std::string_view)> on_data) override {
    if (!on_data)
      return make_error(errc::invalid_argument, "http client: stream() without on_data");
    return exchange(method, target, std::move(body), headers, &on_data);
  }

private:
  using on_data_fn = std::function<bool(std::string_view)>;

  // Sends the request and reads the response; tries once more on a fresh connection when a
  // reused one turns out to have been closed by the server before any of the response came.
  expected<response> exchange(const std::string& method, const std::string& target,
                              std::string body, const header_map& headers, on_data_fn* on_data) {
    bhttp::request<bhttp::string_body> req;
    req.method_string(method);
    req.target(target);
    req.version(11);
    req.set(bhttp::field::host, host_ + ":" + std::to_string(port_));
    req.set(bhttp::field::user_agent, "thaw");
    if (!body.empty())
      req.set(bhttp::field::content_type, "application/json");
    for (const auto& [name, value] : headers)
      req.set(name, value);
    req.body() = std::move(body);
    req.prepare_payload();

    for (int attempt = 0;; ++attempt) {
      if (!connected_) {
        THAW_TRY(open());
      }
      bool reused = used_;
      used_ = true;
      bool got_bytes = false;
      error_code ec;
      auto result = attempt_once(req, on_data, ec, got_bytes);
      if (!ec)
        return result;
      close();
      if (attempt == 0 && reused && !got_bytes && stale_connection(ec))
        continue;
      auto what = host_ + ":" + std::to_string(port_) + " " + method + " " + target;
      if (ec == beast::error::timeout)
        return make_error(errc::io_error, what + ": timed out after " +
                                              std::to_string(timeout_.count()) + " ms");
      return make_error(errc::io_error, what + ": " + ec.message());
    }
  }

  response attempt_once(bhttp::request<bhttp::string_body>& req, on_data_fn* on_data,
                        error_code& ec, bool& got_bytes) {
    response out;
    stream_.expires_after(timeout_);
    bhttp::write(stream_, req, ec);
    if (ec)
      return out;
    if (on_data)
      read_streamed(out, *on_data, ec, got_bytes);
    else
      read_whole(out, ec, got_bytes);
    return out;
  }

  void read_whole(response& out, error_code& ec, bool& got_bytes) {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(no_body_limit);
    stream_.expires_after(timeout_);
    bhttp::read_header(stream_, buffer_, parser, ec);
    got_bytes = parser.got_some() || buffer_.size() > 0;
    if (ec)
      return;
    stream_.expires_after(timeout_);
    bhttp::read(stream_, buffer_, parser, ec);
    if (ec)
      return;
    auto msg = parser.release();
    fill_head(out, msg);
    out.body = std::move(msg.body());
    if (!msg.keep_alive())
      close();
  }

  void read_streamed(response& out, on_data_fn& on_data, error_code& ec, bool& got_bytes) {
    bhttp::response_parser<bhttp::buffer_body> parser;
    parser.body_limit(no_body_limit);
    stream_.expires_after(timeout_);
    bhttp::read_header(stream_, buffer_, parser, ec);
    got_bytes = parser.got_some() || buffer_.size() > 0;
    if (ec)
      return;
    fill_head(out, parser.get());
    char chunk[16 << 10];
    while (!parser.is_done()) {
      parser.get().body().data = chunk;
      parser.get().body().size = sizeof chunk;
      // read_some parses what one socket read brought, so each chunk reaches on_data as soon as
      // it arrives instead of after the buffer fills.
      stream_.expires_after(timeout_);
      bhttp::read_some(stream_, buffer_, parser, ec);
      if (ec == bhttp::error::need_buffer)
        ec = {};
      if (ec)
        return;
      std::size_t n = sizeof chunk - parser.get().body().size;
      if (n > 0) {
        bool more = false;
        try {
          more = on_data(std::string_view(chunk, n));
        } catch (...) {
          close();
          throw;
        }
        if (!more) {
          close(); // the caller stops listening: the server sees the disconnect
          return;
        }
      }
    }
    if (!parser.get().keep_alive())
      close();
  }

  template <class Message>
  static void fill_head(response& out, const Message& msg) {
    out.status = static_cast<int>(msg.result_int());
    for (const auto& field : msg) {
      auto [it, inserted] =
          out.headers.emplace(lower(sv(field.name_string())), std::string(sv(field.value())));
      if (!inserted)
        it->second.append(", ").append(sv(field.value()));
    }
  }

  void close() {
    if (!connected_)
      return;
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
    buffer_.clear();
    connected_ = false;
  }

  std::string host_;
  std::uint16_t port_;
  std::chrono::milliseconds timeout_;
  asio::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  bool connected_ = false;
  bool used_ = false;
};

} // namespace

expected<std::unique_ptr<client>> client::connect(const std::string& host, std::uint16_t port,
                                                  std::chrono::milliseconds timeout) {
  auto impl = std::make_unique<client_impl>(host, port, timeout);
  THAW_TRY(impl->open());
  return std::unique_ptr<client>(std::move(impl));
}

expected<std::pair<std::string, std::uint16_t>> parse_url(const std::string& url) {
  auto bad = [&](const std::string& why) {
    return make_error(errc::invalid_argument, "url '" + url + "': " + why);
  };
  std::string_view rest(url);
  if (auto scheme = rest.find("://"); scheme != std::string_view::npos) {
    if (lower(rest.substr(0, scheme)) != "http")
      return bad("only http:// is supported");
    rest.remove_prefix(scheme + 3);
  }
  // A path after host:port is allowed ("localhost:8000/") and ignored.
  rest = rest.substr(0, rest.find('/'));
  auto colon = rest.rfind(':');
  if (colon == std::string_view::npos)
    return bad("expected host:port");
  auto host = rest.substr(0, colon);
  auto port_text = rest.substr(colon + 1);
  if (host.empty())
    return bad("no host");
  for (char c : host) {
    auto u = static_cast<unsigned char>(c);
    if (!std::isalnum(u) && c != '.' && c != '-' && c != '_')
      return bad("bad character in host '" + std::string(host) + "'");
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      port == 0 || port > 65535)
    return bad("bad port '" + std::string(port_text) + "'");
  return std::pair<std::string, std::uint16_t>(std::string(host), static_cast<std::uint16_t>(port));
}

} // namespace thaw::http
