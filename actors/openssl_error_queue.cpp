#include "actors/openssl_error_queue.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "runtime/common/posix.hpp"

#include <dlfcn.h>
#include <spdlog/spdlog.h>
#include <string>
#include <sys/socket.h>

namespace thaw {
namespace {

/// OpenSSL's own function `name` (the next definition after this program's).
template <class F>
F real(const char* name) {
  static_assert(sizeof(F) == sizeof(void*));
  void* sym = ::dlsym(RTLD_NEXT, name);
  F f = nullptr;
  __builtin_memcpy(&f, &sym, sizeof f);
  return f;
}

using io_fn = int (*)(SSL*, void*, int);
using const_io_fn = int (*)(SSL*, const void*, int);
using handshake_fn = int (*)(SSL*);

/// The address of the peer on `ssl`'s socket, for messages ("?" when unknown).
std::string peer_of(SSL* ssl) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  const int fd = SSL_get_fd(ssl);
  if (fd < 0 || ::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return "?";
  const auto host = socket_host(addr);
  return host.empty() ? "?" : host + ":" + std::to_string(socket_port(addr));
}

/// After a call on `ssl` returned `ret`: a failure that is not a wait for the socket ends the
/// connection, and its errors must not stay queued for the thread's next call on another one.
/// A failed handshake is logged with OpenSSL's reasons (CAF says nothing of it): that is how
/// a peer with a foreign certificate shows in the head's log.
int forget_failure(SSL* ssl, int ret) {
  if (ret > 0)
    return ret;
  const int e = SSL_get_error(ssl, ret);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return ret;
  if (e == SSL_ERROR_SSL && !SSL_is_init_finished(ssl)) {
    spdlog::warn("TLS: refused a connection with {}: {}", peer_of(ssl), take_openssl_errors());
  }
  ERR_clear_error();
  return ret;
}

} // namespace

std::string take_openssl_errors() {
  std::string out;
  while (const auto code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    out += out.empty() ? "" : "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

bool openssl_error_queue_fixed() {
  return ::dlsym(RTLD_DEFAULT, "SSL_read") != ::dlsym(RTLD_NEXT, "SSL_read");
}

} // namespace thaw

// The wrappers: C linkage, the exact names and signatures of libssl's.
extern "C" {

int SSL_accept(SSL* ssl) {
  static const auto f = thaw::real<thaw::handshake_fn>("SSL_accept");
  return thaw::forget_failure(ssl, f(ssl));
}

int SSL_connect(SSL* ssl) {
  static const auto f = thaw::real<thaw::handshake_fn>("SSL_connect");
  return thaw::forget_failure(ssl, f(ssl));
}

int SSL_read(SSL* ssl, void* buf, int num) {
  static const auto f = thaw::real<thaw::io_fn>("SSL_read");
  return thaw::forget_failure(ssl, f(ssl, buf, num));
}

int SSL_write(SSL* ssl, const void* buf, int num) {
  static const auto f = thaw::real<thaw::const_io_fn>("SSL_write");
  return thaw::forget_failure(ssl, f(ssl, buf, num));
}

} // extern "C"
