// The CUDA device. CudaDevice.ReportsWhetherAGpuIsPresent runs everywhere (in CI it checks the
// no-GPU path); the others need a GPU and report skipped without one.
#include "gpu/cuda/cuda_device.hpp"

#include "tests/support/cuda_test.hpp"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <vector>

namespace thaw::cuda {
namespace {

constexpr std::uint64_t mib = 1ull << 20;

std::unique_ptr<cuda_device> open_gpu(std::uint64_t limit = 0) {
  device_options opt;
  opt.memory_limit = limit;
  auto dev = make_cuda_device(opt);
  EXPECT_TRUE(dev) << dev.err().to_string();
  return dev ? std::move(dev).value() : nullptr;
}

/// `n` bytes of a pattern that differs per `seed`, so that a misplaced range shows.
std::vector<std::byte> pattern(std::size_t n, std::uint32_t seed) {
  std::vector<std::byte> v(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::byte>(x >> 24);
  }
  return v;
}

std::vector<std::byte> copy_back(device_buffer& buf) {
  std::vector<std::byte> out(buf.size());
  EXPECT_EQ(cudaMemcpy(out.data(), buf.data(), buf.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

TEST(CudaDevice, ReportsWhetherAGpuIsPresent) {
  if (device_count() == 0) {
    const std::string why = unavailable_reason();
    EXPECT_FALSE(why.empty());
    auto dev = make_cuda_device({});
    ASSERT_FALSE(dev);
    EXPECT_EQ(dev.err().code, errc::device_error);
    EXPECT_NE(dev.err().message.find(why), std::string::npos) << dev.err().message;
    EXPECT_NE(dev.err().message.find("cuda:0"), std::string::npos) << dev.err().message;
  } else {
    EXPECT_GT(device_count(), 0);
    EXPECT_EQ(unavailable_reason(), "");
  }
  device_options negative;
  negative.ordinal = -1;
  auto bad = make_cuda_device(negative);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.err().code, errc::invalid_argument);
}

TEST(CudaDevice, DescribesItself) {
  THAW_SKIP_WITHOUT_GPU();
  auto dev = open_gpu();
  ASSERT_TRUE(dev);
  EXPECT_EQ(dev->kind(), device_kind::cuda);
  EXPECT_EQ(dev->name().rfind("cuda:0 (", 0), 0u) << dev->name();
  EXPECT_EQ(dev->ordinal(), 0);
  EXPECT_TRUE(dev->make_current());
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  EXPECT_GT(dev->memory_bytes(), 0u);
  EXPECT_LT(dev->memory_bytes(), total_bytes);

  device_options too_many;
  too_many.ordinal = device_count();
  auto missing = make_cuda_device(too_many);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.err().code, errc::device_error);
  device_options too_big;
  too_big.memory_limit = static_cast<std::uint64_t>(total_bytes) + 1;
  auto over = make_cuda_device(too_big);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.err().code, errc::invalid_argument);
}

TEST(CudaDevice, AllocatesFreesAndReusesBlocks) {
  THAW_SKIP_WITHOUT_GPU();
  auto dev = open_gpu(256 * mib);
  ASSERT_TRUE(dev);
  EXPECT_EQ(dev->allocated_bytes(), 0u);
  for (std::size_t bytes : {std::size_t{1}, std::size_t{4097}, std::size_t{3} * mib}) {
    auto buf = dev->allocate(bytes);
    ASSERT_TRUE(buf) << buf.err().to_string();
    EXPECT_EQ((*buf)->size(), bytes);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>((*buf)->data()) % 4096, 0u);
    EXPECT_GE(dev->allocated_bytes(), bytes);
  }
  EXPECT_EQ(dev->allocated_bytes(), 0u);
  EXPECT_EQ(dev->cached_bytes(), 4096u + 8192u + 4 * mib) << "rounded to 4 KiB and to 2 MiB";

  // The same size is handed the same block, with no new memory held.
  auto a = dev->allocate(3 * mib + 5);
  ASSERT_TRUE(a);
  void* const first = (*a)->data();
  a->reset();
  const std::uint64_t cached = dev->cached_bytes();
  auto b = dev->allocate(3 * mib);
  ASSERT_TRUE(b);
  EXPECT_EQ((*b)->data(), first);
  EXPECT_EQ(dev->allocated_bytes(), 4 * mib);
  EXPECT_EQ(dev->cached_bytes(), cached - 4 * mib);

  auto zero = dev->allocate(0);
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.err().code, errc::invalid_argument);

  // Sizes that would overflow the rounding are refused, not handed out as a null buffer.
  for (std::size_t huge : {SIZE_MAX, SIZE_MAX - (2 * mib), SIZE_MAX - 4096}) {
    auto h = dev->allocate(huge);
    ASSERT_FALSE(h) << "a buffer of " << huge << " bytes at " << (h ? (*h)->data() : nullptr);
    EXPECT_EQ(h.err().code, errc::resource_exhausted);
  }
  EXPECT_EQ(dev->allocated_bytes(), 4 * mib);

  b->reset();
  dev->trim();
  EXPECT_EQ(dev->cached_bytes(), 0u);
  EXPECT_EQ(dev->allocated_bytes(), 0u);
}

TEST(CudaDevice, AllocationBeyondTheLimitIsResourceExhausted) {
  THAW_SKIP_WITHOUT_GPU();
  auto dev = open_gpu(64 * mib);
  ASSERT_TRUE(dev);
  auto a = dev->allocate(40 * mib);
  ASSERT_TRUE(a);
  auto b = dev->allocate(30 * mib);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.err().code, errc::resource_exhausted);
  const std::string& msg = b.err().message;
  EXPECT_NE(msg.find(std::to_string(30 * mib)), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(40 * mib)), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(64 * mib)), std::string::npos) << msg;

  // Kept blocks give way to a live buffer: 40 MiB kept, 50 MiB asked for.
  a->reset();
  EXPECT_EQ(dev->cached_bytes(), 40 * mib);
  auto c = dev->allocate(50 * mib);
  ASSERT_TRUE(c) << c.err().to_string();
  EXPECT_EQ(dev->cached_bytes(), 0u);
}

TEST(CudaDevice, BuffersMayOutliveTheDevice) {
  THAW_SKIP_WITHOUT_GPU();
  auto dev = open_gpu(64 * mib);
  ASSERT_TRUE(dev);
  auto buf = dev->allocate(mib);
  ASSERT_TRUE(buf);
  dev.reset();
  EXPECT_EQ(cudaMemset((*buf)->data(), 0, (*buf)->size()), cudaSuccess);
  buf->reset(); // returns to the state, which frees it as the last owner
}

TEST(CudaDevice, RegistersAndUnregistersHostMemory) {
  THAW_SKIP_WITHOUT_GPU();
  auto dev = open_gpu(64 * mib);
  ASSERT_TRUE(dev);
  const std::size_t bytes = 8 * mib;
  void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  ASSERT_TRUE(dev->register_host_memory(mem, bytes));
  cudaPointerAttributes attr{};
  ASSERT_EQ(cudaPointerGetAttributes(&attr, mem), cudaSuccess);
  EXPECT_EQ(attr.type, cudaMemoryTypeHost);
  // Registering twice is the driver's error, reported, not fatal.
  auto again = dev->register_host_memory(mem, bytes);
  EXPECT_FALSE(again);
  dev->unregister_host_memory(mem);
  ASSERT_EQ(cudaPointerGetAttributes(&attr, mem), cudaSuccess);
  EXPECT_EQ(attr.type, cudaMemoryTypeUnregistered);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "no stale error left behind";
  ::munmap(mem, bytes);
}

/// Many copies into one buffer over `lanes` lanes, from pinned and pageable memory; every
/// completion runs once and the device holds exactly the source.
void copies_land(int lanes) {
  auto dev = open_gpu(256 * mib);
  ASSERT_TRUE(dev);
  constexpr std::size_t piece = 256 << 10;
  constexpr std::size_t pieces = 64;
  constexpr std::size_t total = piece * pieces;
  auto buf = dev->allocate(total);
  ASSERT_TRUE(buf);
  ASSERT_EQ(cudaMemset((*buf)->data(), 0, total), cudaSuccess);

  // First half from registered memory, second half from an ordinary vector.
  const auto want = pattern(total, static_cast<std::uint32_t>(lanes));
  void* pinned = ::mmap(nullptr, total / 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
  ASSERT_NE(pinned, MAP_FAILED);
  std::memcpy(pinned, want.data(), total / 2);
  ASSERT_TRUE(dev->register_host_memory(pinned, total / 2));
  const std::vector<std::byte> pageable(want.begin() + total / 2, want.end());

  auto engine = dev->make_copy_engine(lanes);
  std::vector<std::atomic<int>> calls(pieces + 1);
  std::mutex errors_mutex;
  std::vector<std::string> errors;
  for (std::size_t i = 0; i < pieces; ++i) {
    const std::size_t off = i * piece;
    const std::byte* src = off < total / 2 ? static_cast<const std::byte*>(pinned) + off
                                           : pageable.data() + (off - total / 2);
    engine->submit(**buf, off, src, piece, [&, i](status st) {
      calls[i].fetch_add(1);
      if (!st) {
        std::lock_guard lock{errors_mutex};
        errors.push_back(st.err().to_string());
      }
    });
  }
  // Outside the buffer: invalid_argument and nothing written.
  status outside;
  engine->submit(**buf, total - 16, want.data(), 32, [&](status st) {
    calls[pieces].fetch_add(1);
    outside = std::move(st);
  });
  engine->drain();
  for (std::size_t i = 0; i <= pieces; ++i)
    EXPECT_EQ(calls[i].load(), 1) << "completion " << i;
  EXPECT_TRUE(errors.empty()) << errors.front();
  ASSERT_FALSE(outside);
  EXPECT_EQ(outside.err().code, errc::invalid_argument);
  EXPECT_NE(outside.err().message.find("outside"), std::string::npos) << outside.err().message;
  EXPECT_TRUE(copy_back(**buf) == want) << "device bytes differ from the source";

  // An empty copy completes too; the engine can be drained again and destroyed.
  int empty_calls = 0;
  engine->submit(**buf, total, want.data(), 0, [&](status st) {
    EXPECT_TRUE(st);
    ++empty_calls;
  });
  engine.reset();
  EXPECT_EQ(empty_calls, 1);
  dev->unregister_host_memory(pinned);
  ::munmap(pinned, total / 2);
}

TEST(CudaDevice, CopyEngineWithOneLane) {
  THAW_SKIP_WITHOUT_GPU();
  copies_land(1);
}

TEST(CudaDevice, CopyEngineWithTwoLanes) {
  THAW_SKIP_WITHOUT_GPU();
  copies_land(2);
}

TEST(CudaDevice, CopyEngineWithFourLanes) {
  THAW_SKIP_WITHOUT_GPU();
  copies_land(4);
}

TEST(CudaDevice, CopiesFromManyThreadsAndFromCompletions) {
  THAW_SKIP_WITHOUT_GPU();
  auto dev = open_gpu(256 * mib);
  ASSERT_TRUE(dev);
  constexpr std::size_t piece = 64 << 10;
  constexpr std::size_t per_thread = 32;
  constexpr int threads = 4;
  constexpr std::size_t total = piece * per_thread * threads * 2;
  auto buf = dev->allocate(total);
  ASSERT_TRUE(buf);
  const auto want = pattern(total, 7);
  auto engine = dev->make_copy_engine(3);
  std::atomic<int> done{0};
  std::vector<std::thread> submitters;
  for (int t = 0; t < threads; ++t)
    submitters.emplace_back([&, t] {
      for (std::size_t i = 0; i < per_thread; ++i) {
        const std::size_t off = (static_cast<std::size_t>(t) * per_thread + i) * piece * 2;
        // Each completion submits the piece after it: the loader recycles and resubmits from
        // completions, so submit() must not deadlock on an engine thread.
        engine->submit(**buf, off, want.data() + off, piece, [&, off](status st) {
          EXPECT_TRUE(st) << st.err().to_string();
          done.fetch_add(1);
          engine->submit(**buf, off + piece, want.data() + off + piece, piece,
                         [&](status s2) {
                           EXPECT_TRUE(s2) << s2.err().to_string();
                           done.fetch_add(1);
                         });
        });
      }
    });
  for (auto& t : submitters)
    t.join();
  // A completion's submit counts before the completion itself is done, so one drain covers both.
  engine->drain();
  EXPECT_EQ(done.load(), static_cast<int>(per_thread) * threads * 2);
  EXPECT_TRUE(copy_back(**buf) == want);
}

} // namespace
} // namespace thaw::cuda
