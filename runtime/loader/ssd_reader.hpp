#pragma once
/// The SSD tier's reader: reads checkpoint chunks from local data files into chunk-pool memory
/// with O_DIRECT, one read per chunk, on a few threads, and verifies each chunk's XXH3 against
/// the manifest before anyone may use it.
///
/// O_DIRECT keeps a cold load from going through the page cache (an extra copy and, for a model
/// larger than free memory, an eviction storm) and lets several large reads be in flight, which
/// is what an NVMe device needs to reach its bandwidth. File systems that refuse O_DIRECT
/// (EINVAL at open: tmpfs on older kernels, some FUSE mounts) get buffered reads, logged once.
///
/// Checksums are verified on threads of their own, not the reader's: a reader that hashed its
/// chunk before its next read left the disk idle for that time, and more readers to cover it
/// meant more reads in flight, which this machine's disk serves slower than one at a time (one
/// reader without verification: 0.94 of the raw O_DIRECT read; three hashing readers: 0.73-0.81).
/// With the hashing elsewhere, `threads` is purely the reads in flight.

#include "runtime/common/error.hpp"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace thaw {

/// A data file opened for chunk reads. Shared by the requests that read from it.
class source_file {
public:
  /// Opens `path` with O_DIRECT, or buffered when the file system refuses O_DIRECT.
  /// A missing file is `not_found` naming the path.
  [[nodiscard]] static expected<std::shared_ptr<const source_file>>
  open(const std::filesystem::path& path);

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  /// Whether reads bypass the page cache.
  [[nodiscard]] bool direct() const noexcept { return direct_; }

  source_file(const source_file&) = delete;
  source_file& operator=(const source_file&) = delete;
  ~source_file();

private:
  source_file(std::filesystem::path path, int fd, bool direct)
      : path_(std::move(path)), fd_(fd), direct_(direct) {}
  std::filesystem::path path_;
  int fd_;
  bool direct_;
};

/// One chunk to read: `bytes` at `offset` of `file` into `buffers` in order.
struct read_request {
  std::shared_ptr<const source_file> file;
  std::uint64_t offset = 0; ///< a multiple of 4096 for O_DIRECT files
  std::uint64_t bytes = 0;
  /// Destination pieces, each 4096-aligned and (except the last) a multiple of 4096 long. For an
  /// O_DIRECT file their total must cover `bytes` rounded up to 4096.
  std::vector<std::span<std::byte>> buffers;
  /// Expected XXH3-64 of the `bytes` read; checked when set and verification is on.
  std::optional<std::uint64_t> checksum;
  /// The chunk's index in its file, for error messages.
  std::uint64_t chunk_index = 0;
  /// A request whose stop was requested before it is read completes with `cancelled`.
  std::stop_token stop;
  /// Where the bytes came from, for messages, when there is no `file` (verify_async).
  std::string origin;
};

struct ssd_reader_options {
  int threads = 2;              ///< concurrent reads (each thread has one read in flight)
  int verify_threads = 2;       ///< threads that verify checksums after the reads
  bool verify_checksums = true; ///< compare each chunk with its manifest checksum
};

class ssd_reader {
public:
  using completion = std::function<void(status)>;

  /// Starts `threads` reader threads and `verify_threads` verifiers (at least 1 each, else
  /// `invalid_argument`).
  [[nodiscard]] static expected<std::unique_ptr<ssd_reader>> create(const ssd_reader_options& opt);
  /// Completes queued requests with `cancelled` (on the destroying thread), then waits for
  /// reads in progress.
  ~ssd_reader();
  ssd_reader(const ssd_reader&) = delete;
  ssd_reader& operator=(const ssd_reader&) = delete;

  /// Queues a read; `done` runs exactly once on a reader or verifier thread with the result:
  /// `corrupt` naming the file, chunk index and byte offset for a checksum mismatch or a file
  /// that ends early ("truncated"), `io_error` for a failed read, `cancelled` if stopped first.
  void submit(read_request request, completion done);

  /// Checks bytes already in `request.buffers` (they came from elsewhere: a peer's DRAM tier)
  /// against `request.checksum` on a verifier thread: `done` runs exactly once with the result,
  /// at once when verification is off or there is no checksum. `request.file` may be null.
  void verify_async(read_request request, completion done);

  /// Performs one request on the calling thread (same checks, same counters).
  [[nodiscard]] status read(const read_request& request);

  /// Reads performed (one per chunk, whatever the syscall count) and their bytes.
  [[nodiscard]] std::uint64_t reads_issued() const noexcept { return reads_.load(); }
  [[nodiscard]] std::uint64_t bytes_read() const noexcept { return bytes_.load(); }
  [[nodiscard]] const ssd_reader_options& options() const noexcept { return options_; }

private:
  explicit ssd_reader(const ssd_reader_options& opt);
  void run();
  void verify_run();
  /// The read alone (no checksum).
  [[nodiscard]] status read_bytes(const read_request& request);
  [[nodiscard]] status verify(const read_request& request) const;
  [[nodiscard]] bool needs_verify(const read_request& r) const noexcept {
    return options_.verify_checksums && r.checksum.has_value();
  }

  struct job {
    read_request request;
    completion done;
  };

  /// The jobs of one kind of thread (readers, verifiers), which wait on it.
  class job_queue {
  public:
    /// Queues `j` and wakes a thread; false (and `j` untouched) once stopped.
    bool push(job& j);
    /// The next job, waiting for one; none once stopped with nothing left.
    std::optional<job> pop();
    /// Stops taking jobs and wakes every waiting thread; returns the jobs still queued when
    /// `take_queued`, else leaves them for pop() to drain.
    std::deque<job> stop(bool take_queued);

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<job> jobs_;
    bool stopped_ = false;
  };

  ssd_reader_options options_;
  std::atomic<std::uint64_t> reads_{0};
  std::atomic<std::uint64_t> bytes_{0};
  job_queue reads_queued_;
  std::vector<std::thread> threads_;
  job_queue verifies_queued_; ///< read chunks waiting for their checksum
  std::vector<std::thread> verifiers_;
};

} // namespace thaw
