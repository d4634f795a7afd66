#include "gpu/host/host_device.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>
#include <vector>

namespace thaw {
namespace {

TEST(HostDevice, DescribesItself) {
  host_device dev{64ull << 20};
  EXPECT_EQ(dev.kind(), device_kind::host);
  EXPECT_EQ(dev.name(), "host");
  EXPECT_STREQ(to_string(dev.kind()), "host");
  EXPECT_EQ(dev.memory_bytes(), 64ull << 20);
  host_device whole;
  EXPECT_EQ(whole.memory_bytes(), physical_memory_bytes());
  EXPECT_GT(whole.memory_bytes(), 0u);
}

TEST(HostDevice, BuffersAreAlignedWritableAndAccounted) {
  host_device dev{64ull << 20};
  for (std::size_t bytes : {std::size_t{1}, std::size_t{4097}, std::size_t{3} << 20}) {
    auto buf = dev.allocate(bytes);
    ASSERT_TRUE(buf) << buf.err().to_string();
    EXPECT_EQ((*buf)->size(), bytes);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>((*buf)->data()) % 4096, 0u);
    std::memset((*buf)->data(), 0xab, bytes);
    EXPECT_EQ(static_cast<unsigned char*>((*buf)->data())[bytes - 1], 0xab);
    EXPECT_GE(dev.allocated_bytes(), bytes);
  }
  EXPECT_EQ(dev.allocated_bytes(), 0u);
}

TEST(HostDevice, AllocationBeyondTheLimitIsResourceExhausted) {
  host_device dev{8ull << 20};
  auto a = dev.allocate(6ull << 20);
  ASSERT_TRUE(a);
  auto b = dev.allocate(4ull << 20);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.err().code, errc::resource_exhausted);
  EXPECT_NE(b.err().message.find(std::to_string(4ull << 20)), std::string::npos) << b.err().message;
  auto zero = dev.allocate(0);
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.err().code, errc::invalid_argument);
  a->reset();
  auto c = dev.allocate(4ull << 20);
  EXPECT_TRUE(c) << "freed bytes must be reusable";
}

TEST(HostDevice, FreedBuffersAreReusedButNeverCrowdOutLiveOnes) {
  host_device dev{64ull << 20};
  void* first = nullptr;
  {
    auto a = dev.allocate(4ull << 20);
    ASSERT_TRUE(a);
    first = (*a)->data();
  }
  EXPECT_EQ(dev.allocated_bytes(), 0u);
  EXPECT_EQ(dev.retained_bytes(), 4ull << 20);
  auto again = dev.allocate((4ull << 20) - 100); // same 2 MiB-rounded size: reused
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)->data(), first);
  EXPECT_EQ(dev.retained_bytes(), 0u);
  again->reset();
  // Retained memory does not count against the limit: nearly all of it can still be allocated.
  auto big = dev.allocate(62ull << 20);
  ASSERT_TRUE(big) << big.err().to_string();
  EXPECT_EQ(dev.retained_bytes(), 0u);
  big->reset(); // larger than the retention cap (a quarter of the limit): unmapped
  EXPECT_EQ(dev.retained_bytes(), 0u);
  ASSERT_TRUE(dev.allocate(4096));
  EXPECT_EQ(dev.retained_bytes(), 4096u);
  dev.trim();
  EXPECT_EQ(dev.retained_bytes(), 0u);
}

TEST(HostDevice, BufferMayOutliveTheDevice) {
  std::unique_ptr<device_buffer> buf;
  {
    host_device dev{1ull << 20};
    auto b = dev.allocate(4096);
    ASSERT_TRUE(b);
    buf = std::move(*b);
  }
  std::memset(buf->data(), 1, buf->size());
  buf.reset();
}

TEST(HostCopyEngine, CopiesLandAtTheirOffsetsAndEveryCompletionRunsOnce) {
  host_device dev;
  constexpr std::size_t piece = 64 << 10;
  constexpr std::size_t pieces = 64;
  auto buf = dev.allocate(piece * pieces);
  ASSERT_TRUE(buf);
  std::vector<std::uint32_t> src(piece * pieces / 4);
  std::iota(src.begin(), src.end(), 7u);

  auto engine = dev.make_copy_engine(3);
  std::atomic<int> ok{0};
  std::mutex m;
  std::set<std::thread::id> threads;
  for (std::size_t i = 0; i < pieces; ++i) {
    // Submit in reverse so that the result cannot be right by accident of ordering.
    const std::size_t k = pieces - 1 - i;
    engine->submit(**buf, k * piece, reinterpret_cast<const std::byte*>(src.data()) + k * piece,
                   piece, [&](status s) {
                     if (s)
                       ++ok;
                     std::lock_guard lock{m};
                     threads.insert(std::this_thread::get_id());
                   });
  }
  engine->drain();
  EXPECT_EQ(ok.load(), static_cast<int>(pieces));
  EXPECT_EQ(std::memcmp((*buf)->data(), src.data(), piece * pieces), 0);
  EXPECT_EQ(threads.count(std::this_thread::get_id()), 0u) << "completions run on engine threads";
}

TEST(HostCopyEngine, LargeUnalignedCopiesAreExact) {
  // Large copies take the streaming path; odd offsets and lengths exercise its head and tail.
  host_device dev;
  constexpr std::size_t n = (1 << 20) + 13;
  auto buf = dev.allocate(n + 64);
  ASSERT_TRUE(buf);
  std::memset((*buf)->data(), 0xee, n + 64);
  std::vector<std::uint8_t> src(n + 3);
  for (std::size_t i = 0; i < src.size(); ++i)
    src[i] = static_cast<std::uint8_t>(i * 131 + 7);
  auto engine = dev.make_copy_engine(2);
  status result = make_error(errc::internal, "not run");
  engine->submit(**buf, 5, src.data() + 3, n, [&](status s) { result = std::move(s); });
  engine->drain();
  ASSERT_TRUE(result);
  const auto* out = static_cast<const std::uint8_t*>((*buf)->data());
  EXPECT_EQ(out[4], 0xee);
  EXPECT_EQ(std::memcmp(out + 5, src.data() + 3, n), 0);
  EXPECT_EQ(out[5 + n], 0xee);
}

TEST(HostCopyEngine, CopyOutsideTheBufferFailsWithoutWriting) {
  host_device dev;
  auto buf = dev.allocate(8192);
  ASSERT_TRUE(buf);
  std::memset((*buf)->data(), 0, 8192);
  std::vector<std::byte> src(8192, std::byte{0x5a});
  auto engine = dev.make_copy_engine(2);
  std::vector<status> results(3);
  engine->submit(**buf, 4096, src.data(), 4097, [&](status s) { results[0] = std::move(s); });
  engine->submit(**buf, 8193, src.data(), 0, [&](status s) { results[1] = std::move(s); });
  engine->submit(**buf, ~0ull - 10, src.data(), 100, [&](status s) { results[2] = std::move(s); });
  engine->drain();
  for (const auto& r : results) {
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, errc::invalid_argument);
  }
  const auto* bytes = static_cast<const unsigned char*>((*buf)->data());
  EXPECT_EQ(std::count(bytes, bytes + 8192, 0), 8192);
}

TEST(HostCopyEngine, DrainWaitsForSlowCompletionsAndEngineCanBeReused) {
  host_device dev;
  auto buf = dev.allocate(4096);
  ASSERT_TRUE(buf);
  std::vector<std::byte> src(4096, std::byte{1});
  auto engine = dev.make_copy_engine(0); // clamped to one lane
  std::atomic<int> finished{0};
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 4; ++i)
      engine->submit(**buf, 0, src.data(), 4096, [&](status) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        ++finished;
      });
    engine->drain();
    EXPECT_EQ(finished.load(), 4 * (round + 1));
  }
}

} // namespace
} // namespace thaw
