#include "bench/reference_io.hpp"

#include "runtime/common/posix.hpp"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <new>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

namespace thaw::bench {
namespace {

using clock = std::chrono::steady_clock;

double since(clock::time_point start) {
  return std::chrono::duration<double>(clock::now() - start).count();
}

// Reference buffers get what thaw's own buffers get (2 MiB-aligned, huge pages where the kernel
// gives them, touched before timing), so a reference is never slowed by a worse buffer: an
// O_DIRECT read into huge pages needs fewer segments per request than one into 4 KiB pages.
struct mapped_deleter {
  std::size_t bytes = 0;
  void operator()(std::byte* p) const noexcept { ::munmap(p, bytes); }
};
using aligned_buffer = std::unique_ptr<std::byte, mapped_deleter>;

aligned_buffer aligned(std::size_t bytes) {
  constexpr std::size_t huge = 2u << 20;
  std::size_t span = (bytes + huge - 1) / huge * huge;
  void* p = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw std::bad_alloc();
  ::madvise(p, span, MADV_HUGEPAGE);
  std::memset(p, 0, span); // touch it so page faults are not measured
  return aligned_buffer(static_cast<std::byte*>(p), mapped_deleter{span});
}

// Reads one file with O_DIRECT; thread t takes blocks t, t + threads, ...
status read_file_direct(const std::filesystem::path& path, std::size_t block, int threads,
                        std::vector<aligned_buffer>& buffers) {
  THAW_ASSIGN(auto fd, open_file(path, O_RDONLY | O_DIRECT));
  THAW_ASSIGN(auto size, file_size(fd.get(), path));
  std::uint64_t blocks = (size + block - 1) / block;
  std::vector<std::thread> pool;
  std::vector<status> results(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (std::uint64_t b = static_cast<std::uint64_t>(t); b < blocks;
           b += static_cast<std::uint64_t>(threads)) {
        std::uint64_t offset = b * block;
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(block, size - offset));
        // O_DIRECT needs aligned lengths; checkpoint files are 4096-aligned, others are rounded
        // up and the read simply returns short at the end.
        std::size_t want = (n + 4095) / 4096 * 4096;
        ssize_t got = ::pread(fd.get(), buffers[static_cast<std::size_t>(t)].get(), want,
                              static_cast<off_t>(offset));
        if (got < static_cast<ssize_t>(n)) {
          results[static_cast<std::size_t>(t)] =
              make_error(errc::io_error, path.string() + ": O_DIRECT read failed at offset " +
                                             std::to_string(offset));
          return;
        }
      }
    });
  for (auto& th : pool)
    th.join();
  for (auto& r : results)
    THAW_TRY(r);
  return {};
}

} // namespace

expected<std::uint64_t> total_size(const std::vector<std::filesystem::path>& files) {
  std::uint64_t total = 0;
  for (const auto& f : files) {
    std::error_code ec;
    auto n = std::filesystem::file_size(f, ec);
    if (ec)
      return make_error(errc::not_found, f.string() + ": " + ec.message());
    total += n;
  }
  return total;
}

expected<double> raw_odirect_read(const std::vector<std::filesystem::path>& files,
                                  std::size_t block_bytes, int threads) {
  std::vector<aligned_buffer> buffers;
  for (int t = 0; t < threads; ++t)
    buffers.push_back(aligned(block_bytes));
  auto start = clock::now();
  for (const auto& f : files)
    THAW_TRY(read_file_direct(f, block_bytes, threads, buffers));
  return since(start);
}

expected<double> buffered_read(const std::vector<std::filesystem::path>& files,
                               std::size_t block_bytes) {
  auto buffer = aligned(block_bytes);
  auto start = clock::now();
  for (const auto& f : files) {
    THAW_ASSIGN(auto fd, open_file(f, O_RDONLY));
    while (true) {
      ssize_t got = ::read(fd.get(), buffer.get(), block_bytes);
      THAW_POSIX_CHECK(got, f.string());
      if (got == 0)
        break;
    }
  }
  return since(start);
}

expected<double> mmap_copy_load(const std::vector<std::filesystem::path>& files) {
  THAW_ASSIGN(auto total, total_size(files));
  auto dest = aligned(total);
  auto start = clock::now();
  std::size_t at = 0;
  for (const auto& f : files) {
    THAW_ASSIGN(auto fd, open_file(f, O_RDONLY));
    THAW_ASSIGN(auto size, file_size(fd.get(), f));
    if (size == 0)
      continue;
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (map == MAP_FAILED)
      return unexpected(posix_error(errno, "mmap()", f.string(), __FILE__, __LINE__));
    std::memcpy(dest.get() + at, map, size);
    ::munmap(map, size);
    at += size;
  }
  return since(start);
}

double memcpy_seconds(std::size_t bytes, int threads) {
  auto src = aligned(bytes);
  auto dst = aligned(bytes);
  std::size_t per = (bytes / static_cast<std::size_t>(threads) + 4095) / 4096 * 4096;
  auto start = clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::size_t begin = std::min(bytes, per * static_cast<std::size_t>(t));
      std::size_t end = std::min(bytes, begin + per);
      std::memcpy(dst.get() + begin, src.get() + begin, end - begin);
    });
  for (auto& th : pool)
    th.join();
  return since(start);
}

} // namespace thaw::bench
