#pragma once
/// POSIX helpers: an owning file descriptor, whole-file and positional I/O that retries short
/// transfers, and `THAW_POSIX_CHECK`, the one check macro for POSIX calls (CONVENTIONS.md rule 10).

#include "runtime/common/error.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

struct sockaddr_storage;

namespace thaw {

/// The host part of an IPv4 or IPv6 socket address as text ("" for another family).
[[nodiscard]] std::string socket_host(const sockaddr_storage& address);
/// Its port (0 for another family).
[[nodiscard]] std::uint16_t socket_port(const sockaddr_storage& address);

/// An error for a failed POSIX call: maps errno to errc (ENOENT -> not_found, ENOSPC/EFBIG ->
/// no_space, else io_error) and records the call, the subject (usually a path), file and line.
[[nodiscard]] error posix_error(int err, std::string_view call, std::string_view subject,
                                const char* file, int line);

/// Owns a file descriptor; closes it on destruction.
class unique_fd {
public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(other.release()) {}
  unique_fd& operator=(unique_fd&& other) noexcept;
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd();

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  int release() noexcept;

private:
  int fd_ = -1;
};

/// open(2) with a readable error naming the path.
[[nodiscard]] expected<unique_fd> open_file(const std::filesystem::path& path, int flags,
                                            int mode = 0644);

/// Size of an open file in bytes.
[[nodiscard]] expected<std::uint64_t> file_size(int fd, const std::filesystem::path& path);

/// Reads exactly `n` bytes at `offset`; a short file is `corrupt` ("truncated").
[[nodiscard]] status pread_full(int fd, void* buf, std::size_t n, std::uint64_t offset,
                                const std::filesystem::path& path);

/// Writes exactly `n` bytes at the current position.
[[nodiscard]] status write_full(int fd, const void* buf, std::size_t n,
                                const std::filesystem::path& path);

/// Reads a whole (small) file into a string.
[[nodiscard]] expected<std::string> read_text_file(const std::filesystem::path& path);

/// Writes a whole file (created or truncated), then fsyncs it.
[[nodiscard]] status write_text_file(const std::filesystem::path& path, std::string_view text);

/// A uniquely named directory `<parent>/.<stem>.tmp-XXXXXX` for write-then-rename.
[[nodiscard]] expected<std::filesystem::path> make_temp_dir(const std::filesystem::path& target);

/// Renames a finished temporary directory to its final name, refusing to replace an existing
/// one, and fsyncs the parent so that the rename is durable.
[[nodiscard]] status publish_dir(const std::filesystem::path& temp,
                                 const std::filesystem::path& target);

/// Removes a directory tree, ignoring errors (used to clean up after a failure).
void remove_tree_quietly(const std::filesystem::path& path) noexcept;

/// Drops the page cache of a file (posix_fadvise DONTNEED); used by benchmarks for cold reads.
[[nodiscard]] status drop_page_cache(const std::filesystem::path& path);

} // namespace thaw

/// Checks a POSIX call that returns -1 and sets errno; on failure returns the error from the
/// enclosing function. `subject` names what was being operated on (a path, usually).
#define THAW_POSIX_CHECK(call, subject)                                                            \
  do {                                                                                             \
    if ((call) == -1)                                                                              \
      return ::thaw::unexpected(::thaw::posix_error(errno, #call, (subject), __FILE__, __LINE__)); \
  } while (false)
