#include "bench/reference_io.hpp"

#include "bench/timing.hpp"
#include "runtime/common/posix.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

namespace thaw::bench {
namespace {

// Reads one file with O_DIRECT; thread t takes blocks t, t + threads, ... into buffers[t], or,
// with `spread`, one reader puts block b at buffers[0] + b * block.
status read_file_direct(const std::filesystem::path& path, std::size_t block, int threads,
                        const std::vector<std::byte*>& buffers, bool spread = false) {
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
        std::byte* dst = spread ? buffers[0] + offset : buffers[static_cast<std::size_t>(t)];
        ssize_t got = ::pread(fd.get(), dst, want, static_cast<off_t>(offset));
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

// Reference buffers get what thaw's own buffers get (2 MiB-aligned, huge pages where the kernel
// gives them, touched before timing), so a reference is never slowed by a worse buffer: an
// O_DIRECT read into huge pages needs fewer segments per request than one into 4 KiB pages.
expected<reference_io::mapping> reference_io::map(std::size_t bytes) {
  constexpr std::size_t huge = 2u << 20;
  std::size_t span = (bytes + huge - 1) / huge * huge + huge;
  void* p = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return unexpected(posix_error(errno, "mmap()", "benchmark buffer of " + std::to_string(span) +
                                                       " bytes", __FILE__, __LINE__));
  auto* base = static_cast<std::byte*>(p);
  auto* aligned = reinterpret_cast<std::byte*>(
      (reinterpret_cast<std::uintptr_t>(base) + huge - 1) / huge * huge);
  ::madvise(aligned, span - huge, MADV_HUGEPAGE);
  std::memset(aligned, 1, span - huge);
  return mapping{base, span};
}

expected<std::unique_ptr<reference_io>> reference_io::create(std::size_t bytes,
                                                             std::size_t block_bytes) {
  std::unique_ptr<reference_io> r{new reference_io()};
  r->bytes_ = bytes;
  r->block_ = block_bytes;
  THAW_ASSIGN(r->src_, map(bytes));
  THAW_ASSIGN(r->dst_, map(bytes));
  for (int t = 0; t < 2; ++t) {
    THAW_ASSIGN(auto m, map(block_bytes));
    r->blocks_.push_back(m);
  }
  return r;
}

reference_io::~reference_io() {
  for (auto m : {src_, dst_})
    if (m.data != nullptr)
      ::munmap(m.data, m.bytes);
  for (auto m : blocks_)
    ::munmap(m.data, m.bytes);
}

namespace {
std::byte* aligned_start(std::byte* p) {
  constexpr std::uintptr_t huge = 2u << 20;
  return reinterpret_cast<std::byte*>((reinterpret_cast<std::uintptr_t>(p) + huge - 1) / huge * huge);
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

status drop_all(const std::vector<std::filesystem::path>& files) {
  for (const auto& f : files)
    THAW_TRY(drop_page_cache(f));
  return {};
}

expected<double> reference_io::raw_odirect_read(const std::vector<std::filesystem::path>& files,
                                                int threads) {
  threads = std::clamp(threads, 1, static_cast<int>(blocks_.size()));
  std::vector<std::byte*> buffers;
  for (int t = 0; t < threads; ++t)
    buffers.push_back(aligned_start(blocks_[static_cast<std::size_t>(t)].data));
  auto start = clock::now();
  for (const auto& f : files)
    THAW_TRY(read_file_direct(f, block_, threads, buffers));
  return since(start);
}

expected<double>
reference_io::raw_odirect_read_to_memory(const std::vector<std::filesystem::path>& files) {
  // Each file's last read is rounded up to 4096 bytes; dst_ holds bytes_ rounded up to 2 MiB.
  std::uint64_t need = 0;
  for (const auto& f : files) {
    THAW_ASSIGN(auto n, total_size({f}));
    need += (n + 4095) / 4096 * 4096;
  }
  constexpr std::uint64_t huge = 2u << 20;
  if (need > (bytes_ + huge - 1) / huge * huge)
    return make_error(errc::invalid_argument, "the files need " + std::to_string(need) +
                                                  " bytes, more than the benchmark sized");
  std::byte* at = aligned_start(dst_.data);
  auto start = clock::now();
  for (const auto& f : files) {
    THAW_TRY(read_file_direct(f, block_, 1, {at}, true));
    THAW_ASSIGN(auto n, total_size({f}));
    at += (n + 4095) / 4096 * 4096;
  }
  return since(start);
}

expected<double> reference_io::buffered_read(const std::vector<std::filesystem::path>& files) {
  THAW_TRY(drop_all(files));
  auto* buffer = aligned_start(blocks_[0].data);
  auto start = clock::now();
  for (const auto& f : files) {
    THAW_ASSIGN(auto fd, open_file(f, O_RDONLY));
    while (true) {
      ssize_t got = ::read(fd.get(), buffer, block_);
      THAW_POSIX_CHECK(got, f.string());
      if (got == 0)
        break;
    }
  }
  return since(start);
}

expected<double> reference_io::mmap_copy_load(const std::vector<std::filesystem::path>& files) {
  THAW_ASSIGN(auto total, total_size(files));
  if (total > bytes_)
    return make_error(errc::invalid_argument, "safetensors files hold " + std::to_string(total) +
                                                  " bytes, more than the " +
                                                  std::to_string(bytes_) + " the benchmark sized");
  THAW_TRY(drop_all(files));
  auto* dest = aligned_start(dst_.data);
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
    std::memcpy(dest + at, map, size);
    ::munmap(map, size);
    at += size;
  }
  return since(start);
}

double reference_io::memcpy_seconds(int threads) {
  auto* src = aligned_start(src_.data);
  auto* dst = aligned_start(dst_.data);
  std::size_t per = (bytes_ / static_cast<std::size_t>(threads) + 4095) / 4096 * 4096;
  auto start = clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::size_t begin = std::min(bytes_, per * static_cast<std::size_t>(t));
      std::size_t end = std::min(bytes_, begin + per);
      std::memcpy(dst + begin, src + begin, end - begin);
    });
  for (auto& th : pool)
    th.join();
  return since(start);
}

} // namespace thaw::bench
