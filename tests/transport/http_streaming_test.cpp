// Streamed (chunked, SSE-style) responses and disconnect detection, over real sockets: the client
// sees each chunk as it is written, a client that leaves mid-stream or while a whole response is
// pending fires on_disconnect once, and responders work from other threads.

#include "transport/http_client.hpp"
#include "transport/http_server.hpp"

#include "tests/transport/http_test_util.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace thaw::http {
namespace {

using test::raw_connection;
using test::wait_until;

// Hands each request's responder to the test thread.
struct mailbox {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::pair<request, std::shared_ptr<responder>>> items;

  void put(request req, std::shared_ptr<responder> r) {
    {
      std::lock_guard lock(mutex);
      items.emplace_back(std::move(req), std::move(r));
    }
    cv.notify_all();
  }
  std::shared_ptr<responder> take() {
    std::unique_lock lock(mutex);
    if (!cv.wait_for(lock, std::chrono::seconds(10), [&] { return !items.empty(); }))
      return nullptr;
    auto r = std::move(items.front().second);
    items.pop_front();
    return r;
  }
};

TEST(HttpStreaming, ClientSeesEachChunkBeforeTheNextIsWritten) {
  mailbox box;
  auto s = server::start({}, [&](request req, std::shared_ptr<responder> r) {
    r->start_stream(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
    r->write("data: one\n\n");
    box.put(std::move(req), std::move(r));
  });
  ASSERT_TRUE(s) << s.err().to_string();
  auto c = client::connect("127.0.0.1", (*s)->port(), std::chrono::seconds(10));
  ASSERT_TRUE(c) << c.err().to_string();

  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::string> pieces;
  std::string all;
  expected<response> result = make_error(errc::internal, "not run");
  std::thread reader([&] {
    result = (*c)->stream("POST", "/v1/completions", R"({"stream":true})", {},
                          [&](std::string_view piece) {
                            {
                              std::lock_guard lock(mutex);
                              pieces.emplace_back(piece);
                              all += piece;
                            }
                            cv.notify_all();
                            return true;
                          });
  });

  auto r = box.take();
  ASSERT_TRUE(r);
  {
    // The second event is written only once the client has the first: a client that buffered
    // the body would wait here forever (bounded by the 10 s).
    std::unique_lock lock(mutex);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return !pieces.empty(); }));
    EXPECT_EQ(pieces.front(), "data: one\n\n");
  }
  r->write("data: two\n\n");
  r->write(""); // skipped, not a terminating chunk
  r->write("data: [DONE]\n\n");
  r->finish();
  r->write("after finish"); // ignored
  reader.join();

  ASSERT_TRUE(result) << result.err().to_string();
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->headers["content-type"], "text/event-stream");
  EXPECT_EQ(result->headers["transfer-encoding"], "chunked");
  EXPECT_EQ(result->headers["cache-control"], "no-cache");
  EXPECT_TRUE(result->body.empty());
  EXPECT_EQ(all, "data: one\n\ndata: two\n\ndata: [DONE]\n\n");
  EXPECT_TRUE(r->done());

  // finish() left the connection ready for the next request.
  std::string second;
  std::thread again([&] {
    result = (*c)->stream("GET", "/again", {}, {}, [&](std::string_view piece) {
      second += piece;
      return true;
    });
  });
  auto r2 = box.take();
  ASSERT_TRUE(r2);
  r2->finish();
  again.join();
  ASSERT_TRUE(result) << result.err().to_string();
  EXPECT_EQ(second, "data: one\n\n");
  EXPECT_EQ((*s)->open_connections(), 1u);
}

TEST(HttpStreaming, ClientLeavingMidStreamFiresOnDisconnectOnce) {
  mailbox box;
  std::atomic<int> disconnects{0};
  auto s = server::start({}, [&](request req, std::shared_ptr<responder> r) {
    r->on_disconnect([&] { ++disconnects; });
    r->start_stream(200, "text/event-stream");
    r->write("data: first\n\n");
    box.put(std::move(req), std::move(r));
  });
  ASSERT_TRUE(s) << s.err().to_string();
  auto c = client::connect("127.0.0.1", (*s)->port(), std::chrono::seconds(10));
  ASSERT_TRUE(c);

  std::string seen;
  auto result = (*c)->stream("POST", "/v1/chat/completions", "{}", {}, [&](std::string_view p) {
    seen += p;
    return false; // the user closed the tab
  });
  ASSERT_TRUE(result) << result.err().to_string();
  EXPECT_EQ(seen, "data: first\n\n");

  ASSERT_TRUE(wait_until([&] { return disconnects.load() == 1; }));
  ASSERT_TRUE(wait_until([&] { return (*s)->open_connections() == 0; }));
  auto r = box.take();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->done());
  r->write("data: nobody listens\n\n"); // dropped
  r->finish();
  bool late_ran = false;
  r->on_disconnect([&] { late_ran = true; }); // the one callback has already run
  EXPECT_FALSE(late_ran);
  EXPECT_EQ(disconnects.load(), 1);

  // The client reconnects for its next request.
  std::string next_seen;
  expected<response> next = make_error(errc::internal, "not run");
  std::thread again([&] {
    next = (*c)->stream("GET", "/v1/models", {}, {}, [&](std::string_view p) {
      next_seen += p;
      return true;
    });
  });
  auto r2 = box.take();
  ASSERT_TRUE(r2);
  r2->finish();
  again.join();
  ASSERT_TRUE(next) << next.err().to_string();
  EXPECT_EQ(next_seen, "data: first\n\n");
  EXPECT_EQ(disconnects.load(), 1);
}

TEST(HttpStreaming, ClientLeavingWhileAWholeResponseIsPendingFiresOnDisconnectOnce) {
  mailbox box;
  std::atomic<int> disconnects{0};
  auto s = server::start({}, [&](request req, std::shared_ptr<responder> r) {
    box.put(std::move(req), std::move(r)); // a long generation: no bytes for now
  });
  ASSERT_TRUE(s) << s.err().to_string();
  {
    raw_connection raw((*s)->port());
    ASSERT_TRUE(
        raw.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"));
    auto r = box.take();
    ASSERT_TRUE(r);
    // Set from another thread after the handler returned; still before the disconnect.
    r->on_disconnect([&] { ++disconnects; });
    EXPECT_FALSE(r->done());
    raw.close();
    ASSERT_TRUE(wait_until([&] { return disconnects.load() == 1; }));
    ASSERT_TRUE(wait_until([&] { return (*s)->open_connections() == 0; }));
    EXPECT_TRUE(r->done());
    r->send(200, "application/json", "{}"); // dropped
  }
  EXPECT_EQ(disconnects.load(), 1);

  // Setting the callback after the client has gone runs it at once.
  {
    raw_connection raw((*s)->port());
    ASSERT_TRUE(raw.send("GET /late HTTP/1.1\r\nHost: x\r\n\r\n"));
    auto r = box.take();
    ASSERT_TRUE(r);
    raw.close();
    ASSERT_TRUE(wait_until([&] { return r->done(); }));
    bool ran = false;
    r->on_disconnect([&] { ran = true; });
    EXPECT_TRUE(ran);
  }
}

TEST(HttpStreaming, RespondersAnsweredFromAWorkerThread) {
  // The handler only posts to a worker (as the gateway posts to an actor); the worker answers.
  mailbox box;
  server_options options;
  options.io_threads = 2;
  auto s = server::start(options, [&](request req, std::shared_ptr<responder> r) {
    box.put(std::move(req), std::move(r));
  });
  ASSERT_TRUE(s) << s.err().to_string();
  constexpr int requests_per_client = 50;
  constexpr int clients = 3;
  std::atomic<bool> stop_worker{false};
  std::thread worker([&] {
    int answered = 0;
    while (answered < requests_per_client * clients && !stop_worker) {
      std::unique_lock lock(box.mutex);
      if (!box.cv.wait_for(lock, std::chrono::seconds(10), [&] { return !box.items.empty(); }))
        return;
      auto [req, r] = std::move(box.items.front());
      box.items.pop_front();
      lock.unlock();
      if (req.path == "/stream") {
        r->start_stream(200, "text/plain");
        for (char ch : req.body)
          r->write(std::string(1, ch));
        r->finish();
      } else {
        r->send(200, "text/plain", "re: " + req.body);
      }
      ++answered;
    }
  });

  std::vector<std::unique_ptr<client>> conns;
  for (int t = 0; t < clients; ++t) {
    auto c = client::connect("127.0.0.1", (*s)->port(), std::chrono::seconds(10));
    ASSERT_TRUE(c) << c.err().to_string();
    conns.push_back(std::move(c).value());
  }
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      auto* c = &conns[static_cast<std::size_t>(t)];
      for (int i = 0; i < requests_per_client; ++i) {
        auto body = std::to_string(t) + "-" + std::to_string(i);
        if (i % 2 == 0) {
          auto r = (*c)->request("POST", "/once", body);
          if (!r || r->status != 200 || r->body != "re: " + body)
            ++wrong;
        } else {
          std::string got;
          auto r = (*c)->stream("POST", "/stream", body, {}, [&](std::string_view p) {
            got += p;
            return true;
          });
          if (!r || got != body)
            ++wrong;
        }
      }
    });
  }
  for (auto& t : threads)
    t.join();
  stop_worker = true;
  worker.join();
  EXPECT_EQ(wrong.load(), 0);
  // Every client kept its one connection throughout.
  EXPECT_EQ((*s)->open_connections(), static_cast<std::size_t>(clients));
}

} // namespace
} // namespace thaw::http
