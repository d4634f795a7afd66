// data_plane: two planes on 127.0.0.1 (in one process, and across a fork) publish, describe and
// fetch with real UCX endpoints and RMA gets.

#include "transport/data_plane.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace thaw::transport {
namespace {

constexpr std::size_t MiB = 1u << 20;

// A deterministic byte pattern, distinct per segment, so a byte in the wrong place shows.
std::byte pattern(std::size_t segment, std::size_t i) {
  return static_cast<std::byte>(((i * 2654435761u) >> 13) ^ (segment * 77 + 1));
}

// A node's chunk pool: one registered buffer cut into segments.
struct pool {
  std::vector<std::byte> bytes;
  std::vector<std::span<std::byte>> segments;

  pool(std::size_t total, const std::vector<std::size_t>& sizes) : bytes(total) {
    std::size_t off = 4096; // segments need not start at the region's start
    for (auto n : sizes) {
      segments.emplace_back(bytes.data() + off, n);
      off += n + 4096;
    }
  }
  void fill() {
    for (std::size_t s = 0; s < segments.size(); ++s)
      for (std::size_t i = 0; i < segments[s].size(); ++i)
        segments[s][i] = pattern(s, i);
  }
  [[nodiscard]] std::vector<std::span<const std::byte>> const_segments() const {
    return {segments.begin(), segments.end()};
  }
  [[nodiscard]] bool holds_pattern() const {
    for (std::size_t s = 0; s < segments.size(); ++s)
      for (std::size_t i = 0; i < segments[s].size(); ++i)
        if (segments[s][i] != pattern(s, i))
          return false;
    return true;
  }
};

const std::vector<std::size_t> sizes = {3 * MiB + 17, 1 * MiB, 2 * MiB - 5};

std::unique_ptr<data_plane> start_plane(data_plane_options o = {}) {
  if (o.piece_bytes == data_plane_options{}.piece_bytes)
    o.piece_bytes = 256 * 1024; // several pieces per segment
  auto p = data_plane::start(o);
  EXPECT_TRUE(p) << p.err().to_string();
  return p ? std::move(*p) : nullptr;
}

class data_plane_pair : public ::testing::Test {
protected:
  void SetUp() override {
    server = start_plane();
    client = start_plane();
    ASSERT_TRUE(server && client);
    ASSERT_NE(server->port(), 0);
    ASSERT_NE(server->port(), client->port());
    ASSERT_TRUE(server->register_memory(src.bytes));
    ASSERT_TRUE(client->register_memory(dst.bytes));
    src.fill();
    ASSERT_TRUE(server->publish("model-a", src.const_segments()));
  }

  pool src{8 * MiB, sizes};
  pool dst{8 * MiB, sizes};
  std::unique_ptr<data_plane> server;
  std::unique_ptr<data_plane> client;
};

TEST_F(data_plane_pair, describe_reports_segment_sizes) {
  auto info = client->describe("127.0.0.1", server->port(), "model-a");
  ASSERT_TRUE(info) << info.err().to_string();
  EXPECT_EQ(info->segment_sizes, sizes);
  EXPECT_EQ(info->total_bytes(), 6 * MiB + 12);
}

TEST_F(data_plane_pair, fetch_copies_every_segment_byte_exact_and_reports_each_byte_once) {
  std::vector<std::vector<std::uint8_t>> seen(sizes.size());
  for (std::size_t s = 0; s < sizes.size(); ++s)
    seen[s].assign(sizes[s], 0);
  auto on_piece = [&](std::size_t seg, std::size_t off, std::size_t n) {
    ASSERT_LT(seg, sizes.size());
    ASSERT_LE(off + n, sizes[seg]);
    for (std::size_t i = off; i < off + n; ++i)
      ++seen[seg][i];
    // The piece has landed when reported: a pipelined loader may use it now.
    EXPECT_EQ(dst.segments[seg][off], pattern(seg, off));
    EXPECT_EQ(dst.segments[seg][off + n - 1], pattern(seg, off + n - 1));
  };
  auto s = client->fetch("127.0.0.1", server->port(), "model-a", dst.segments, on_piece);
  ASSERT_TRUE(s) << s.err().to_string();
  EXPECT_TRUE(dst.holds_pattern());
  for (std::size_t seg = 0; seg < sizes.size(); ++seg)
    for (std::size_t i = 0; i < sizes[seg]; ++i)
      ASSERT_EQ(seen[seg][i], 1) << "segment " << seg << " byte " << i;
  // The gap between segments in the destination pool is untouched.
  EXPECT_EQ(dst.bytes[0], std::byte{0});

  // A second fetch over the cached endpoint works as well.
  std::fill(dst.bytes.begin(), dst.bytes.end(), std::byte{0});
  ASSERT_TRUE(client->fetch("127.0.0.1", server->port(), "model-a", dst.segments));
  EXPECT_TRUE(dst.holds_pattern());
}

TEST_F(data_plane_pair, unknown_key_is_not_found_naming_key_and_peer) {
  const std::string peer = "127.0.0.1:" + std::to_string(server->port());
  auto info = client->describe("127.0.0.1", server->port(), "no-such-model");
  ASSERT_FALSE(info);
  EXPECT_EQ(info.err().code, errc::not_found);
  EXPECT_NE(info.err().message.find("no-such-model"), std::string::npos) << info.err().message;
  EXPECT_NE(info.err().message.find(peer), std::string::npos) << info.err().message;
  auto s = client->fetch("127.0.0.1", server->port(), "no-such-model", dst.segments);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::not_found);
  EXPECT_NE(s.err().message.find(peer), std::string::npos) << s.err().message;
}

TEST_F(data_plane_pair, size_or_count_mismatch_is_invalid_argument_and_releases_the_pin) {
  std::vector<std::span<std::byte>> wrong = dst.segments;
  wrong[1] = wrong[1].first(wrong[1].size() - 1);
  auto s = client->fetch("127.0.0.1", server->port(), "model-a", wrong);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::invalid_argument);
  EXPECT_NE(s.err().message.find("segment 1"), std::string::npos) << s.err().message;

  wrong = dst.segments;
  wrong.pop_back();
  s = client->fetch("127.0.0.1", server->port(), "model-a", wrong);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::invalid_argument);
  // The refused fetches left no pin behind: unpublish returns.
  server->unpublish("model-a");
  EXPECT_FALSE(client->describe("127.0.0.1", server->port(), "model-a"));
}

TEST_F(data_plane_pair, unregistered_memory_is_refused) {
  std::vector<std::byte> loose(sizes[0]);
  std::vector<std::span<std::byte>> dests = dst.segments;
  dests[0] = loose;
  auto s = client->fetch("127.0.0.1", server->port(), "model-a", dests);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::invalid_argument);
  EXPECT_NE(s.err().message.find("destination 0"), std::string::npos) << s.err().message;

  auto p = server->publish("loose", {std::span<const std::byte>(loose)});
  ASSERT_FALSE(p);
  EXPECT_EQ(p.err().code, errc::invalid_argument);
  EXPECT_EQ(server->publish("model-a", src.const_segments()).err().code, errc::already_exists);
}

TEST_F(data_plane_pair, fetch_from_a_port_nobody_listens_on_is_an_io_error_not_a_timeout) {
  std::uint16_t dead_port = 0;
  {
    auto gone = start_plane();
    ASSERT_TRUE(gone);
    dead_port = gone->port();
  }
  auto s = client->fetch("127.0.0.1", dead_port, "model-a", dst.segments);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::io_error);
  const std::string peer = "127.0.0.1:" + std::to_string(dead_port);
  EXPECT_NE(s.err().message.find(peer), std::string::npos) << s.err().message;
  // Refused, not waited out: the error comes from the connection, not the reply timeout.
  EXPECT_EQ(s.err().message.find("no reply within"), std::string::npos) << s.err().message;
  // The server we do reach still works through the same plane.
  EXPECT_TRUE(client->fetch("127.0.0.1", server->port(), "model-a", dst.segments));
}

TEST_F(data_plane_pair, unpublish_waits_for_the_fetch_in_flight_then_refuses_new_ones) {
  std::atomic<std::size_t> landed{0};
  std::size_t total_pieces = 0;
  for (auto n : sizes)
    total_pieces += (n + 256 * 1024 - 1) / (256 * 1024);
  std::atomic<std::size_t> landed_when_unpublished{0};
  std::thread unpublisher;
  auto on_piece = [&](std::size_t, std::size_t, std::size_t) {
    if (landed.fetch_add(1) == 0) {
      unpublisher = std::thread([&] {
        server->unpublish("model-a");
        landed_when_unpublished = landed.load();
      });
    }
    // Give a broken unpublish the chance to return early.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  };
  auto s = client->fetch("127.0.0.1", server->port(), "model-a", dst.segments, on_piece);
  ASSERT_TRUE(s) << s.err().to_string();
  unpublisher.join();
  EXPECT_EQ(landed_when_unpublished.load(), total_pieces);
  EXPECT_TRUE(dst.holds_pattern());
  auto again = client->fetch("127.0.0.1", server->port(), "model-a", dst.segments);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.err().code, errc::not_found);
}

TEST_F(data_plane_pair, stop_token_cancels_a_fetch_and_releases_the_pin) {
  std::stop_source before;
  before.request_stop();
  auto s = client->fetch("127.0.0.1", server->port(), "model-a", dst.segments, {},
                         before.get_token());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::cancelled);

  std::stop_source midway;
  std::size_t landed = 0;
  s = client->fetch(
      "127.0.0.1", server->port(), "model-a", dst.segments,
      [&](std::size_t, std::size_t, std::size_t) {
        if (++landed == 2)
          midway.request_stop();
      },
      midway.get_token());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::cancelled);
  EXPECT_LT(landed, 24u); // 24 pieces of 256 KiB make up the entry
  server->unpublish("model-a"); // returns: the cancelled fetch released its pin
}

// The fast path: pools allocated by the data plane (UCX shared memory), fetched twice over the
// cached endpoint and rkeys, and still byte-exact after the server rewrites its copy.
TEST(data_plane, allocated_pools_round_trip) {
  auto server = start_plane();
  auto client = start_plane();
  ASSERT_TRUE(server && client);
  auto src = server->allocate_memory(6 * MiB + 4096);
  auto dst = client->allocate_memory(6 * MiB + 4096);
  ASSERT_TRUE(src && dst);
  ASSERT_FALSE(server->allocate_memory(0));
  std::vector<std::span<const std::byte>> published;
  std::vector<std::span<std::byte>> into;
  std::size_t off = 0;
  for (auto n : sizes) {
    auto seg = src->subspan(off, n);
    for (std::size_t i = 0; i < n; ++i)
      seg[i] = pattern(published.size(), i);
    published.push_back(seg);
    into.push_back(dst->subspan(off, n));
    off += n;
  }
  ASSERT_TRUE(server->publish("pool", published));
  for (int round = 0; round < 2; ++round) {
    std::fill(dst->begin(), dst->end(), std::byte{0});
    ASSERT_TRUE(client->fetch("127.0.0.1", server->port(), "pool", into));
    for (std::size_t s = 0; s < into.size(); ++s)
      for (std::size_t i = 0; i < into[s].size(); ++i)
        ASSERT_EQ(into[s][i], round == 0 ? pattern(s, i) : ~pattern(s, i)) << s << " " << i;
    // The server changes its bytes in place; the next fetch must see the new ones.
    for (auto seg : published)
      for (auto& b : std::span<std::byte>(const_cast<std::byte*>(seg.data()), seg.size()))
        b = ~b;
  }
}

TEST(data_plane, a_peer_with_another_protocol_version_is_refused) {
  data_plane_options future;
  future.protocol_version = data_plane_protocol_version + 1;
  auto server = start_plane(future);
  auto client = start_plane();
  ASSERT_TRUE(server && client);
  auto info = client->describe("127.0.0.1", server->port(), "anything");
  ASSERT_FALSE(info);
  EXPECT_EQ(info.err().code, errc::unsupported);
  EXPECT_NE(info.err().message.find("version"), std::string::npos) << info.err().message;
}

TEST(data_plane, stop_is_idempotent_and_later_calls_fail) {
  auto plane = start_plane();
  ASSERT_TRUE(plane);
  plane->stop();
  plane->stop();
  std::vector<std::byte> mem(4096);
  auto s = plane->register_memory(mem);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::io_error);
}

// A child process serves; the parent fetches across the process boundary (shared memory or
// CMA, as UCX picks), then kills the child and sees an io_error instead of a hang.
TEST(data_plane, two_processes_fetch_then_dead_peer_is_an_io_error) {
  int to_parent[2], to_child[2];
  ASSERT_EQ(::pipe(to_parent), 0);
  ASSERT_EQ(::pipe(to_child), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(to_parent[0]);
    ::close(to_child[1]);
    std::uint16_t port = 0;
    {
      pool src{8 * MiB, sizes};
      src.fill();
      auto plane = data_plane::start({});
      // model-a in registered memory, model-b in memory the plane allocated (shared memory).
      std::vector<std::span<const std::byte>> in_pool;
      if (plane) {
        if (auto mem = (*plane)->allocate_memory(src.bytes.size())) {
          for (std::size_t s = 0; s < src.segments.size(); ++s) {
            auto seg = mem->subspan(src.segments[s].data() - src.bytes.data(), sizes[s]);
            std::copy(src.segments[s].begin(), src.segments[s].end(), seg.begin());
            in_pool.push_back(seg);
          }
        }
      }
      if (plane && !in_pool.empty() && (*plane)->register_memory(src.bytes) &&
          (*plane)->publish("model-a", src.const_segments()) &&
          (*plane)->publish("model-b", in_pool))
        port = (*plane)->port();
      (void)!::write(to_parent[1], &port, sizeof port);
      char c;
      (void)!::read(to_child[0], &c, 1); // wait until the parent is done
    }
    ::_exit(0);
  }
  ::close(to_parent[1]);
  ::close(to_child[0]);
  std::uint16_t port = 0;
  ASSERT_EQ(::read(to_parent[0], &port, sizeof port), static_cast<ssize_t>(sizeof port));
  ASSERT_NE(port, 0);

  auto client = start_plane();
  ASSERT_TRUE(client);
  pool dst{8 * MiB, sizes};
  ASSERT_TRUE(client->register_memory(dst.bytes));
  for (const char* key : {"model-a", "model-b"}) {
    std::fill(dst.bytes.begin(), dst.bytes.end(), std::byte{0});
    auto s = client->fetch("127.0.0.1", port, key, dst.segments);
    EXPECT_TRUE(s) << key << ": " << s.err().to_string();
    EXPECT_TRUE(dst.holds_pattern()) << key;
  }

  ::kill(child, SIGKILL);
  int wstatus = 0;
  ::waitpid(child, &wstatus, 0);
  ::close(to_parent[0]);
  ::close(to_child[1]);
  auto s = client->fetch("127.0.0.1", port, "model-a", dst.segments);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::io_error);
  EXPECT_NE(s.err().message.find("127.0.0.1:" + std::to_string(port)), std::string::npos)
      << s.err().message;
}

} // namespace
TEST(LocalAddressTowards, IsTheSourceAddressTheKernelPicksAndNamesBadHosts) {
  auto loop = local_address_towards("127.0.0.1", 7070);
  ASSERT_TRUE(loop) << loop.err().to_string();
  EXPECT_EQ(*loop, "127.0.0.1");
  auto named = local_address_towards("localhost", 7070);
  ASSERT_TRUE(named) << named.err().to_string();
  EXPECT_TRUE(*named == "127.0.0.1" || *named == "::1") << *named;
  auto bad = local_address_towards("no-such-host.invalid", 7070);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.err().message.find("no-such-host.invalid"), std::string::npos);
}

} // namespace thaw::transport
