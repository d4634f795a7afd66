#include "transport/http_server.hpp"

#include "transport/http_connection.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>

#include <spdlog/spdlog.h>

#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace thaw::http {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

std::string_view request::header(std::string_view name) const {
  auto it = headers.find(std::string(name));
  return it == headers.end() ? std::string_view{} : std::string_view(it->second);
}

namespace {

// After a failed accept (out of file descriptors, say) wait this long before the next one, so
// that a persistent failure does not spin.
constexpr auto accept_retry_delay = std::chrono::milliseconds(100);

class server_impl final : public server, public detail::connection_owner {
public:
  server_impl(server_options options, handler h)
      : options_(std::move(options)), handler_(std::move(h)),
        ioc_(std::max(1, options_.io_threads)), acceptor_(asio::make_strand(ioc_)),
        retry_timer_(acceptor_.get_executor()), work_(asio::make_work_guard(ioc_)),
        life_(std::make_shared<detail::lifeline>()) {
    settings_.max_body_bytes = options_.max_body_bytes;
    settings_.max_header_bytes = options_.max_header_bytes;
    settings_.idle_timeout = options_.idle_timeout;
    settings_.max_pending_output_bytes = options_.max_pending_output_bytes;
    settings_.write_timeout = options_.write_timeout;
  }

  ~server_impl() override {
    stop();
    // Responders may outlive the server; from now on they post nothing.
    std::unique_lock lock(life_->mutex);
    life_->alive = false;
  }

  status listen() {
    error_code ec;
    auto address = asio::ip::make_address(options_.address, ec);
    if (ec)
      return make_error(errc::invalid_argument,
                        "server address '" + options_.address + "': " + ec.message());
    tcp::endpoint endpoint(address, options_.port);
    auto where = options_.address + ":" + std::to_string(options_.port);
    auto fail = [&](const char* what) {
      return make_error(errc::io_error,
                        "cannot listen on " + where + ": " + what + ": " + ec.message());
    };
    if (acceptor_.open(endpoint.protocol(), ec); ec)
      return fail("open");
    if (acceptor_.set_option(asio::socket_base::reuse_address(true), ec); ec)
      return fail("SO_REUSEADDR");
    if (acceptor_.bind(endpoint, ec); ec)
      return fail("bind");
    if (acceptor_.listen(asio::socket_base::max_listen_connections, ec); ec)
      return fail("listen");
    port_ = acceptor_.local_endpoint(ec).port();
    if (ec)
      return fail("local_endpoint");
    return {};
  }

  void run() {
    accept();
    int n = std::max(1, options_.io_threads);
    threads_.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
      threads_.emplace_back([this] { run_io(); });
  }

  [[nodiscard]] std::uint16_t port() const override { return port_; }

  void stop() override {
    std::lock_guard stop_lock(stop_mutex_);
    std::vector<std::shared_ptr<detail::connection>> open;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      open.reserve(connections_.size());
      for (auto& [id, conn] : connections_)
        open.push_back(conn);
    }
    asio::post(acceptor_.get_executor(), [this] {
      error_code ignored;
      acceptor_.close(ignored);
      retry_timer_.cancel();
    });
    for (auto& conn : open)
      conn->abort();
    open.clear();
    // With the acceptor and every socket closed the I/O threads run out of work and return.
    work_.reset();
    for (auto& t : threads_) {
      if (t.joinable() && t.get_id() != std::this_thread::get_id())
        t.join();
    }
    threads_.clear();
    std::lock_guard lock(mutex_);
    connections_.clear();
  }

  [[nodiscard]] std::size_t open_connections() const override {
    std::lock_guard lock(mutex_);
    return connections_.size();
  }

  void remove_connection(std::uint64_t id) override {
    std::lock_guard lock(mutex_);
    connections_.erase(id);
  }

private:
  void run_io() {
    for (;;) {
      try {
        ioc_.run();
        return;
      } catch (const std::exception& e) {
        // Handlers catch their own exceptions; this keeps a thread alive if one slips through.
        spdlog::error("http: I/O thread caught: {}", e.what());
      }
    }
  }

  void accept() {
    acceptor_.async_accept(asio::make_strand(ioc_), [this](error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open())
        return;
      if (ec) {
        spdlog::warn("http: accept on port {} failed: {}", port_, ec.message());
        retry_timer_.expires_after(accept_retry_delay);
        retry_timer_.async_wait([this](error_code wait_ec) {
          if (!wait_ec && acceptor_.is_open())
            accept();
        });
        return;
      }
      add(std::move(socket));
      accept();
    });
  }

  void add(tcp::socket socket) {
    error_code ignored;
    // Streamed chunks (SSE events) are small and must go out at once, not wait for Nagle.
    socket.set_option(tcp::no_delay(true), ignored);
    std::shared_ptr<detail::connection> conn;
    {
      std::lock_guard lock(mutex_);
      if (stopping_)
        return; // the socket closes as it goes out of scope
      auto id = next_id_++;
      conn = std::make_shared<detail::connection>(std::move(socket), id, settings_, handler_,
                                                  *this, life_);
      connections_.emplace(id, conn);
    }
    conn->start();
  }

  server_options options_;
  handler handler_;
  detail::connection_settings settings_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  asio::steady_timer retry_timer_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::shared_ptr<detail::lifeline> life_;
  std::vector<std::thread> threads_;
  std::uint16_t port_ = 0;

  std::mutex stop_mutex_;
  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, std::shared_ptr<detail::connection>> connections_;
  std::uint64_t next_id_ = 0;
  bool stopping_ = false;
};

} // namespace

expected<std::unique_ptr<server>> server::start(server_options options, handler h) {
  if (!h)
    return make_error(errc::invalid_argument, "http server: no handler given");
  if (options.max_header_bytes == 0)
    return make_error(errc::invalid_argument, "http server: max_header_bytes is 0");
  auto impl = std::make_unique<server_impl>(std::move(options), std::move(h));
  THAW_TRY(impl->listen());
  impl->run();
  return std::unique_ptr<server>(std::move(impl));
}

} // namespace thaw::http
