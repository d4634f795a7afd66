// The blocking HTTP client: URL parsing, connection errors, and the transparent reconnect after
// the server closed an idle kept-alive connection.

#include "transport/http_client.hpp"
#include "transport/http_server.hpp"

#include "tests/transport/http_test_util.hpp"

#include <gtest/gtest.h>

#include <atomic>

namespace thaw::http {
namespace {

TEST(HttpClient, ParsesUrls) {
  auto a = parse_url("http://127.0.0.1:8000");
  ASSERT_TRUE(a) << a.err().to_string();
  EXPECT_EQ(a->first, "127.0.0.1");
  EXPECT_EQ(a->second, 8000);
  auto b = parse_url("127.0.0.1:8000");
  ASSERT_TRUE(b) << b.err().to_string();
  EXPECT_EQ(b->first, "127.0.0.1");
  EXPECT_EQ(b->second, 8000);
  auto c = parse_url("localhost:8000/");
  ASSERT_TRUE(c) << c.err().to_string();
  EXPECT_EQ(c->first, "localhost");
  EXPECT_EQ(c->second, 8000);
  auto d = parse_url("HTTP://gpu-node-1.lan:65535/v1");
  ASSERT_TRUE(d) << d.err().to_string();
  EXPECT_EQ(d->first, "gpu-node-1.lan");
  EXPECT_EQ(d->second, 65535);
}

TEST(HttpClient, RejectsJunkUrlsNamingThem) {
  for (const char* junk : {"", "junk", "http://", "localhost:", ":8000", "localhost:80x",
                           "localhost:0", "localhost:70000", "https://host:443", "ho st:1",
                           "http://a:b:c"}) {
    auto r = parse_url(junk);
    ASSERT_FALSE(r) << junk;
    EXPECT_EQ(r.err().code, errc::invalid_argument) << junk;
    EXPECT_NE(r.err().message.find(std::string("'") + junk + "'"), std::string::npos)
        << r.err().message;
  }
}

TEST(HttpClient, ConnectFailureNamesHostAndPort) {
  std::uint16_t port = 0;
  {
    // A port that was free a moment ago and now has no listener.
    auto s = server::start({}, [](request, std::shared_ptr<responder> r) { r->send(200, "", ""); });
    ASSERT_TRUE(s);
    port = (*s)->port();
  }
  auto c = client::connect("127.0.0.1", port, std::chrono::seconds(5));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.err().code, errc::io_error);
  EXPECT_NE(c.err().message.find("127.0.0.1:" + std::to_string(port)), std::string::npos)
      << c.err().message;
}

TEST(HttpClient, ReconnectsOnceAfterTheServerClosedAnIdleConnection) {
  std::atomic<int> handled{0};
  server_options options;
  options.idle_timeout = std::chrono::seconds(1);
  auto s = server::start(options, [&](request req, std::shared_ptr<responder> r) {
    ++handled;
    r->send(200, "text/plain", req.body);
  });
  ASSERT_TRUE(s) << s.err().to_string();
  auto c = client::connect("127.0.0.1", (*s)->port(), std::chrono::seconds(10));
  ASSERT_TRUE(c);
  auto first = (*c)->request("POST", "/", "one");
  ASSERT_TRUE(first) << first.err().to_string();
  EXPECT_EQ(first->body, "one");
  // The server drops the idle connection; the client does not know yet.
  ASSERT_TRUE(test::wait_until([&] { return (*s)->open_connections() == 0; }));
  auto second = (*c)->request("POST", "/", "two");
  ASSERT_TRUE(second) << second.err().to_string();
  EXPECT_EQ(second->body, "two");
  EXPECT_EQ(handled.load(), 2); // sent once, not twice
}

} // namespace
} // namespace thaw::http
