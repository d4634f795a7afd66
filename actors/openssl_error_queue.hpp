#pragma once
/// A fix for CAF 0.17.6's OpenSSL module, which leaves a failed TLS connection's errors in
/// OpenSSL's per-thread error queue. Every connection of a middleman is served on the same
/// thread, and OpenSSL's SSL_get_error reports any queued error as the result of the call it is
/// asked about: after one peer failed its handshake (a foreign certificate, a port scanner),
/// the next read on a healthy connection that merely waits for more bytes was taken for a
/// fatal error, and CAF closed it. A head with TLS lost every node that way.
///
/// The fix wraps the four OpenSSL calls the module makes (SSL_accept, SSL_connect, SSL_read,
/// SSL_write): this program defines them, so the dynamic linker binds CAF's calls to these
/// wrappers, which call OpenSSL's own (dlsym RTLD_NEXT) and, when the call failed for good,
/// empty the thread's error queue. The failed connection is still closed (SSL_get_error then
/// says SSL_ERROR_SYSCALL where it said SSL_ERROR_SSL; CAF closes on both) and the queue no
/// longer speaks for the others. A failed handshake is logged with OpenSSL's reasons and the
/// peer's address. thaw makes no other use of these calls.

#include <string>

namespace thaw {

/// OpenSSL's error queue of this thread as text ("; " between entries), emptied so that it does
/// not speak for the next call; "unknown OpenSSL error" when it held nothing.
[[nodiscard]] std::string take_openssl_errors();

/// True when this process's SSL_read and SSL_accept are the wrappers (the dynamic linker
/// bound them ahead of libssl's). Referencing it also keeps the wrappers in the link.
[[nodiscard]] bool openssl_error_queue_fixed();

} // namespace thaw
