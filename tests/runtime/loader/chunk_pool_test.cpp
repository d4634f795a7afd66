#include "runtime/loader/chunk_pool.hpp"

#include "gpu/host/host_device.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

namespace thaw {
namespace {

/// A host device that records what is registered with it, as the CUDA device pins it.
class recording_device final : public device {
public:
  device_kind kind() const noexcept override { return device_kind::host; }
  std::string name() const override { return "recording"; }
  std::uint64_t memory_bytes() const noexcept override { return inner_.memory_bytes(); }
  expected<std::unique_ptr<device_buffer>> allocate(std::size_t bytes) override {
    return inner_.allocate(bytes);
  }
  std::unique_ptr<copy_engine> make_copy_engine(int lanes) override {
    return inner_.make_copy_engine(lanes);
  }
  status register_host_memory(void* ptr, std::size_t bytes) override {
    registered = ptr;
    registered_bytes = bytes;
    return {};
  }
  void unregister_host_memory(void* ptr) noexcept override { unregistered = ptr; }

  void* registered = nullptr;
  std::size_t registered_bytes = 0;
  void* unregistered = nullptr;

private:
  host_device inner_;
};

TEST(ChunkPool, RejectsBadSizesNamingThem) {
  auto odd = chunk_pool::create(1 << 20, 5000);
  ASSERT_FALSE(odd);
  EXPECT_EQ(odd.err().code, errc::invalid_argument);
  EXPECT_NE(odd.err().message.find("5000"), std::string::npos) << odd.err().message;
  auto zero = chunk_pool::create(1 << 20, 0);
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.err().code, errc::invalid_argument);
  auto tiny = chunk_pool::create(4096, 8192);
  ASSERT_FALSE(tiny);
  EXPECT_EQ(tiny.err().code, errc::invalid_argument);
}

TEST(ChunkPool, HandsOutDistinctAlignedChunksAndCountsThemBack) {
  // 1 MiB + 100 bytes: the remainder is not a chunk.
  auto pool = chunk_pool::create((1 << 20) + 100, 64 << 10);
  ASSERT_TRUE(pool) << pool.err().to_string();
  auto& p = **pool;
  EXPECT_EQ(p.total_chunks(), 16u);
  EXPECT_EQ(p.free_chunks(), 16u);
  EXPECT_EQ(p.capacity_bytes(), 1u << 20);
  EXPECT_EQ(p.chunks_for(1), 1u);
  EXPECT_EQ(p.chunks_for(64 << 10), 1u);
  EXPECT_EQ(p.chunks_for((64 << 10) + 1), 2u);
  {
    std::vector<chunk_pool::handle> held;
    std::set<std::uint32_t> indices;
    for (int i = 0; i < 16; ++i) {
      auto h = p.try_acquire();
      ASSERT_TRUE(h);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(h->data()) % 4096, 0u);
      EXPECT_EQ(h->size(), 64u << 10);
      std::memset(h->data(), i, h->size()); // writable, and no overlap (checked below)
      indices.insert(h->index());
      held.push_back(std::move(*h));
    }
    EXPECT_EQ(indices.size(), 16u);
    EXPECT_EQ(p.free_chunks(), 0u);
    EXPECT_FALSE(p.try_acquire());
    for (int i = 0; i < 16; ++i)
      EXPECT_EQ(static_cast<int>(held[static_cast<std::size_t>(i)].data()[100]), i);
    held[3].reset();
    EXPECT_EQ(p.free_chunks(), 1u);
  }
  EXPECT_EQ(p.free_chunks(), 16u);
}

TEST(ChunkPool, MultiChunkAcquireIsAllOrNothing) {
  auto pool = chunk_pool::create(8 * 4096, 4096);
  ASSERT_TRUE(pool);
  auto& p = **pool;
  auto five = p.try_acquire(5);
  ASSERT_TRUE(five);
  EXPECT_EQ(five->size(), 5u);
  EXPECT_EQ(p.free_chunks(), 3u);
  EXPECT_FALSE(p.try_acquire(4));
  EXPECT_EQ(p.free_chunks(), 3u) << "a refused request takes nothing";
  auto three = p.try_acquire(3);
  ASSERT_TRUE(three);
  EXPECT_EQ(p.free_chunks(), 0u);
  five.reset();
  three.reset();
  EXPECT_EQ(p.free_chunks(), 8u);
}

TEST(ChunkPool, MultiChunkAcquirePrefersConsecutiveChunks) {
  auto pool = chunk_pool::create(10 * 4096, 4096);
  ASSERT_TRUE(pool);
  auto& p = **pool;
  auto consecutive = [](const std::vector<chunk_pool::handle>& hs) {
    for (std::size_t k = 1; k < hs.size(); ++k)
      if (hs[k].index() != hs[0].index() + k || hs[k].data() != hs[0].data() + k * 4096)
        return false;
    return true;
  };
  auto a = p.try_acquire(3);
  ASSERT_TRUE(a && consecutive(*a));
  // Free chunks 1 and 3..9 (0 and 2 stay held): a run of 4 exists only from 3 on.
  std::vector<chunk_pool::handle> singles;
  for (int i = 0; i < 7; ++i)
    singles.push_back(*p.try_acquire());
  std::vector<chunk_pool::handle> held;
  for (auto& h : *a)
    if (h.index() != 1)
      held.push_back(std::move(h));
  a.reset();
  singles.clear();
  ASSERT_EQ(p.free_chunks(), 8u);
  auto four = p.try_acquire(4);
  ASSERT_TRUE(four);
  EXPECT_TRUE(consecutive(*four));
  EXPECT_EQ((*four)[0].index(), 3u);
  ASSERT_EQ(p.free_chunks(), 4u); // 1 and 7..9

  auto scattered = p.try_acquire(4); // no run of 4 is left: any four free chunks
  ASSERT_TRUE(scattered);
  EXPECT_FALSE(consecutive(*scattered));
  EXPECT_EQ(p.free_chunks(), 0u);
}

TEST(ChunkPool, HandlesMoveWithoutDoubleRelease) {
  auto pool = chunk_pool::create(2 * 4096, 4096);
  ASSERT_TRUE(pool);
  auto& p = **pool;
  auto a = p.try_acquire();
  ASSERT_TRUE(a);
  chunk_pool::handle moved = std::move(*a);
  EXPECT_FALSE(*a);
  EXPECT_TRUE(moved);
  auto b = p.try_acquire();
  ASSERT_TRUE(b);
  moved = std::move(*b); // releases the first chunk
  EXPECT_EQ(p.free_chunks(), 1u);
  moved.reset();
  moved.reset();
  EXPECT_EQ(p.free_chunks(), 2u);
}

TEST(ChunkPool, RegistersItsMemoryWithTheDevice) {
  recording_device dev;
  {
    auto pool = chunk_pool::create(4 << 20, 1 << 20, &dev);
    ASSERT_TRUE(pool);
    auto h = (*pool)->try_acquire();
    ASSERT_TRUE(h);
    ASSERT_EQ(h->index(), 0u); // a fresh pool hands out its first chunk first
    EXPECT_EQ(dev.registered, static_cast<void*>(h->data()));
    EXPECT_GE(dev.registered_bytes, 4u << 20);
  }
  EXPECT_EQ(dev.unregistered, dev.registered);
}

TEST(ChunkPool, ConcurrentAcquireAndReleaseLoseNothing) {
  auto pool = chunk_pool::create(32 * 4096, 4096);
  ASSERT_TRUE(pool);
  auto& p = **pool;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&p] {
      for (int i = 0; i < 2000; ++i) {
        auto some = p.try_acquire(3);
        auto one = p.try_acquire();
      }
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(p.free_chunks(), 32u);
}

TEST(ChunkPool, UsesTheMemoryItIsGivenAndLeavesItToItsOwner) {
  constexpr std::size_t bytes = 8 * 4096;
  auto* region = static_cast<std::byte*>(std::aligned_alloc(4096, bytes + 4096));
  ASSERT_NE(region, nullptr);
  std::uint64_t asked = 0;
  {
    auto pool = chunk_pool::create(bytes, 4096, nullptr,
                                   [&](std::uint64_t n) -> expected<std::span<std::byte>> {
                                     asked = n;
                                     return std::span<std::byte>{region, bytes + 4096};
                                   });
    ASSERT_TRUE(pool) << pool.err().to_string();
    EXPECT_EQ(asked, bytes);
    EXPECT_EQ((*pool)->total_chunks(), 8u);
    auto c = (*pool)->try_acquire(8);
    ASSERT_TRUE(c);
    for (const auto& h : *c) {
      EXPECT_GE(h.data(), region);
      EXPECT_LT(h.data(), region + bytes);
      std::memset(h.data(), 0x5a, h.size());
    }
  }
  // The pool is gone and the region is still the owner's to use (and free).
  EXPECT_EQ(region[bytes - 1], std::byte{0x5a});
  std::free(region);

  // A source that gives too little, or fails, fails the pool naming why.
  auto short_source = chunk_pool::create(bytes, 4096, nullptr, [&](std::uint64_t) {
    return expected<std::span<std::byte>>{std::span<std::byte>{}};
  });
  ASSERT_FALSE(short_source);
  EXPECT_NE(short_source.err().message.find("memory source"), std::string::npos);
  auto failing = chunk_pool::create(bytes, 4096, nullptr, [&](std::uint64_t) {
    return expected<std::span<std::byte>>{make_error(errc::io_error, "no shared memory")};
  });
  ASSERT_FALSE(failing);
  EXPECT_EQ(failing.err().code, errc::io_error);
}

} // namespace
} // namespace thaw
