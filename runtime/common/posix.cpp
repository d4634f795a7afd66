#include "runtime/common/posix.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <random>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace thaw {

std::string socket_host(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = {};
  const void* host = nullptr;
  if (address.ss_family == AF_INET)
    host = &reinterpret_cast<const sockaddr_in*>(&address)->sin_addr;
  else if (address.ss_family == AF_INET6)
    host = &reinterpret_cast<const sockaddr_in6*>(&address)->sin6_addr;
  if (host == nullptr || ::inet_ntop(address.ss_family, host, text, sizeof text) == nullptr)
    return {};
  return text;
}

std::uint16_t socket_port(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET)
    return ntohs(reinterpret_cast<const sockaddr_in*>(&address)->sin_port);
  if (address.ss_family == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&address)->sin6_port);
  return 0;
}

error posix_error(int err, std::string_view call, std::string_view subject, const char* file,
                  int line) {
  errc code = errc::io_error;
  if (err == ENOENT || err == ENOTDIR)
    code = errc::not_found;
  else if (err == ENOSPC || err == EFBIG || err == EDQUOT)
    code = errc::no_space;
  else if (err == EEXIST || err == ENOTEMPTY)
    code = errc::already_exists;
  std::string_view base{file};
  if (auto pos = base.rfind("/runtime/"); pos != std::string_view::npos)
    base = base.substr(pos + 1);
  std::string msg{subject};
  msg += ": ";
  msg += std::strerror(err);
  msg += " (";
  msg += call.substr(0, call.find('('));
  msg += " at ";
  msg += base;
  msg += ":";
  msg += std::to_string(line);
  msg += ")";
  return make_error(code, std::move(msg));
}

unique_fd& unique_fd::operator=(unique_fd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

unique_fd::~unique_fd() {
  if (fd_ >= 0)
    ::close(fd_);
}

int unique_fd::release() noexcept {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

expected<unique_fd> open_file(const std::filesystem::path& path, int flags, int mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  THAW_POSIX_CHECK(fd, path.string());
  return unique_fd{fd};
}

expected<std::uint64_t> file_size(int fd, const std::filesystem::path& path) {
  struct stat st {};
  THAW_POSIX_CHECK(::fstat(fd, &st), path.string());
  return static_cast<std::uint64_t>(st.st_size);
}

status pread_full(int fd, void* buf, std::size_t n, std::uint64_t offset,
                  const std::filesystem::path& path) {
  auto* out = static_cast<char*>(buf);
  std::size_t done = 0;
  while (done < n) {
    ssize_t got = ::pread(fd, out + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR)
      continue;
    THAW_POSIX_CHECK(got, path.string());
    if (got == 0)
      return make_error(errc::corrupt, path.string() + ": truncated: wanted " + std::to_string(n) +
                                           " bytes at offset " + std::to_string(offset) +
                                           ", file ends after " + std::to_string(done));
    done += static_cast<std::size_t>(got);
  }
  return {};
}

status write_full(int fd, const void* buf, std::size_t n, const std::filesystem::path& path) {
  const auto* in = static_cast<const char*>(buf);
  std::size_t done = 0;
  while (done < n) {
    ssize_t put = ::write(fd, in + done, n - done);
    if (put < 0 && errno == EINTR)
      continue;
    THAW_POSIX_CHECK(put, path.string());
    done += static_cast<std::size_t>(put);
  }
  return {};
}

expected<std::string> read_text_file(const std::filesystem::path& path) {
  THAW_ASSIGN(auto fd, open_file(path, O_RDONLY));
  THAW_ASSIGN(auto size, file_size(fd.get(), path));
  std::string text(size, '\0');
  THAW_TRY(pread_full(fd.get(), text.data(), text.size(), 0, path));
  return text;
}

status write_text_file(const std::filesystem::path& path, std::string_view text) {
  THAW_ASSIGN(auto fd, open_file(path, O_WRONLY | O_CREAT | O_TRUNC));
  THAW_TRY(write_full(fd.get(), text.data(), text.size(), path));
  THAW_POSIX_CHECK(::fsync(fd.get()), path.string());
  return {};
}

expected<std::filesystem::path> make_temp_dir(const std::filesystem::path& target) {
  auto parent = target.parent_path();
  if (parent.empty())
    parent = ".";
  std::string name = "." + target.filename().string() + ".tmp-XXXXXX";
  std::string templ = (parent / name).string();
  if (::mkdtemp(templ.data()) == nullptr)
    return unexpected(posix_error(errno, "mkdtemp()", templ, __FILE__, __LINE__));
  // mkdtemp makes the directory 0700; once renamed it is an ordinary directory, so give it the
  // mode mkdir(2) would have (0777 less the umask).
  mode_t mask = ::umask(0);
  ::umask(mask);
  THAW_POSIX_CHECK(::chmod(templ.c_str(), 0777 & ~mask), templ);
  return std::filesystem::path{templ};
}

status publish_dir(const std::filesystem::path& temp, const std::filesystem::path& target) {
  // renameat2(RENAME_NOREPLACE) would be atomic against a racing writer; rename(2) of a directory
  // onto a non-empty one fails anyway, and onto an empty one we check first.
  if (std::filesystem::exists(target))
    return make_error(errc::already_exists, target.string() + ": already exists; not replaced");
  THAW_POSIX_CHECK(::rename(temp.c_str(), target.c_str()), target.string());
  auto parent = target.parent_path();
  if (parent.empty())
    parent = ".";
  THAW_ASSIGN(auto dir, open_file(parent, O_RDONLY | O_DIRECTORY));
  THAW_POSIX_CHECK(::fsync(dir.get()), parent.string());
  return {};
}

void remove_tree_quietly(const std::filesystem::path& path) noexcept {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

status drop_page_cache(const std::filesystem::path& path) {
  THAW_ASSIGN(auto fd, open_file(path, O_RDONLY));
  ::fdatasync(fd.get());
  int rc = ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  if (rc != 0)
    return unexpected(posix_error(rc, "posix_fadvise()", path.string(), __FILE__, __LINE__));
  return {};
}

} // namespace thaw
