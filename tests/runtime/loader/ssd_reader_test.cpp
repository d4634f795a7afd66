#include "runtime/loader/ssd_reader.hpp"

#include "runtime/common/hash.hpp"
#include "runtime/common/posix.hpp"
#include "runtime/loader/chunk_pool.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_checkpoint.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <future>
#include <string>
#include <unistd.h>
#include <vector>

namespace thaw {
namespace {

std::vector<std::byte> pattern(std::size_t n, std::uint64_t seed) {
  std::vector<std::byte> v(n);
  testing::fill_test_tensor(v, seed, 0);
  return v;
}

void write_file(const std::filesystem::path& path, const std::vector<std::byte>& bytes) {
  auto fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(write_full(fd->get(), bytes.data(), bytes.size(), path));
}

class SsdReader : public ::testing::Test {
protected:
  void SetUp() override {
    auto p = chunk_pool::create(1 << 20, 64 << 10);
    ASSERT_TRUE(p);
    pool = std::move(*p);
    auto r = ssd_reader::create(ssd_reader_options{.threads = 2});
    ASSERT_TRUE(r);
    reader = std::move(*r);
  }

  status submit_and_wait(read_request r) {
    std::promise<status> done;
    auto result = done.get_future();
    reader->submit(std::move(r), [&](status s) { done.set_value(std::move(s)); });
    return result.get();
  }

  testing::temp_dir dir;
  std::unique_ptr<chunk_pool> pool;
  std::unique_ptr<ssd_reader> reader;
};

TEST_F(SsdReader, ReadsEveryChunkOfAFileExactly) {
  const auto bytes = pattern(5 * (64 << 10), 3);
  write_file(dir / "data.bin", bytes);
  auto file = source_file::open(dir / "data.bin");
  ASSERT_TRUE(file) << file.err().to_string();
  std::vector<chunk_pool::handle> chunks;
  std::vector<std::future<status>> results;
  std::vector<std::promise<status>> promises(5);
  for (std::uint64_t i = 0; i < 5; ++i) {
    chunks.push_back(std::move(*pool->try_acquire()));
    read_request r;
    r.file = *file;
    r.offset = i * (64 << 10);
    r.bytes = 64 << 10;
    r.buffers = {chunks.back().bytes()};
    r.checksum = xxh3_64(bytes.data() + r.offset, r.bytes);
    r.chunk_index = i;
    results.push_back(promises[i].get_future());
    reader->submit(std::move(r), [&promises, i](status s) { promises[i].set_value(std::move(s)); });
  }
  for (std::size_t i = 0; i < 5; ++i) {
    auto s = results[i].get();
    ASSERT_TRUE(s) << s.err().to_string();
    EXPECT_EQ(std::memcmp(chunks[i].data(), bytes.data() + i * (64 << 10), 64 << 10), 0) << i;
  }
  EXPECT_EQ(reader->reads_issued(), 5u);
  EXPECT_EQ(reader->bytes_read(), bytes.size());
}

TEST_F(SsdReader, ReadsAFileThatEndsMidBlockAndSpansSeveralBuffers) {
  // 100,000 bytes: not a multiple of 4096, and more than one 64 KiB pool chunk.
  const auto bytes = pattern(100'000, 4);
  write_file(dir / "odd.bin", bytes);
  auto file = source_file::open(dir / "odd.bin");
  ASSERT_TRUE(file);
  auto two = pool->try_acquire(2);
  ASSERT_TRUE(two);
  read_request r;
  r.file = *file;
  r.bytes = bytes.size();
  r.buffers = {(*two)[0].bytes(), (*two)[1].bytes()};
  r.checksum = xxh3_64(bytes.data(), bytes.size());
  auto s = reader->read(r);
  ASSERT_TRUE(s) << s.err().to_string();
  EXPECT_EQ(std::memcmp((*two)[0].data(), bytes.data(), 64 << 10), 0);
  EXPECT_EQ(std::memcmp((*two)[1].data(), bytes.data() + (64 << 10), bytes.size() - (64 << 10)), 0);
}

TEST_F(SsdReader, ChecksumMismatchNamesFileChunkAndOffset) {
  auto bytes = pattern(4 * (64 << 10), 5);
  write_file(dir / "data-00003.bin", bytes);
  auto file = source_file::open(dir / "data-00003.bin");
  ASSERT_TRUE(file);
  auto chunk = pool->try_acquire();
  read_request r;
  r.file = *file;
  r.offset = 2 * (64 << 10);
  r.bytes = 64 << 10;
  r.buffers = {chunk->bytes()};
  r.checksum = xxh3_64(bytes.data() + r.offset, r.bytes) ^ 1;
  r.chunk_index = 2;
  auto s = submit_and_wait(r);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::corrupt);
  const auto& msg = s.err().message;
  EXPECT_NE(msg.find("data-00003.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("chunk 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(2 * (64 << 10))), std::string::npos) << msg;
  EXPECT_NE(msg.find("checksum"), std::string::npos) << msg;

  // With verification off the same read succeeds.
  auto lax = ssd_reader::create(ssd_reader_options{.threads = 1, .verify_checksums = false});
  ASSERT_TRUE(lax);
  EXPECT_TRUE((*lax)->read(r));
}

TEST_F(SsdReader, ShortFileIsTruncatedNamingTheFile) {
  write_file(dir / "short.bin", pattern(3 * 4096, 6));
  auto file = source_file::open(dir / "short.bin");
  ASSERT_TRUE(file);
  auto chunk = pool->try_acquire();
  read_request r;
  r.file = *file;
  r.offset = 0;
  r.bytes = 64 << 10;
  r.buffers = {chunk->bytes()};
  auto s = submit_and_wait(r);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::corrupt);
  EXPECT_NE(s.err().message.find("truncated"), std::string::npos) << s.err().message;
  EXPECT_NE(s.err().message.find("short.bin"), std::string::npos) << s.err().message;
  // A chunk wholly past the end is truncated too.
  r.offset = 64 << 10;
  auto past = reader->read(r);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.err().code, errc::corrupt);
}

TEST_F(SsdReader, MissingFileIsNotFoundNamingIt) {
  auto file = source_file::open(dir / "data-00007.bin");
  ASSERT_FALSE(file);
  EXPECT_EQ(file.err().code, errc::not_found);
  EXPECT_NE(file.err().message.find("data-00007.bin"), std::string::npos) << file.err().message;
}

TEST_F(SsdReader, StoppedRequestIsCancelledWithoutReading) {
  write_file(dir / "f.bin", pattern(64 << 10, 7));
  auto file = source_file::open(dir / "f.bin");
  ASSERT_TRUE(file);
  auto chunk = pool->try_acquire();
  std::stop_source stop;
  stop.request_stop();
  read_request r;
  r.file = *file;
  r.bytes = 64 << 10;
  r.buffers = {chunk->bytes()};
  r.stop = stop.get_token();
  auto s = submit_and_wait(r);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::cancelled);
  EXPECT_EQ(reader->reads_issued(), 0u);
}

TEST_F(SsdReader, TooSmallDestinationIsRefused) {
  write_file(dir / "f.bin", pattern(128 << 10, 8));
  auto file = source_file::open(dir / "f.bin");
  ASSERT_TRUE(file);
  auto chunk = pool->try_acquire();
  read_request r;
  r.file = *file;
  r.bytes = 128 << 10;
  r.buffers = {chunk->bytes()};
  auto s = reader->read(r);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::invalid_argument);
}

TEST(SsdReaderOptions, NeedsAThreadOfEachKind) {
  auto r = ssd_reader::create(ssd_reader_options{.threads = 0});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::invalid_argument);
  auto v = ssd_reader::create(ssd_reader_options{.threads = 1, .verify_threads = 0});
  ASSERT_FALSE(v);
  EXPECT_EQ(v.err().code, errc::invalid_argument);
  EXPECT_NE(v.err().message.find("verify_threads"), std::string::npos) << v.err().message;
}

} // namespace
} // namespace thaw
