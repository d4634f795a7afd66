// The HTTP server over real sockets on 127.0.0.1: round trips with keep-alive, limits (413, 431),
// malformed requests (400), Connection: close, HTTP/1.0, pipelining, the idle timeout and stop().

#include "transport/http_client.hpp"
#include "transport/http_server.hpp"

#include "tests/transport/http_test_util.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace thaw::http {
namespace {

using test::raw_connection;
using test::wait_until;

// Answers every request at once with what it received, so a test can check the request's parts.
void echo(request req, std::shared_ptr<responder> r) {
  std::string body = req.method + " " + req.target + " " + req.path + " [" +
                     std::string(req.header("x-test")) + "] " + req.body;
  r->send(200, "text/plain", std::move(body), {{"X-Reply", "yes"}});
}

std::unique_ptr<server> start_server(handler h, server_options options = {}) {
  auto s = server::start(std::move(options), std::move(h));
  EXPECT_TRUE(s) << s.err().to_string();
  return s ? std::move(s).value() : nullptr;
}

std::unique_ptr<client> connect_to(const server& s) {
  auto c = client::connect("127.0.0.1", s.port(), std::chrono::seconds(10));
  EXPECT_TRUE(c) << c.err().to_string();
  return c ? std::move(c).value() : nullptr;
}

TEST(HttpServer, RoundTripsTwoRequestsOnOneKeptAliveConnection) {
  auto s = start_server(echo);
  ASSERT_TRUE(s);
  EXPECT_NE(s->port(), 0);
  auto c = connect_to(*s);
  ASSERT_TRUE(c);

  auto first = c->request("POST", "/v1/completions?x=1", R"({"prompt":"hi"})", {{"X-Test", "a"}});
  ASSERT_TRUE(first) << first.err().to_string();
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(first->body, R"(POST /v1/completions?x=1 /v1/completions [a] {"prompt":"hi"})");
  EXPECT_EQ(first->headers["x-reply"], "yes");
  EXPECT_EQ(first->headers["content-type"], "text/plain");

  auto second = c->request("GET", "/v1/models");
  ASSERT_TRUE(second) << second.err().to_string();
  EXPECT_EQ(second->body, "GET /v1/models /v1/models [] ");
  // Both went over the same connection: the server has seen only one.
  EXPECT_EQ(s->open_connections(), 1u);
}

TEST(HttpServer, OversizedBodyGets413AndOtherClientsAreStillServed) {
  server_options options;
  options.max_body_bytes = 1024;
  auto s = start_server(echo, options);
  ASSERT_TRUE(s);
  auto big = connect_to(*s);
  ASSERT_TRUE(big);
  auto r = big->request("POST", "/v1/completions", std::string(4096, 'x'));
  ASSERT_TRUE(r) << r.err().to_string();
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(r->headers["content-type"], "application/json");
  EXPECT_EQ(r->body, R"({"error":{"message":"request body is 4096 bytes, the limit is 1024",)"
                     R"("type":"invalid_request_error","param":null,"code":null}})");

  auto other = connect_to(*s);
  ASSERT_TRUE(other);
  auto ok = other->request("POST", "/ok", std::string(1024, 'y'));
  ASSERT_TRUE(ok) << ok.err().to_string();
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, "POST /ok /ok [] " + std::string(1024, 'y'));
}

TEST(HttpServer, OversizedBodyLargerThanSocketBuffersStillGets413) {
  // The client writes all 16 MiB before it reads: the server must drain what it rejects, or the
  // client would block on write (or see its response destroyed by a reset).
  server_options options;
  options.max_body_bytes = 1024;
  auto s = start_server(echo, options);
  ASSERT_TRUE(s);
  auto c = connect_to(*s);
  ASSERT_TRUE(c);
  auto r = c->request("POST", "/big", std::string(16 << 20, 'x'));
  ASSERT_TRUE(r) << r.err().to_string();
  EXPECT_EQ(r->status, 413);
}

TEST(HttpServer, OversizedHeaderGets431) {
  server_options options;
  options.max_header_bytes = 1024;
  auto s = start_server(echo, options);
  ASSERT_TRUE(s);
  auto c = connect_to(*s);
  ASSERT_TRUE(c);
  auto r = c->request("GET", "/", {}, {{"x-big", std::string(4096, 'h')}});
  ASSERT_TRUE(r) << r.err().to_string();
  EXPECT_EQ(r->status, 431);
}

TEST(HttpServer, GarbageGets400AndTheConnectionCloses) {
  std::atomic<int> handled{0};
  auto s = start_server([&](request req, std::shared_ptr<responder> r) {
    ++handled;
    echo(std::move(req), std::move(r));
  });
  ASSERT_TRUE(s);
  raw_connection raw(s->port());
  ASSERT_TRUE(raw.connected());
  ASSERT_TRUE(raw.send("this is not http at all\r\n\r\n"));
  bool eof = false;
  auto reply = raw.read_to_eof(eof);
  EXPECT_EQ(reply.rfind("HTTP/1.1 400 ", 0), 0u) << reply;
  EXPECT_NE(reply.find("invalid_request_error"), std::string::npos) << reply;
  EXPECT_TRUE(eof);
  EXPECT_EQ(handled.load(), 0);
  raw.close();
  EXPECT_TRUE(wait_until([&] { return s->open_connections() == 0; }));
}

TEST(HttpServer, ConnectionCloseIsHonoured) {
  auto s = start_server(echo);
  ASSERT_TRUE(s);
  raw_connection raw(s->port());
  ASSERT_TRUE(raw.connected());
  ASSERT_TRUE(raw.send("GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  bool eof = false;
  auto reply = raw.read_to_eof(eof);
  EXPECT_EQ(reply.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << reply;
  EXPECT_NE(reply.find("Connection: close\r\n"), std::string::npos) << reply;
  EXPECT_NE(reply.find("GET /a /a [] "), std::string::npos) << reply;
  EXPECT_TRUE(eof);
  raw.close();
  EXPECT_TRUE(wait_until([&] { return s->open_connections() == 0; }));

  // The client sees the same: its next request goes over a new connection.
  auto c = connect_to(*s);
  ASSERT_TRUE(c);
  auto r = c->request("GET", "/b", {}, {{"connection", "close"}});
  ASSERT_TRUE(r) << r.err().to_string();
  EXPECT_EQ(r->headers["connection"], "close");
  auto again = c->request("GET", "/c");
  ASSERT_TRUE(again) << again.err().to_string();
  EXPECT_EQ(again->body, "GET /c /c [] ");
}

TEST(HttpServer, Http10ClosesAfterTheResponse) {
  auto s = start_server(echo);
  ASSERT_TRUE(s);
  raw_connection raw(s->port());
  ASSERT_TRUE(raw.connected());
  ASSERT_TRUE(raw.send("GET /old HTTP/1.0\r\n\r\n"));
  bool eof = false;
  auto reply = raw.read_to_eof(eof);
  EXPECT_NE(reply.find(" 200 OK\r\n"), std::string::npos) << reply;
  EXPECT_NE(reply.find("GET /old /old [] "), std::string::npos) << reply;
  EXPECT_TRUE(eof);
}

TEST(HttpServer, PipelinedRequestsAreAnsweredInOrder) {
  // The second request arrives while the first is pending (the handler answers from another
  // thread later); the bytes read meanwhile must be kept for it.
  std::mutex mutex;
  std::vector<std::shared_ptr<responder>> pending;
  auto s = start_server([&](request req, std::shared_ptr<responder> r) {
    if (req.path == "/slow") {
      std::lock_guard lock(mutex);
      pending.push_back(std::move(r));
      return;
    }
    echo(std::move(req), std::move(r));
  });
  ASSERT_TRUE(s);
  raw_connection raw(s->port());
  ASSERT_TRUE(raw.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                       "POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"));
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard lock(mutex);
    return pending.size() == 1;
  }));
  {
    std::lock_guard lock(mutex);
    pending[0]->send(200, "text/plain", "slow done");
  }
  auto replies = raw.read_until("POST /fast /fast [] abc");
  auto slow = replies.find("slow done");
  auto fast = replies.find("POST /fast /fast [] abc");
  ASSERT_NE(slow, std::string::npos) << replies;
  ASSERT_NE(fast, std::string::npos) << replies;
  EXPECT_LT(slow, fast);
  EXPECT_EQ(s->open_connections(), 1u);
}

TEST(HttpServer, IdleKeptAliveConnectionIsClosed) {
  server_options options;
  options.idle_timeout = std::chrono::seconds(1);
  auto s = start_server(echo, options);
  ASSERT_TRUE(s);
  raw_connection raw(s->port());
  ASSERT_TRUE(raw.send("GET /x HTTP/1.1\r\nHost: x\r\n\r\n"));
  bool eof = false;
  // The response, then (about a second later) the server's close.
  auto reply = raw.read_to_eof(eof);
  EXPECT_NE(reply.find("GET /x /x [] "), std::string::npos) << reply;
  EXPECT_TRUE(eof);
  EXPECT_TRUE(wait_until([&] { return s->open_connections() == 0; }));
}

TEST(HttpServer, StopClosesOpenConnectionsAndRunsDisconnectCallbacks) {
  std::mutex mutex;
  std::vector<std::shared_ptr<responder>> pending;
  std::atomic<int> disconnects{0};
  server_options options;
  options.io_threads = 2;
  auto s = start_server(
      [&](request, std::shared_ptr<responder> r) {
        r->on_disconnect([&] { ++disconnects; });
        std::lock_guard lock(mutex);
        pending.push_back(std::move(r));
      },
      options);
  ASSERT_TRUE(s);
  auto port = s->port();

  std::vector<std::thread> clients;
  std::atomic<int> failed{0};
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&, port] {
      auto c = client::connect("127.0.0.1", port, std::chrono::seconds(10));
      if (!c || !(*c)->request("GET", "/wait"))
        ++failed;
    });
  }
  raw_connection idle(port); // a third connection with no request at all
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard lock(mutex);
    return pending.size() == 2 && s->open_connections() == 3;
  }));

  s->stop();
  EXPECT_EQ(s->open_connections(), 0u);
  EXPECT_EQ(disconnects.load(), 2);
  for (auto& t : clients)
    t.join();
  EXPECT_EQ(failed.load(), 2); // their connections were closed without a response
  for (auto& r : pending) {
    EXPECT_TRUE(r->done());
    r->send(200, "text/plain", "too late"); // ignored, and harmless
  }
  s->stop(); // idempotent
  EXPECT_EQ(disconnects.load(), 2);
  auto late = client::connect("127.0.0.1", port, std::chrono::seconds(2));
  EXPECT_FALSE(late);
  // Responders may outlive the server itself (a worker still holding one): still harmless.
  s.reset();
  for (auto& r : pending) {
    r->start_stream(200, "text/plain");
    r->write("gone");
    r->finish();
  }
}

// A handler that streams `total` bytes in 64 KiB chunks from a thread of its own (as a model's
// tokens arrive), stopping early once the client is gone; then it leaves the stream open.
struct flood {
  std::size_t total = 0;
  std::atomic<int> disconnects{0};
  std::atomic<std::size_t> written{0};
  std::vector<std::thread> writers;
  std::mutex mutex;
  std::vector<std::shared_ptr<responder>> held;

  handler make() {
    return [this](request, std::shared_ptr<responder> r) {
      r->on_disconnect([this] { ++disconnects; });
      r->start_stream(200, "text/event-stream");
      std::lock_guard lock(mutex);
      held.push_back(r);
      writers.emplace_back([this, r] {
        const std::string chunk(64 << 10, 'x');
        while (written < total && !r->done()) {
          r->write(chunk);
          written += chunk.size();
        }
      });
    };
  }
  ~flood() {
    for (auto& t : writers)
      t.join();
  }
};

TEST(HttpServer, AClientThatDoesNotReadIsCutOffAtTheOutputLimit) {
  flood f;
  f.total = 256u << 20; // far more than the socket buffers and the limit together
  server_options options;
  options.max_pending_output_bytes = 256 << 10;
  auto s = start_server(f.make(), options);
  ASSERT_TRUE(s);
  raw_connection raw(s->port());
  ASSERT_TRUE(raw.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")); // and never read
  ASSERT_TRUE(wait_until([&] { return f.disconnects.load() == 1; }));
  EXPECT_TRUE(wait_until([&] { return s->open_connections() == 0; }));
  EXPECT_LT(f.written.load(), f.total) << "the writer saw the client gone and stopped";
  EXPECT_TRUE(f.held.at(0)->done());
}

TEST(HttpServer, AWriteThatMakesNoProgressClosesTheConnection) {
  flood f;
  f.total = 24u << 20; // more than loopback's socket buffers take, less than the limit below
  server_options options;
  options.max_pending_output_bytes = 256u << 20;
  options.write_timeout = std::chrono::seconds(1);
  auto s = start_server(f.make(), options);
  ASSERT_TRUE(s);
  raw_connection raw(s->port());
  ASSERT_TRUE(raw.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(wait_until([&] { return f.written.load() >= f.total; }));
  const auto written = std::chrono::steady_clock::now();
  EXPECT_EQ(f.disconnects.load(), 0) << "the limit was not what closed it";
  ASSERT_TRUE(wait_until([&] { return f.disconnects.load() == 1; }));
  EXPECT_GE(std::chrono::steady_clock::now() - written, std::chrono::milliseconds(500));
  EXPECT_TRUE(wait_until([&] { return s->open_connections() == 0; }));
}

TEST(HttpServer, ExpectContinueGetsAnInterimResponse) {
  auto s = start_server(echo);
  ASSERT_TRUE(s);
  raw_connection raw(s->port());
  ASSERT_TRUE(raw.send("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                       "Expect: 100-continue\r\n\r\n"));
  // A client like curl waits for this before sending the body.
  auto interim = raw.read_until("\r\n\r\n");
  EXPECT_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(raw.send("hello"));
  auto reply = raw.read_until("POST /up /up [] hello");
  EXPECT_NE(reply.find("HTTP/1.1 200 OK\r\n"), std::string::npos) << reply;
}

TEST(HttpServer, BindFailureNamesTheAddress) {
  auto s = start_server(echo);
  ASSERT_TRUE(s);
  server_options taken;
  taken.port = s->port();
  auto second = server::start(taken, echo);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.err().code, errc::io_error);
  EXPECT_NE(second.err().message.find("127.0.0.1:" + std::to_string(s->port())),
            std::string::npos)
      << second.err().message;
}

} // namespace
} // namespace thaw::http
