#include "runtime/loader/ssd_reader.hpp"

#include "runtime/common/hash.hpp"
#include "runtime/common/posix.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

namespace thaw {
namespace {

constexpr std::uint64_t direct_alignment = 4096;

std::string hex(std::uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string describe(const read_request& r) {
  return (r.file ? r.file->path().string() : r.origin) + ": chunk " +
         std::to_string(r.chunk_index) +
         " at byte offset " + std::to_string(r.offset);
}

} // namespace

expected<std::shared_ptr<const source_file>> source_file::open(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
  bool direct = true;
  if (fd < 0 && errno == EINVAL) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true))
      spdlog::warn("{}: the file system refuses O_DIRECT; reading through the page cache",
                   path.string());
    direct = false;
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  THAW_POSIX_CHECK(fd, path.string());
  if (!direct)
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  return std::shared_ptr<const source_file>(new source_file(path, fd, direct));
}

source_file::~source_file() { ::close(fd_); }

expected<std::unique_ptr<ssd_reader>> ssd_reader::create(const ssd_reader_options& opt) {
  if (opt.threads < 1)
    return make_error(errc::invalid_argument, "ssd reader: read_threads must be at least 1, not " +
                                                  std::to_string(opt.threads));
  if (opt.verify_threads < 1)
    return make_error(errc::invalid_argument,
                      "ssd reader: verify_threads must be at least 1, not " +
                          std::to_string(opt.verify_threads));
  return std::unique_ptr<ssd_reader>(new ssd_reader(opt));
}

ssd_reader::ssd_reader(const ssd_reader_options& opt) : options_(opt) {
  threads_.reserve(static_cast<std::size_t>(opt.threads));
  for (int i = 0; i < opt.threads; ++i)
    threads_.emplace_back([this] { run(); });
  for (int i = 0; i < opt.verify_threads; ++i)
    verifiers_.emplace_back([this] { verify_run(); });
}

bool ssd_reader::job_queue::push(job& j) {
  {
    std::lock_guard lock{mutex_};
    if (stopped_)
      return false;
    jobs_.push_back(std::move(j));
  }
  cv_.notify_one();
  return true;
}

std::optional<ssd_reader::job> ssd_reader::job_queue::pop() {
  std::unique_lock lock{mutex_};
  cv_.wait(lock, [this] { return stopped_ || !jobs_.empty(); });
  if (jobs_.empty())
    return std::nullopt;
  job j = std::move(jobs_.front());
  jobs_.pop_front();
  return j;
}

std::deque<ssd_reader::job> ssd_reader::job_queue::stop(bool take_queued) {
  std::deque<job> taken;
  {
    std::lock_guard lock{mutex_};
    stopped_ = true;
    if (take_queued)
      taken.swap(jobs_);
  }
  cv_.notify_all();
  return taken;
}

ssd_reader::~ssd_reader() {
  for (auto& j : reads_queued_.stop(true))
    j.done(make_error(errc::cancelled, describe(j.request) + ": reader shut down"));
  for (auto& t : threads_)
    t.join();
  // The readers are gone: what they handed on is all the verifiers will see, and they drain it.
  (void)verifies_queued_.stop(false);
  for (auto& t : verifiers_)
    t.join();
}

void ssd_reader::submit(read_request request, completion done) {
  job j{std::move(request), std::move(done)};
  if (!reads_queued_.push(j))
    j.done(make_error(errc::cancelled, describe(j.request) + ": reader shut down"));
}

void ssd_reader::verify_async(read_request request, completion done) {
  if (!needs_verify(request)) {
    done({});
    return;
  }
  job j{std::move(request), std::move(done)};
  if (!verifies_queued_.push(j))
    j.done(make_error(errc::cancelled, describe(j.request) + ": reader shut down"));
}

void ssd_reader::run() {
  while (auto j = reads_queued_.pop()) {
    auto result = read_bytes(j->request);
    if (result && needs_verify(j->request)) {
      if (verifies_queued_.push(*j))
        continue; // a verifier completes it
      result = verify(j->request); // verifiers stop only after the readers: not reached
    }
    j->done(std::move(result));
  }
}

void ssd_reader::verify_run() {
  while (auto j = verifies_queued_.pop())
    j->done(verify(j->request));
}

status ssd_reader::read(const read_request& r) {
  THAW_TRY(read_bytes(r));
  if (!needs_verify(r))
    return {};
  return verify(r);
}

status ssd_reader::verify(const read_request& r) const {
  const std::uint64_t got = xxh3_64(r.buffers, r.bytes);
  if (got != *r.checksum)
    return make_error(errc::corrupt, describe(r) + " (" + std::to_string(r.bytes) +
                                         " bytes): checksum mismatch: manifest " +
                                         hex(*r.checksum) + ", data " + hex(got));
  return {};
}

status ssd_reader::read_bytes(const read_request& r) {
  if (r.stop.stop_requested())
    return make_error(errc::cancelled, describe(r) + ": read cancelled");
  const source_file& file = *r.file;
  // O_DIRECT transfers whole blocks: a chunk that ends mid-block (only ever the end of a plain
  // file; checkpoint chunks are aligned) is read rounded up and the tail ignored.
  const std::uint64_t want =
      file.direct() ? (r.bytes + direct_alignment - 1) / direct_alignment * direct_alignment
                    : r.bytes;
  std::vector<iovec> iov;
  iov.reserve(r.buffers.size());
  std::uint64_t left = want;
  for (const auto& b : r.buffers) {
    if (left == 0)
      break;
    const auto take = std::min<std::uint64_t>(b.size(), left);
    iov.push_back(iovec{b.data(), static_cast<std::size_t>(take)});
    left -= take;
  }
  if (left != 0)
    return make_error(errc::invalid_argument, describe(r) + ": destination holds " +
                                                  std::to_string(want - left) + " of the " +
                                                  std::to_string(want) + " bytes to read");

  reads_.fetch_add(1);
  std::uint64_t done = 0;
  std::size_t first = 0;
  while (done < want) {
    const int count = static_cast<int>(std::min<std::size_t>(iov.size() - first, IOV_MAX));
    const ssize_t got =
        ::preadv(file.fd(), iov.data() + first, count, static_cast<off_t>(r.offset + done));
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0)
      return posix_error(errno, "preadv()", describe(r), __FILE__, __LINE__);
    if (got == 0)
      break; // end of file
    done += static_cast<std::uint64_t>(got);
    if (file.direct() && done % direct_alignment != 0)
      break; // only the end of the file stops O_DIRECT mid-block; reading on would be EINVAL
    // Step past what this call filled: whole pieces, then part of the next.
    auto n = static_cast<std::uint64_t>(got);
    while (first < iov.size() && n >= iov[first].iov_len) {
      n -= iov[first].iov_len;
      ++first;
    }
    if (n > 0) {
      iov[first].iov_base = static_cast<std::byte*>(iov[first].iov_base) + n;
      iov[first].iov_len -= static_cast<std::size_t>(n);
    }
  }
  if (done < r.bytes)
    return make_error(errc::corrupt, describe(r) + ": truncated: the chunk needs bytes up to " +
                                         std::to_string(r.offset + r.bytes) +
                                         " but the file ends at " + std::to_string(r.offset + done));
  bytes_.fetch_add(r.bytes);
  return {};
}

} // namespace thaw
