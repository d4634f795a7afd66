// The loader onto a CUDA device: the same pipeline as loader_test.cpp, with device memory,
// streams and a pinned chunk pool. Every test needs a GPU and reports skipped without one.
#include "runtime/loader/loader.hpp"

#include "gpu/cuda/cuda_device.hpp"
#include "tests/support/cuda_test.hpp"
#include "tests/support/gated_device.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_checkpoint.hpp"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace thaw {
namespace {


loader_options small_options(std::uint64_t pool_bytes = 32 << 20) {
  loader_options o;
  o.pool_bytes = pool_bytes;
  o.chunk_bytes = 64 << 10;
  o.read_threads = 2;
  o.copy_lanes = 2;
  return o;
}

/// The device buffer's bytes, copied back to the host.
std::vector<std::byte> device_bytes(device_buffer& buf, std::size_t n) {
  std::vector<std::byte> out(n);
  EXPECT_EQ(cudaMemcpy(out.data(), buf.data(), n, cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

class CudaLoader : public ::testing::Test {
protected:
  void SetUp() override {
    THAW_SKIP_WITHOUT_GPU();
    cuda::device_options opt;
    opt.memory_limit = 1ull << 30;
    auto d = cuda::make_cuda_device(opt);
    ASSERT_TRUE(d) << d.err().to_string();
    dev = std::move(*d);
  }

  checkpoint make(std::uint64_t seed, testing::test_model_spec spec = {}) {
    spec.seed = seed;
    auto c = testing::make_test_checkpoint(dir / ("model-" + std::to_string(seed)), spec);
    EXPECT_TRUE(c) << c.err().to_string();
    return std::move(*c);
  }
  std::unique_ptr<loader> make_loader(const loader_options& o, device& d) {
    auto l = loader::create(o, d);
    EXPECT_TRUE(l) << l.err().to_string();
    return l ? std::move(*l) : nullptr;
  }

  testing::temp_dir dir;
  std::unique_ptr<cuda::cuda_device> dev;
};

TEST_F(CudaLoader, TheChunkPoolIsPinned) {
  auto l = make_loader(small_options(), *dev);
  ASSERT_TRUE(l);
  auto chunk = l->pool().try_acquire();
  ASSERT_TRUE(chunk);
  cudaPointerAttributes attr{};
  ASSERT_EQ(cudaPointerGetAttributes(&attr, chunk->data()), cudaSuccess);
  EXPECT_EQ(attr.type, cudaMemoryTypeHost) << "the pool is registered with the GPU";
}

TEST_F(CudaLoader, ColdLoadPutsTheDataFilesOnTheGpuAndTheSecondComesFromDram) {
  testing::test_model_spec spec;
  spec.layers = 6;
  const auto ckpt = make(1, spec);
  ASSERT_GT(ckpt.info().files.size(), 2u);
  const auto want = testing::concatenated_data(ckpt);
  ASSERT_EQ(want.size(), ckpt.total_bytes());
  auto l = make_loader(small_options(), *dev);
  ASSERT_TRUE(l);

  auto h = l->load(ckpt);
  ASSERT_TRUE(h) << h.err().to_string();
  for (std::int32_t layer = -1; layer <= static_cast<std::int32_t>(spec.layers); ++layer) {
    ASSERT_TRUE(h->wait_for_layer(layer)) << layer;
    const auto end = ckpt.layer_end(layer);
    EXPECT_GE(h->loaded_prefix(), end);
    // What the prefix covers is already on the device, whether or not the load has finished.
    auto got = device_bytes(h->buffer(), end);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin())) << "layer " << layer;
  }
  auto s = h->wait();
  ASSERT_TRUE(s) << s.err().to_string();
  EXPECT_EQ(h->mode(), load_mode::copy);
  const auto p = h->progress();
  EXPECT_EQ(p.phase, load_phase::done);
  EXPECT_EQ(p.source, load_source::ssd);
  EXPECT_EQ(p.bytes_done, ckpt.total_bytes());
  EXPECT_EQ(h->loaded_prefix(), ckpt.total_bytes());
  auto first = h->take_buffer();
  ASSERT_TRUE(first);
  EXPECT_EQ((*first)->size(), ckpt.total_bytes());
  EXPECT_TRUE(device_bytes(**first, ckpt.total_bytes()) == want);

  const auto reads = l->stats().ssd_reads;
  auto again = l->load(ckpt);
  ASSERT_TRUE(again && again->wait());
  EXPECT_EQ(again->progress().source, load_source::dram);
  EXPECT_EQ(l->stats().ssd_reads, reads);
  EXPECT_EQ(l->stats().bytes_from_dram, ckpt.total_bytes());
  EXPECT_NE(again->buffer().data(), (*first)->data());
  EXPECT_TRUE(device_bytes(again->buffer(), ckpt.total_bytes()) == want);

  // An in-place load cannot map on a GPU: it copies.
  auto in_place = l->load(ckpt, load_mode::in_place);
  ASSERT_TRUE(in_place && in_place->wait());
  EXPECT_EQ(in_place->mode(), load_mode::copy);
  EXPECT_TRUE(device_bytes(in_place->buffer(), ckpt.total_bytes()) == want);
  EXPECT_EQ(l->map(ckpt), nullptr);
}

TEST_F(CudaLoader, CancelMidLoadStopsAndReturnsEveryChunk) {
  testing::test_model_spec spec;
  spec.vocab = 16000;
  spec.hidden = 128;
  spec.head_dim = 32;
  spec.chunk_bytes = 16 << 10;
  spec.max_file_bytes = 4 << 20;
  const auto ckpt = make(1, spec);
  ASSERT_GT(ckpt.chunks().size(), 900u);
  testing::gated_device gated{*dev};
  auto o = small_options();
  o.chunk_bytes = 16 << 10;
  o.read_threads = 1;
  auto l = make_loader(o, gated);
  ASSERT_TRUE(l);
  auto h = l->load(ckpt);
  ASSERT_TRUE(h);
  gated.wait_for_a_copy(); // reading has begun; nothing can finish yet
  h->cancel();
  gated.open();
  auto s = h->wait();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::cancelled);
  EXPECT_EQ(h->progress().phase, load_phase::cancelled);
  EXPECT_LT(l->stats().ssd_reads, ckpt.chunks().size()) << "reading stopped early";
  EXPECT_EQ(l->pool().free_chunks(), l->pool().total_chunks());

  auto again = l->load(ckpt);
  ASSERT_TRUE(again && again->wait());
  EXPECT_TRUE(device_bytes(again->buffer(), ckpt.total_bytes()) ==
              testing::concatenated_data(ckpt));
}

TEST_F(CudaLoader, ACorruptChunkFailsCleanlyAndTheGpuStaysUsable) {
  const auto good = make(1);
  const auto bad = make(2);
  const auto& f1 = bad.info().files.at(1);
  ASSERT_GT(f1.bytes, 3 * f1.chunk_bytes);
  ASSERT_TRUE(testing::flip_byte(bad.file_path(1), 2 * f1.chunk_bytes + 1234));
  auto l = make_loader(small_options(), *dev);
  ASSERT_TRUE(l);

  auto h = l->load(bad);
  ASSERT_TRUE(h);
  auto s = h->wait();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::corrupt);
  EXPECT_NE(s.err().message.find(f1.name), std::string::npos) << s.err().message;
  EXPECT_EQ(h->progress().phase, load_phase::failed);
  EXPECT_FALSE(l->tier().state_of(bad.content_id())) << "the partial model is dropped";
  EXPECT_EQ(l->pool().free_chunks(), l->pool().total_chunks());
  EXPECT_FALSE(h->take_buffer());

  auto ok = l->load(good);
  ASSERT_TRUE(ok && ok->wait());
  EXPECT_TRUE(device_bytes(ok->buffer(), good.total_bytes()) == testing::concatenated_data(good));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

} // namespace
} // namespace thaw
