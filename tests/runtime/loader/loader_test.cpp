#include "runtime/loader/loader.hpp"

#include "gpu/host/host_device.hpp"
#include "tests/support/gated_device.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_checkpoint.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <thread>

namespace thaw {
namespace {

using namespace std::chrono_literals;

using testing::gated_device;

loader_options small_options(std::uint64_t pool_bytes = 16 << 20) {
  loader_options o;
  o.pool_bytes = pool_bytes;
  o.chunk_bytes = 64 << 10;
  o.read_threads = 2;
  o.copy_lanes = 2;
  return o;
}

/// 16 MB in 16 KiB chunks: about a thousand reads.
testing::test_model_spec many_small_chunks() {
  testing::test_model_spec spec;
  spec.vocab = 16000;
  spec.hidden = 128;
  spec.head_dim = 32;
  spec.chunk_bytes = 16 << 10;
  spec.max_file_bytes = 4 << 20;
  return spec;
}

/// Pool chunks to match many_small_chunks, read one at a time.
loader_options one_reader_small_chunks() {
  auto o = small_options(32 << 20);
  o.chunk_bytes = 16 << 10;
  o.read_threads = 1;
  return o;
}

/// A cancelled load of a many_small_chunks model: it ended cancelled before reading every
/// chunk, and the pool is whole again with nothing of the model left in the tier.
void expect_stopped_early(loader& l, const load_handle& h, const checkpoint& ckpt) {
  auto s = h.wait();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::cancelled);
  EXPECT_EQ(h.progress().phase, load_phase::cancelled);
  EXPECT_LT(l.stats().ssd_reads, ckpt.chunks().size()) << "reading stopped early";
  EXPECT_EQ(l.pool().free_chunks(), l.pool().total_chunks());
  EXPECT_FALSE(l.tier().state_of(ckpt.content_id()));
}

std::vector<std::byte> buffer_bytes(const load_handle& h) {
  const auto* p = static_cast<const std::byte*>(h.buffer().data());
  return {p, p + h.buffer().size()};
}

class Loader : public ::testing::Test {
protected:
  checkpoint make(std::uint64_t seed, testing::test_model_spec spec = {}) {
    spec.seed = seed;
    auto c = testing::make_test_checkpoint(dir / ("model-" + std::to_string(seed)), spec);
    EXPECT_TRUE(c) << c.err().to_string();
    return std::move(*c);
  }
  std::unique_ptr<loader> make_loader(const loader_options& o, device& d) {
    auto l = loader::create(o, d);
    EXPECT_TRUE(l) << l.err().to_string();
    return std::move(*l);
  }

  testing::temp_dir dir;
  host_device dev;
};

TEST_F(Loader, ColdLoadGivesTheDataFilesByteForByte) {
  const auto ckpt = make(1);
  ASSERT_GT(ckpt.info().files.size(), 2u);
  ASSERT_GT(ckpt.chunks().size(), 8u);
  auto l = make_loader(small_options(), dev);
  auto h = l->load(ckpt);
  ASSERT_TRUE(h) << h.err().to_string();
  auto s = h->wait();
  ASSERT_TRUE(s) << s.err().to_string();

  EXPECT_EQ(h->buffer().size(), ckpt.total_bytes());
  EXPECT_EQ(buffer_bytes(*h), testing::concatenated_data(ckpt));
  // Every tensor sits at file_base + offset with the bytes it was written with.
  const auto* base = static_cast<const std::byte*>(h->buffer().data());
  std::uint64_t index = 0;
  for (const auto& t : ckpt.info().tensors) {
    const auto want = testing::test_tensor_bytes(t, 1, index++);
    EXPECT_EQ(std::memcmp(base + ckpt.file_base(t.file) + t.offset, want.data(), t.bytes), 0)
        << t.name;
  }
  const auto p = h->progress();
  EXPECT_EQ(p.phase, load_phase::done);
  EXPECT_EQ(p.source, load_source::ssd);
  EXPECT_EQ(p.bytes_done, ckpt.total_bytes());
  EXPECT_EQ(p.total_bytes, ckpt.total_bytes());
  EXPECT_EQ(h->loaded_prefix(), ckpt.total_bytes());
  const auto st = l->stats();
  EXPECT_EQ(st.ssd_reads, ckpt.chunks().size());
  EXPECT_EQ(st.bytes_read_ssd, ckpt.total_bytes());
  EXPECT_EQ(st.bytes_from_dram, 0u);
  EXPECT_EQ(l->tier().state_of(ckpt.content_id()), dram_state::ready);
}

TEST_F(Loader, ChunksLargerOrSmallerThanPoolChunksLoadTheSame) {
  const auto ckpt = make(3); // 64 KiB checkpoint chunks
  const auto want = testing::concatenated_data(ckpt);
  for (std::uint64_t pool_chunk : {16u << 10, 128u << 10}) {
    auto o = small_options();
    o.chunk_bytes = pool_chunk;
    auto l = make_loader(o, dev);
    for (int round = 0; round < 2; ++round) { // from the SSD, then from DRAM
      auto h = l->load(ckpt);
      ASSERT_TRUE(h);
      ASSERT_TRUE(h->wait()) << pool_chunk;
      EXPECT_EQ(buffer_bytes(*h), want) << pool_chunk;
    }
    EXPECT_EQ(l->stats().ssd_reads, ckpt.chunks().size()) << "one read per chunk, whatever its pieces";
  }
}

TEST_F(Loader, SecondLoadComesFromDramWithoutReading) {
  const auto ckpt = make(2);
  auto l = make_loader(small_options(), dev);
  auto first = l->load(ckpt);
  ASSERT_TRUE(first && first->wait());
  const auto reads = l->stats().ssd_reads;

  auto second = l->load(ckpt);
  ASSERT_TRUE(second);
  ASSERT_TRUE(second->wait());
  EXPECT_EQ(second->progress().source, load_source::dram);
  EXPECT_EQ(l->stats().ssd_reads, reads);
  EXPECT_EQ(l->stats().bytes_from_dram, ckpt.total_bytes());
  EXPECT_EQ(buffer_bytes(*second), testing::concatenated_data(ckpt));
  EXPECT_NE(second->buffer().data(), first->buffer().data());
}

TEST_F(Loader, AnAddedDeviceLoadsFromTheSharedTierThroughItsOwnLanes) {
  // A node's GPUs are further targets of its one loader: the model is read from SSD once, and
  // each device gets a copy from the DRAM tier into its own memory.
  const auto ckpt = make(4);
  auto l = make_loader(small_options(), dev);
  host_device other;
  gated_device unknown;
  ASSERT_TRUE(l->add_device(other));
  ASSERT_TRUE(l->add_device(other)) << "adding a device twice is harmless";

  auto here = l->load(ckpt);
  ASSERT_TRUE(here && here->wait());
  const auto reads = l->stats().ssd_reads;
  const auto held = other.allocated_bytes();
  // An in-place load onto another device copies: only the loader's own memory is the tier.
  auto there = l->load(ckpt, load_mode::in_place, &other);
  ASSERT_TRUE(there) << there.err().to_string();
  ASSERT_TRUE(there->wait());
  EXPECT_EQ(there->mode(), load_mode::copy);
  EXPECT_EQ(there->progress().source, load_source::dram);
  EXPECT_EQ(l->stats().ssd_reads, reads);
  EXPECT_GE(other.allocated_bytes(), held + ckpt.total_bytes()) << "the buffer is the other's";
  EXPECT_EQ(buffer_bytes(*there), testing::concatenated_data(ckpt));

  auto refused = l->load(ckpt, load_mode::copy, &unknown);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.err().code, errc::invalid_argument);
  EXPECT_NE(refused.err().message.find("gated host"), std::string::npos) << refused.err().message;
}

TEST_F(Loader, SmallPoolEvictsLeastRecentlyUsedModels) {
  const auto a = make(1), b = make(2), c = make(3);
  const auto per_model = a.chunks().size() * (64 << 10);
  auto l = make_loader(small_options(2 * per_model), dev);
  auto load = [&](const checkpoint& m) {
    auto h = l->load(m);
    EXPECT_TRUE(h && h->wait());
    EXPECT_EQ(buffer_bytes(*h), testing::concatenated_data(m));
    return h->progress().source;
  };
  EXPECT_EQ(load(a), load_source::ssd);
  EXPECT_EQ(load(b), load_source::ssd);
  EXPECT_EQ(load(a), load_source::dram); // b is now the least recently used
  EXPECT_EQ(load(c), load_source::ssd);  // evicts b
  EXPECT_EQ(l->stats().evictions, 1u);
  EXPECT_EQ(load(a), load_source::dram);
  EXPECT_EQ(load(b), load_source::ssd); // evicts c
  EXPECT_EQ(l->stats().evictions, 2u);
  EXPECT_FALSE(l->tier().state_of(c.content_id()));
  EXPECT_EQ(l->stats().ssd_reads, 4 * a.chunks().size());
}

TEST_F(Loader, ModelBiggerThanThePoolFailsUpFrontAndCachedModelsStay) {
  const auto small = make(1);
  testing::test_model_spec spec;
  spec.vocab = 16000;
  const auto big = make(7, spec);
  auto l = make_loader(small_options(2 << 20), dev);
  ASSERT_LT(l->pool().capacity_bytes(), big.total_bytes());
  auto first = l->load(small);
  ASSERT_TRUE(first && first->wait());

  auto refused = l->load(big);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.err().code, errc::resource_exhausted);
  const auto& msg = refused.err().message;
  EXPECT_NE(msg.find("model-7"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(big.total_bytes())), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(l->pool().capacity_bytes())), std::string::npos) << msg;

  auto again = l->load(small);
  ASSERT_TRUE(again && again->wait());
  EXPECT_EQ(again->progress().source, load_source::dram);
  EXPECT_EQ(l->stats().evictions, 0u);
}

TEST_F(Loader, DeviceTooSmallFailsUpFront) {
  const auto ckpt = make(1);
  host_device tiny{ckpt.total_bytes() / 2};
  auto l = make_loader(small_options(), tiny);
  auto h = l->load(ckpt);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.err().code, errc::resource_exhausted);
  EXPECT_NE(h.err().message.find("model-1"), std::string::npos) << h.err().message;
}

TEST_F(Loader, FlippedByteIsCorruptNamingFileAndChunkAndOthersAreUntouched) {
  const auto good = make(1);
  const auto bad = make(2);
  auto l = make_loader(small_options(), dev);
  auto cached = l->load(good);
  ASSERT_TRUE(cached && cached->wait());
  const auto full = l->pool().free_chunks() + good.chunks().size();

  const auto& f1 = bad.info().files.at(1);
  ASSERT_GT(f1.bytes, 3 * f1.chunk_bytes);
  ASSERT_TRUE(testing::flip_byte(bad.file_path(1), 2 * f1.chunk_bytes + 1234));
  auto h = l->load(bad);
  ASSERT_TRUE(h);
  auto s = h->wait();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::corrupt);
  const auto& msg = s.err().message;
  EXPECT_NE(msg.find(f1.name), std::string::npos) << msg;
  EXPECT_NE(msg.find("chunk 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(2 * f1.chunk_bytes)), std::string::npos) << msg;
  EXPECT_EQ(h->progress().phase, load_phase::failed);
  EXPECT_FALSE(l->tier().state_of(bad.content_id())) << "the partial model is dropped";
  EXPECT_EQ(l->pool().free_chunks() + good.chunks().size(), full);

  auto again = l->load(good);
  ASSERT_TRUE(again && again->wait());
  EXPECT_EQ(again->progress().source, load_source::dram);
}

TEST_F(Loader, TruncatedDataFileFailsNamingIt) {
  const auto ckpt = make(1);
  const auto path = ckpt.file_path(2);
  std::filesystem::resize_file(path, ckpt.info().files[2].bytes - 3 * 4096);
  auto l = make_loader(small_options(), dev);
  auto h = l->load(ckpt);
  ASSERT_TRUE(h);
  auto s = h->wait();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::corrupt);
  EXPECT_NE(s.err().message.find("truncated"), std::string::npos) << s.err().message;
  EXPECT_NE(s.err().message.find(path.filename().string()), std::string::npos) << s.err().message;
  EXPECT_EQ(l->pool().free_chunks(), l->pool().total_chunks());
}

TEST_F(Loader, MissingDataFileIsNotFoundNamingIt) {
  const auto ckpt = make(1);
  std::filesystem::remove(ckpt.file_path(1));
  auto l = make_loader(small_options(), dev);
  auto h = l->load(ckpt);
  ASSERT_TRUE(h);
  auto s = h->wait();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::not_found);
  EXPECT_NE(s.err().message.find(ckpt.info().files[1].name), std::string::npos) << s.err().message;
  EXPECT_EQ(l->stats().ssd_reads, 0u) << "files are opened before anything is read";
  EXPECT_EQ(l->pool().free_chunks(), l->pool().total_chunks());
}

TEST_F(Loader, CancelMidLoadStopsAndReturnsEveryChunk) {
  // About a thousand reads, far more than happen between the first copy and the cancel.
  const auto ckpt = make(1, many_small_chunks());
  ASSERT_GT(ckpt.chunks().size(), 900u);
  gated_device gated;
  auto l = make_loader(one_reader_small_chunks(), gated);
  auto h = l->load(ckpt);
  ASSERT_TRUE(h);
  gated.wait_for_a_copy(); // reading has begun; nothing can finish yet
  h->cancel();
  gated.open();
  expect_stopped_early(*l, *h, ckpt);
  EXPECT_EQ(h->wait().err().code, errc::cancelled) << "wait may be called again";

  // The loader is still usable, and the model loads whole afterwards.
  auto again = l->load(ckpt);
  ASSERT_TRUE(again && again->wait());
  EXPECT_EQ(buffer_bytes(*again), testing::concatenated_data(ckpt));
}

TEST_F(Loader, CancelWhileWaitingForRoomDisturbsNothing) {
  const auto a = make(1), b = make(2);
  auto l = make_loader(small_options(a.chunks().size() * (64 << 10)), dev);
  auto first = l->load(a);
  ASSERT_TRUE(first && first->wait());
  auto pin = l->tier().try_acquire(a); // model a in use
  ASSERT_TRUE(pin);
  auto h = l->load(b);
  ASSERT_TRUE(h);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(h->progress().phase, load_phase::waiting);
  h->cancel();
  auto s = h->wait();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::cancelled);
  EXPECT_EQ(l->tier().state_of(a.content_id()), dram_state::ready);
  EXPECT_EQ(l->stats().ssd_reads, a.chunks().size());

  // Once a is no longer in use, b takes its place.
  auto waiting = l->load(b);
  ASSERT_TRUE(waiting);
  pin->reset();
  ASSERT_TRUE(waiting->wait());
  EXPECT_EQ(buffer_bytes(*waiting), testing::concatenated_data(b));
  EXPECT_EQ(l->stats().evictions, 1u);
}

TEST_F(Loader, ConcurrentLoadsOfTwoModelsBothComplete) {
  const auto a = make(1), b = make(2);
  auto l = make_loader(small_options(), dev);
  auto ha = l->load(a);
  auto hb = l->load(b);
  ASSERT_TRUE(ha && hb);
  ASSERT_TRUE(ha->wait());
  ASSERT_TRUE(hb->wait());
  EXPECT_EQ(buffer_bytes(*ha), testing::concatenated_data(a));
  EXPECT_EQ(buffer_bytes(*hb), testing::concatenated_data(b));
  EXPECT_EQ(l->stats().ssd_reads, a.chunks().size() + b.chunks().size());
}

TEST_F(Loader, ConcurrentLoadsOfOneModelShareOneRead) {
  const auto a = make(1);
  auto l = make_loader(small_options(), dev);
  std::vector<load_handle> loads;
  for (int i = 0; i < 3; ++i) {
    auto h = l->load(a);
    ASSERT_TRUE(h);
    loads.push_back(*h);
  }
  const auto want = testing::concatenated_data(a);
  for (auto& h : loads) {
    ASSERT_TRUE(h.wait());
    EXPECT_EQ(buffer_bytes(h), want);
  }
  EXPECT_EQ(l->stats().ssd_reads, a.chunks().size()) << "exactly one read per chunk";
  EXPECT_EQ(l->stats().bytes_read_ssd, a.total_bytes());
}

TEST_F(Loader, SharedReadFailureFailsEveryLoadSharingIt) {
  const auto a = make(1);
  ASSERT_TRUE(testing::flip_byte(a.file_path(0), 100));
  auto l = make_loader(small_options(), dev);
  auto h1 = l->load(a);
  auto h2 = l->load(a);
  ASSERT_TRUE(h1 && h2);
  for (const auto& h : {*h1, *h2}) {
    auto s = h.wait();
    ASSERT_FALSE(s);
    EXPECT_EQ(s.err().code, errc::corrupt);
    EXPECT_NE(s.err().message.find(a.info().files[0].name), std::string::npos);
  }
  EXPECT_EQ(l->pool().free_chunks(), l->pool().total_chunks());
}

TEST_F(Loader, LoadedPrefixGrowsInLayerOrder) {
  testing::test_model_spec spec;
  spec.layers = 6;
  const auto ckpt = make(1, spec);
  auto l = make_loader(small_options(), dev);
  auto h = l->load(ckpt);
  ASSERT_TRUE(h);
  const auto want = testing::concatenated_data(ckpt);
  std::uint64_t last_prefix = 0;
  std::uint64_t last_end = 0;
  for (std::int32_t layer = -1; layer <= static_cast<std::int32_t>(spec.layers); ++layer) {
    const auto end = ckpt.layer_end(layer);
    EXPECT_GE(end, last_end) << "layers are stored in order";
    last_end = end;
    ASSERT_TRUE(h->wait_for_layer(layer));
    const auto prefix = h->loaded_prefix();
    EXPECT_GE(prefix, end);
    EXPECT_GE(prefix, last_prefix) << "the prefix never shrinks";
    last_prefix = prefix;
    // What the prefix covers is already final, whether or not the load has finished.
    EXPECT_EQ(std::memcmp(h->buffer().data(), want.data(), end), 0) << "layer " << layer;
  }
  EXPECT_LE(last_end, ckpt.total_bytes());
  ASSERT_TRUE(h->wait());
  EXPECT_EQ(h->loaded_prefix(), ckpt.total_bytes());
  auto bad = h->wait_for_layer(99);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.err().code, errc::invalid_argument);
}

TEST_F(Loader, TakeBufferHandsOverOnce) {
  const auto ckpt = make(1);
  auto l = make_loader(small_options(), dev);
  auto h = l->load(ckpt);
  ASSERT_TRUE(h);
  auto buf = h->take_buffer();
  ASSERT_TRUE(buf) << buf.err().to_string();
  EXPECT_EQ((*buf)->size(), ckpt.total_bytes());
  auto twice = h->take_buffer();
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.err().code, errc::invalid_argument);
}

// A host device runs a model ready in the DRAM tier from the tier's own bytes: each data file
// lies whole in consecutive pool chunks when the chunks are the checkpoint's chunk size.
TEST_F(Loader, MapGivesTheTiersOwnBytesFileByFileAndPinsThem) {
  const auto ckpt = make(7); // several data files, 64 KiB chunks like the pool's
  ASSERT_GT(ckpt.info().files.size(), 1u);
  auto l = make_loader(small_options(), dev);
  EXPECT_FALSE(l->map(ckpt)) << "not in the tier yet";
  auto h = l->load(ckpt);
  ASSERT_TRUE(h && h->take_buffer());
  const auto allocated = dev.allocated_bytes();

  auto mapped = l->map(ckpt);
  ASSERT_TRUE(mapped);
  ASSERT_EQ(mapped->files().size(), ckpt.info().files.size());
  std::vector<std::byte> seen;
  for (std::uint32_t f = 0; f < ckpt.info().files.size(); ++f) {
    const auto* p = mapped->files()[f];
    seen.insert(seen.end(), p, p + ckpt.info().files[f].bytes);
  }
  EXPECT_EQ(seen, testing::concatenated_data(ckpt));
  EXPECT_EQ(dev.allocated_bytes(), allocated) << "no device memory for a mapped model";
  EXPECT_EQ(l->stats().maps, 1u);
  EXPECT_EQ(l->stats().bytes_from_dram, 0u) << "nothing copied";
  // Pinned while mapped: evicting every idle model leaves it; a second map shares it.
  EXPECT_EQ(l->tier().evict_unpinned(), 0u);
  auto again = l->map(ckpt);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->files(), mapped->files());
  EXPECT_GT(l->tier().pinned_chunks(), 0u);
  mapped.reset();
  again.reset();
  EXPECT_EQ(l->tier().pinned_chunks(), 0u);
  EXPECT_EQ(l->tier().evict_unpinned(), 1u);
  EXPECT_FALSE(l->map(ckpt)) << "evicted";
}

TEST_F(Loader, MapDeclinesWhenTheLayoutOrTheRoomOrTheOptionSaysNo) {
  const auto ckpt = make(8);
  auto warm = [](loader& l, const checkpoint& c) {
    auto h = l.load(c);
    ASSERT_TRUE(h && h->wait());
  };
  {
    // Pool chunks of 16 KiB: each 64 KiB checkpoint chunk is four of them, which is still one
    // run per file; but 48 KiB ones leave a gap after every chunk.
    auto o = small_options();
    o.chunk_bytes = 48 << 10;
    auto l = make_loader(o, dev);
    warm(*l, ckpt);
    EXPECT_FALSE(l->map(ckpt));
    EXPECT_EQ(l->tier().pinned_chunks(), 0u) << "a declined map leaves nothing pinned";
  }
  {
    // The pool is fragmented when the model is read: no run of chunks is free for it.
    const auto per_model = ckpt.chunks().size();
    auto l = make_loader(small_options(3 * per_model * (64 << 10)), dev);
    std::vector<chunk_pool::handle> every_other;
    std::vector<chunk_pool::handle> held;
    while (auto c = l->pool().try_acquire())
      (c->index() % 2 == 0 ? held : every_other).push_back(std::move(*c));
    every_other.clear(); // frees the odd chunks only
    warm(*l, ckpt);
    EXPECT_FALSE(l->map(ckpt));
  }
  {
    auto o = small_options();
    o.map_weights = false;
    auto l = make_loader(o, dev);
    warm(*l, ckpt);
    EXPECT_FALSE(l->map(ckpt));
  }
  {
    // The model takes more than three quarters of the pool: mapping it would leave too little
    // room to load anything else through the tier.
    const auto chunks = ckpt.chunks().size();
    auto l = make_loader(small_options((chunks + chunks / 8) * (64 << 10)), dev);
    warm(*l, ckpt);
    EXPECT_FALSE(l->map(ckpt));
  }
}

// The bytes of each data file as a mapping shows them, in file order.
std::vector<std::byte> mapped_bytes(const mapped_model& m, const checkpoint& ckpt) {
  std::vector<std::byte> seen;
  for (std::uint32_t f = 0; f < ckpt.info().files.size(); ++f)
    seen.insert(seen.end(), m.files()[f], m.files()[f] + ckpt.info().files[f].bytes);
  return seen;
}

TEST_F(Loader, InPlaceColdLoadReadsOnceAndMapsWithoutACopy) {
  testing::test_model_spec spec;
  spec.layers = 6;
  const auto ckpt = make(11, spec);
  ASSERT_GT(ckpt.info().files.size(), 1u);
  auto l = make_loader(small_options(), dev);
  const auto allocated = dev.allocated_bytes();
  auto h = l->load(ckpt, load_mode::in_place);
  ASSERT_TRUE(h) << h.err().to_string();
  // The prefix grows as the tier's segments are verified, as a copy's does.
  for (std::int32_t layer = -1; layer <= static_cast<std::int32_t>(spec.layers); ++layer) {
    ASSERT_TRUE(h->wait_for_layer(layer));
    EXPECT_GE(h->loaded_prefix(), ckpt.layer_end(layer));
  }
  ASSERT_TRUE(h->wait());
  EXPECT_EQ(h->mode(), load_mode::in_place);
  EXPECT_EQ(h->progress().source, load_source::ssd);
  EXPECT_EQ(h->progress().bytes_done, ckpt.total_bytes());
  EXPECT_EQ(h->loaded_prefix(), ckpt.total_bytes());
  auto buffer = h->take_buffer();
  ASSERT_FALSE(buffer);
  EXPECT_EQ(buffer.err().code, errc::invalid_argument);
  auto mapped = h->take_mapped();
  ASSERT_TRUE(mapped) << mapped.err().to_string();
  EXPECT_EQ(mapped_bytes(**mapped, ckpt), testing::concatenated_data(ckpt));
  EXPECT_EQ(dev.allocated_bytes(), allocated) << "no device buffer for an in-place load";
  EXPECT_EQ(l->stats().loads_in_place, 1u);
  EXPECT_EQ(l->stats().bytes_read_ssd, ckpt.total_bytes());
  EXPECT_EQ(l->stats().bytes_from_dram, 0u);
  auto twice = h->take_mapped();
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.err().code, errc::invalid_argument);

  // Pinned while the mapping lives, shared with map(), and evictable once both are gone.
  EXPECT_EQ(l->tier().evict_unpinned(), 0u);
  auto shared = l->map(ckpt);
  ASSERT_TRUE(shared);
  EXPECT_EQ(shared->files(), (*mapped)->files());
  mapped->reset();
  shared.reset();
  EXPECT_EQ(l->tier().pinned_chunks(), 0u);
  // An in-place load of a model the tier holds reads nothing.
  auto warm = l->load(ckpt, load_mode::in_place);
  ASSERT_TRUE(warm && warm->wait());
  EXPECT_EQ(warm->progress().source, load_source::dram);
  EXPECT_EQ(l->stats().bytes_read_ssd, ckpt.total_bytes());
  EXPECT_TRUE(warm->take_mapped());
}

TEST_F(Loader, AnUntakenMappingGoesWithTheLastHandle) {
  const auto ckpt = make(16);
  auto l = make_loader(small_options(), dev);
  {
    auto h = l->load(ckpt, load_mode::in_place);
    ASSERT_TRUE(h && h->wait());
    auto copy = *h;
    h = make_error(errc::cancelled, "dropped");
    EXPECT_GT(l->tier().pinned_chunks(), 0u) << "a copy of the handle still could take it";
  }
  EXPECT_EQ(l->tier().pinned_chunks(), 0u);
  EXPECT_EQ(l->tier().evict_unpinned(), 1u);
  // Dropped before the load ends: the mapping is never kept.
  {
    auto h = l->load(ckpt, load_mode::in_place);
    ASSERT_TRUE(h);
  }
  while (l->queued().loads > 0)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(l->tier().pinned_chunks(), 0u);
  EXPECT_EQ(l->stats().loads_in_place, 2u);
}

TEST_F(Loader, InPlaceLoadCopiesWhereMapWouldDecline) {
  const auto ckpt = make(12);
  const auto want = testing::concatenated_data(ckpt);
  auto expect_copy = [&](loader& l) {
    auto h = l.load(ckpt, load_mode::in_place);
    ASSERT_TRUE(h) << h.err().to_string();
    ASSERT_TRUE(h->wait());
    EXPECT_EQ(h->mode(), load_mode::copy);
    auto mapped = h->take_mapped();
    ASSERT_FALSE(mapped);
    EXPECT_EQ(mapped.err().code, errc::invalid_argument);
    auto buf = h->take_buffer();
    ASSERT_TRUE(buf) << buf.err().to_string();
    const auto* p = static_cast<const std::byte*>((*buf)->data());
    EXPECT_EQ(std::vector<std::byte>(p, p + ckpt.total_bytes()), want);
    EXPECT_EQ(l.stats().loads_in_place, 0u);
    EXPECT_EQ(l.tier().pinned_chunks(), 0u) << "a copy leaves nothing pinned";
  };
  {
    // 48 KiB pool chunks leave a gap after every 64 KiB checkpoint chunk.
    auto o = small_options();
    o.chunk_bytes = 48 << 10;
    expect_copy(*make_loader(o, dev));
  }
  {
    auto o = small_options();
    o.map_weights = false;
    expect_copy(*make_loader(o, dev));
  }
  {
    // Pinned for good, the model would leave less than a quarter of the pool.
    const auto chunks = ckpt.chunks().size();
    expect_copy(*make_loader(small_options((chunks + chunks / 8) * (64 << 10)), dev));
  }
}

TEST_F(Loader, InPlaceLoadOfACorruptModelFailsAndReturnsEveryChunk) {
  const auto ckpt = make(13);
  const auto& f1 = ckpt.info().files.at(1);
  ASSERT_TRUE(testing::flip_byte(ckpt.file_path(1), f1.chunk_bytes + 99));
  auto l = make_loader(small_options(), dev);
  auto h = l->load(ckpt, load_mode::in_place);
  ASSERT_TRUE(h);
  auto s = h->wait();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::corrupt);
  EXPECT_NE(s.err().message.find(f1.name), std::string::npos) << s.err().message;
  auto mapped = h->take_mapped();
  ASSERT_FALSE(mapped);
  EXPECT_EQ(mapped.err().code, errc::corrupt);
  EXPECT_EQ(l->pool().free_chunks(), l->pool().total_chunks());
  EXPECT_EQ(l->tier().pinned_chunks(), 0u);
  EXPECT_EQ(l->stats().loads_in_place, 0u);
}

TEST_F(Loader, CancelOfAnInPlaceLoadStopsReadingAndPinsNothing) {
  // As CancelMidLoad..., without copies to hold at a gate: cancelled once the embeddings (a
  // quarter of the thousand reads) are verified.
  const auto ckpt = make(15, many_small_chunks());
  ASSERT_GT(ckpt.chunks().size(), 900u);
  auto l = make_loader(one_reader_small_chunks(), dev);
  auto h = l->load(ckpt, load_mode::in_place);
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->wait_for_layer(-1));
  h->cancel();
  expect_stopped_early(*l, *h, ckpt);
  EXPECT_EQ(l->tier().pinned_chunks(), 0u);
  EXPECT_FALSE(h->take_mapped());
}

TEST_F(Loader, TierOnlyLoadLeavesTheModelReadyUnpinnedWithNothingOnTheDevice) {
  const auto ckpt = make(14);
  auto l = make_loader(small_options(), dev);
  const auto allocated = dev.allocated_bytes();
  auto h = l->load(ckpt, load_mode::tier_only);
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->wait());
  EXPECT_EQ(h->mode(), load_mode::tier_only);
  EXPECT_EQ(dev.allocated_bytes(), allocated);
  EXPECT_FALSE(h->take_buffer());
  EXPECT_FALSE(h->take_mapped());
  EXPECT_EQ(l->tier().pinned_chunks(), 0u);
  EXPECT_EQ(l->tier().state_of(ckpt.content_id()), dram_state::ready);
  auto mapped = l->map(ckpt);
  ASSERT_TRUE(mapped) << "ready in the tier";
  EXPECT_EQ(mapped_bytes(*mapped, ckpt), testing::concatenated_data(ckpt));
}

TEST_F(Loader, QueuedCountsTheBytesLoadsStillHaveToMove) {
  const auto ckpt = make(10);
  gated_device gated;
  auto l = make_loader(small_options(), gated);
  EXPECT_EQ(l->queued().loads, 0u);
  auto h = l->load(ckpt);
  ASSERT_TRUE(h);
  gated.wait_for_a_copy(); // every copy is held: nothing has reached the device
  auto q = l->queued();
  EXPECT_EQ(q.loads, 1u);
  EXPECT_EQ(q.ssd_bytes, ckpt.total_bytes());
  EXPECT_EQ(q.dram_bytes, 0u);
  gated.open();
  ASSERT_TRUE(h->wait());
  q = l->queued();
  EXPECT_EQ(q.loads, 0u);
  EXPECT_EQ(q.ssd_bytes + q.dram_bytes, 0u);
}

// --- the remote tier: pull ---------------------------------------------------------------------

/// A peer that holds a checkpoint's bytes in memory and hands them over in pieces, last piece
/// first (the loader must not care about order). It can flip a byte on the way, or fail after
/// a number of bytes. The UCX source is tested in tests/transport and the cluster tests; this
/// one lets the loader's side be checked without a network.
class memory_peer final : public remote_source {
public:
  memory_peer(const checkpoint& ckpt, std::uint64_t puller_chunk)
      : ckpt_(ckpt), data_(testing::concatenated_data(ckpt)), puller_chunk_(puller_chunk) {}
  std::string name() const override { return "peer test-peer"; }
  std::uint64_t chunk_bytes() const override { return own_chunk; }
  status fetch(std::span<const std::span<std::byte>> dst, const piece_callback& on_piece,
               std::stop_token stop) override {
    ++fetches;
    struct where {
      std::uint64_t at;    // in the concatenated data
      std::uint64_t bytes;
    };
    std::vector<where> pieces;
    for (const auto& c : ckpt_.chunks())
      for (const auto& p : pull_pieces(c.bytes, own_chunk, puller_chunk_))
        pieces.push_back({c.device_offset + p.offset, p.bytes});
    if (dst.size() != pieces.size())
      return make_error(errc::invalid_argument, "destination count");
    std::uint64_t sent = 0;
    for (std::size_t i = pieces.size(); i-- > 0;) {
      if (dst[i].size() != pieces[i].bytes)
        return make_error(errc::invalid_argument, "destination size");
      for (std::uint64_t off = 0; off < pieces[i].bytes; off += step) {
        if (stop.stop_requested())
          return make_error(errc::cancelled, "stopped");
        if (sent >= fail_after)
          return make_error(errc::io_error, "connection reset by test-peer");
        const auto n = std::min<std::uint64_t>(step, pieces[i].bytes - off);
        const auto at = pieces[i].at + off;
        std::memcpy(dst[i].data() + off, data_.data() + at, n);
        if (flip_at >= at && flip_at < at + n)
          dst[i][off + (flip_at - at)] ^= std::byte{0x20};
        sent += n;
        on_piece(i, off, n);
      }
    }
    return {};
  }

  std::uint64_t own_chunk = 16 << 10; ///< the peer's pool chunks
  std::uint64_t step = 5000;
  std::uint64_t flip_at = ~0ull;
  std::uint64_t fail_after = ~0ull;
  int fetches = 0;

private:
  const checkpoint& ckpt_;
  std::vector<std::byte> data_;
  std::uint64_t puller_chunk_;
};

/// `ckpt` as a node without its data files knows it: from its manifest's bytes alone.
checkpoint without_files(const checkpoint& ckpt, const std::filesystem::path& where) {
  auto remote = checkpoint::from_manifest(where, ckpt.manifest_bytes());
  EXPECT_TRUE(remote) << remote.err().to_string();
  return std::move(*remote);
}

TEST_F(Loader, PullFillsTheTierFromAPeerAndLoadsThenReadNothing) {
  const auto local = make(11);
  const auto ckpt = without_files(local, dir / "not-here");
  EXPECT_EQ(ckpt.content_id(), local.content_id());
  EXPECT_EQ(ckpt.chunks().size(), local.chunks().size());
  memory_peer peer{local, small_options().chunk_bytes};
  auto l = make_loader(small_options(), dev);
  {
    auto lease = l->pull(ckpt, peer);
    ASSERT_TRUE(lease) << lease.err().to_string();
    EXPECT_EQ(l->tier().state_of(ckpt.content_id()), dram_state::ready);
    EXPECT_EQ(l->stats().pulls, 1u);
    EXPECT_EQ(l->stats().bytes_pulled, ckpt.total_bytes());
    // Pinned while the lease lives: an eviction leaves it.
    EXPECT_EQ(l->tier().evict_unpinned(), 0u);
    // A second pull of a model the tier holds fetches nothing.
    auto again = l->pull(ckpt, peer);
    ASSERT_TRUE(again) << again.err().to_string();
    EXPECT_EQ(peer.fetches, 1);
  }
  auto h = l->load(ckpt); // no data file exists: the bytes can only come from the tier
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->wait()) << h->wait().err().to_string();
  EXPECT_EQ(h->progress().source, load_source::dram);
  EXPECT_EQ(buffer_bytes(*h), testing::concatenated_data(local));
  EXPECT_EQ(l->stats().ssd_reads, 0u);
}

TEST_F(Loader, APulledChunkWithAFlippedByteIsCorruptNamingThePeerAndNothingStays) {
  const auto local = make(12);
  const auto ckpt = without_files(local, dir / "not-here");
  memory_peer peer{local, small_options().chunk_bytes};
  const auto& c = ckpt.chunks().at(3);
  peer.flip_at = c.device_offset + 77;
  auto l = make_loader(small_options(), dev);
  auto lease = l->pull(ckpt, peer);
  ASSERT_FALSE(lease);
  EXPECT_EQ(lease.err().code, errc::corrupt);
  const auto& msg = lease.err().message;
  EXPECT_NE(msg.find("test-peer"), std::string::npos) << msg;
  EXPECT_NE(msg.find(ckpt.info().files.at(c.file).name), std::string::npos) << msg;
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  EXPECT_FALSE(l->tier().state_of(ckpt.content_id()));
  EXPECT_EQ(l->pool().free_chunks(), l->pool().total_chunks());

  peer.flip_at = ~0ull; // the peer mends: the next pull succeeds
  auto retry = l->pull(ckpt, peer);
  ASSERT_TRUE(retry) << retry.err().to_string();
}

TEST_F(Loader, APeerThatFailsMidPullLeavesNothingAndCachedModelsStay) {
  const auto cached = make(13);
  const auto local = make(14);
  const auto ckpt = without_files(local, dir / "not-here");
  auto l = make_loader(small_options(), dev);
  auto h = l->load(cached);
  ASSERT_TRUE(h && h->wait());
  const auto free_before = l->pool().free_chunks();

  memory_peer peer{local, small_options().chunk_bytes};
  peer.fail_after = ckpt.total_bytes() / 2;
  auto lease = l->pull(ckpt, peer);
  ASSERT_FALSE(lease);
  EXPECT_EQ(lease.err().code, errc::io_error);
  EXPECT_NE(lease.err().message.find("connection reset by test-peer"), std::string::npos);
  EXPECT_NE(lease.err().message.find("not-here"), std::string::npos) << lease.err().message;
  EXPECT_FALSE(l->tier().state_of(ckpt.content_id()));
  EXPECT_EQ(l->pool().free_chunks(), free_before);
  EXPECT_EQ(l->tier().state_of(cached.content_id()), dram_state::ready);

  // Stopped before it starts: cancelled, and again nothing stays.
  std::stop_source stop;
  stop.request_stop();
  peer.fail_after = ~0ull;
  auto cancelled = l->pull(ckpt, peer, stop.get_token());
  ASSERT_FALSE(cancelled);
  EXPECT_EQ(cancelled.err().code, errc::cancelled);
  EXPECT_EQ(l->pool().free_chunks(), free_before);
}

TEST_F(Loader, APullWaitsForRoomWhileModelsInUseFillTheTierButNotPastItsDeadline) {
  const auto cached = make(16);
  const auto local = make(17);
  const auto ckpt = without_files(local, dir / "not-here");
  const std::uint64_t chunk = small_options().chunk_bytes;
  // Room for one model, not two.
  const auto pool = (cached.total_bytes() * 3 / 2 + chunk - 1) / chunk * chunk;
  auto l = make_loader(small_options(pool), dev);
  {
    auto h = l->load(cached);
    ASSERT_TRUE(h && h->wait());
  }
  auto pin = l->tier().try_pin_ready(cached, 0); // in use, as by a running instance
  ASSERT_TRUE(pin);
  memory_peer peer{local, chunk};

  const auto t0 = std::chrono::steady_clock::now();
  auto refused = l->pull(ckpt, peer, {}, 200ms);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.err().code, errc::resource_exhausted);
  EXPECT_NE(refused.err().message.find("in use"), std::string::npos) << refused.err().message;
  EXPECT_NE(refused.err().message.find("after waiting"), std::string::npos)
      << refused.err().message;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 200ms); // it did wait
  EXPECT_EQ(peer.fetches, 0);
  EXPECT_EQ(l->tier().state_of(cached.content_id()), dram_state::ready);

  // The model in use is let go while a pull waits: the pull goes on (evicting it).
  std::thread release{[&] {
    std::this_thread::sleep_for(100ms);
    pin.reset();
  }};
  auto pulled = l->pull(ckpt, peer, {}, 60s);
  release.join();
  ASSERT_TRUE(pulled) << pulled.err().to_string();
  EXPECT_EQ(l->tier().state_of(ckpt.content_id()), dram_state::ready);
  EXPECT_FALSE(l->tier().state_of(cached.content_id()));
}

TEST_F(Loader, PullWorksWhateverEitherEndsPoolChunksAndRefusesModelsLargerThanThePool) {
  const auto local = make(15); // 64 KiB checkpoint chunks
  const auto ckpt = without_files(local, dir / "not-here");
  const auto want = testing::concatenated_data(local);
  // Pool chunks smaller and larger than the checkpoint's, at the puller and at the peer.
  for (std::uint64_t mine : {16u << 10, 48u << 10, 128u << 10})
    for (std::uint64_t theirs : {12u << 10, 64u << 10, 256u << 10}) {
      auto o = small_options();
      o.chunk_bytes = mine;
      auto l = make_loader(o, dev);
      memory_peer peer{local, mine};
      peer.own_chunk = theirs;
      auto lease = l->pull(ckpt, peer);
      ASSERT_TRUE(lease) << mine << "/" << theirs << ": " << lease.err().to_string();
      lease->reset();
      auto h = l->load(ckpt);
      ASSERT_TRUE(h && h->wait()) << mine << "/" << theirs;
      EXPECT_EQ(buffer_bytes(*h), want) << mine << "/" << theirs;
    }

  auto tiny_pool = make_loader(small_options(128 << 10), dev);
  memory_peer peer{local, small_options().chunk_bytes};
  auto r = tiny_pool->pull(ckpt, peer);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::resource_exhausted);
  EXPECT_EQ(peer.fetches, 0);
}

TEST(PullPieces, CutAtBothEndsBoundaries) {
  auto cuts = [](std::uint64_t n, std::uint64_t a, std::uint64_t b) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> v;
    for (const auto& p : pull_pieces(n, a, b))
      v.emplace_back(p.offset, p.bytes);
    return v;
  };
  using v = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
  EXPECT_EQ(cuts(100, 40, 100), (v{{0, 40}, {40, 40}, {80, 20}}));
  EXPECT_EQ(cuts(100, 40, 30), (v{{0, 30}, {30, 10}, {40, 20}, {60, 20}, {80, 10}, {90, 10}}));
  EXPECT_EQ(cuts(64, 128, 256), (v{{0, 64}}));
  EXPECT_EQ(cuts(64, 0, 0), (v{{0, 64}}));
}

TEST(CheckpointFromManifest, GarbageManifestBytesAreRefused) {
  auto r = checkpoint::from_manifest("/nowhere/model", "not a manifest");
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("/nowhere/model"), std::string::npos) << r.err().message;
}

TEST(LoaderOptions, OneVerifierPerFourCoresFromOneToFour) {
  EXPECT_EQ(default_verify_threads(0), 1); // unknown
  EXPECT_EQ(default_verify_threads(2), 1);
  EXPECT_EQ(default_verify_threads(8), 2);
  EXPECT_EQ(default_verify_threads(12), 3);
  EXPECT_EQ(default_verify_threads(64), 4);
}

TEST(LoaderOptions, ReadFromConfigWithDefaults) {
  auto empty = config::parse("");
  ASSERT_TRUE(empty);
  auto d = loader_options::from_config(*empty);
  ASSERT_TRUE(d) << d.err().to_string();
  EXPECT_EQ(d->chunk_bytes, 16u << 20);
  EXPECT_EQ(d->read_threads, 3);
  EXPECT_EQ(d->copy_lanes, 2);
  EXPECT_EQ(d->verify_threads, default_verify_threads());
  EXPECT_TRUE(d->verify_checksums);

  auto cfg = config::parse("[loader]\npool_bytes = \"64MiB\"\nchunk_bytes = \"4MiB\"\n"
                           "read_threads = 4\ncopy_lanes = 3\nverify_checksums = false\n"
                           "verify_threads = 1\n");
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  auto o = loader_options::from_config(*cfg);
  ASSERT_TRUE(o) << o.err().to_string();
  EXPECT_EQ(o->pool_bytes, 64u << 20);
  EXPECT_EQ(o->chunk_bytes, 4u << 20);
  EXPECT_EQ(o->read_threads, 4);
  EXPECT_EQ(o->copy_lanes, 3);
  EXPECT_EQ(o->verify_threads, 1);
  EXPECT_FALSE(o->verify_checksums);

  for (const char* bad : {"[loader]\nchunk_bytes = 5000\n", "[loader]\nread_threads = 0\n",
                          "[loader]\ncopy_lanes = -1\n", "[loader]\nverify_threads = 0\n",
                          "[loader]\npool_bytes = \"1MiB\"\nchunk_bytes = \"2MiB\"\n"}) {
    auto c = config::parse(bad);
    ASSERT_TRUE(c) << bad;
    auto r = loader_options::from_config(*c);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.err().code, errc::invalid_argument);
    EXPECT_NE(r.err().message.find("loader."), std::string::npos) << r.err().message;
  }
  EXPECT_STREQ(to_string(load_source::dram), "dram");
  EXPECT_STREQ(to_string(load_phase::cancelled), "cancelled");
  EXPECT_STREQ(to_string(load_mode::in_place), "in_place");
}

} // namespace
} // namespace thaw
