#pragma once
/// thaw's data plane (ARCHITECTURE.md section 9): nodes move checkpoint chunks between their DRAM
/// tiers with UCX RMA reads. A node registers its chunk pool once, publishes the segments of a
/// model it holds in DRAM under a key, and a peer that lacks the model fetches it with `fetch`.
///
/// One `data_plane` is one UCX context and worker with a progress thread in wakeup mode and a
/// listener on address:port. Requests (describe, fetch-start, fetch-end) are Cap'n Proto frames
/// (schema/data_plane.capnp) carried by UCX active messages; the bytes themselves move with
/// ucp_get_nbx straight from the server's memory into the client's, in pieces, several in flight.
///
/// A fetch pins the served entry from fetch-start to fetch-end, so `unpublish` can wait until no
/// peer still reads memory the caller is about to reuse. A pin held by a peer whose connection
/// breaks is released when the endpoint error arrives.
///
/// Thread safety: every method may be called from any thread, concurrently, except `stop` and
/// the destructor, which must not race with calls in flight.
///
/// Transports: UCX picks them; UCX_TLS and the other UCX_* environment variables are honoured,
/// none is needed. Frames travel on an endpoint with peer error handling (TCP in UCX 1.13, so a
/// refused or dead peer is noticed at once); the gets on a second endpoint without it, so that on
/// one host UCX may read memory from `allocate_memory` directly through System V / POSIX shared
/// memory (about the raw ucp_get_nbx rate, `thaw bench ucx`); the first read of a peer's memory
/// also maps it into this process, which a fetch does ahead of its copies on a thread of its own
/// (data_plane_fetch.cpp: populate_ahead). Gets UCX cannot do directly
/// (registered memory, or other hosts over TCP) are emulated with messages; the fetcher then asks
/// the server to poll for the rest of the fetch, which keeps them at a usable, lower rate.

#include "runtime/common/error.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stop_token>
#include <string>
#include <vector>

namespace thaw::transport {

/// The protocol version carried in every frame; a peer with another one is refused.
inline constexpr std::uint32_t data_plane_protocol_version = 1;

struct data_plane_options {
  std::string address = "127.0.0.1";  ///< Listen address (IPv4 or IPv6 literal).
  std::uint16_t port = 0;             ///< Listen port; 0 picks a free one (see `port()`).
  std::size_t piece_bytes = 4u << 20; ///< Bytes per RMA get during a fetch.
  std::size_t pieces_in_flight = 8;   ///< Gets outstanding at once during a fetch.
  /// Bound on every wait for a peer (connection, a reply, a piece): a dead or hung peer turns
  /// into an io_error after this long instead of a hang.
  std::chrono::milliseconds timeout{10000};
  /// The version this plane speaks. Only tests change it, to check that peers refuse each other.
  std::uint32_t protocol_version = data_plane_protocol_version;
};

/// What a peer holds under a key.
struct fetch_info {
  std::vector<std::size_t> segment_sizes; ///< Bytes of each segment, in publish order.

  [[nodiscard]] std::size_t total_bytes() const;
};

/// Called as each piece of a fetch lands: segment index, offset in it, bytes. Runs on the
/// fetching thread; pieces may land out of order but every byte is reported exactly once.
using piece_callback =
    std::function<void(std::size_t segment, std::size_t offset, std::size_t bytes)>;

/// The address of this host's interface that reaches host:port: the source address the kernel
/// picks for it (a UDP socket is connected, nothing is sent). What a node listens on and
/// advertises to its peers when node.data_address is not set. Errors: io_error naming host:port.
[[nodiscard]] expected<std::string> local_address_towards(const std::string& host,
                                                          std::uint16_t port);

class data_plane {
public:
  /// Creates the UCX context and worker, starts the progress thread and listens on
  /// address:port. Errors: io_error (a UCX call failed, the port is taken).
  [[nodiscard]] static expected<std::unique_ptr<data_plane>> start(data_plane_options options = {});

  ~data_plane();
  data_plane(const data_plane&) = delete;
  data_plane& operator=(const data_plane&) = delete;

  /// Closes endpoints and the listener, joins the progress thread, unmaps registered memory.
  /// Idempotent; afterwards every other call fails with io_error.
  void stop();

  /// The port the listener is bound to.
  [[nodiscard]] std::uint16_t port() const noexcept;

  /// Registers a region (the node's chunk pool) for RMA, once. Published segments and fetch
  /// destinations must lie inside registered regions. Errors: invalid_argument (empty or
  /// overlapping a registered region), io_error.
  [[nodiscard]] status register_memory(std::span<std::byte> region);

  /// Allocates a region of `bytes` through UCX and registers it: the fast path for a chunk pool.
  /// UCX allocates it in shared memory where it can (System V or POSIX segments), and then a peer
  /// on the same host reads it with one direct copy; memory from `register_memory` is read through
  /// UCX's emulated gets instead (UCX 1.13 has no CMA lane for RMA), several times slower. The
  /// region is freed by `stop()`. Errors: invalid_argument (0 bytes), io_error.
  [[nodiscard]] expected<std::span<std::byte>> allocate_memory(std::size_t bytes);

  /// Makes `segments` readable by peers under `key`. The memory must stay valid until
  /// `unpublish(key)` returns. Errors: invalid_argument (a segment outside registered memory,
  /// empty key), already_exists (the key is published).
  [[nodiscard]] status publish(std::string key, std::vector<std::span<const std::byte>> segments);

  /// Withdraws `key` (new fetches get not_found) and waits until no peer read of it is in flight,
  /// so the caller may then free or reuse the memory. Unknown keys are ignored.
  void unpublish(const std::string& key);

  /// Asks host:port what it holds under `key`. Errors: not_found (the peer lacks the key),
  /// io_error (peer unreachable or silent past the timeout), unsupported (other protocol version).
  [[nodiscard]] expected<fetch_info> describe(const std::string& host, std::uint16_t port,
                                              const std::string& key);

  /// Reads every segment of `key` on host:port into the matching destination (same count, same
  /// sizes; destinations inside registered memory), `on_piece` reporting each piece as it lands.
  /// Errors: not_found (unknown key, naming key and peer), invalid_argument (count or size
  /// mismatch, unregistered destination), cancelled (`stop` requested; destinations then hold
  /// partial data), io_error (peer dead, refused or silent past the timeout), unsupported.
  [[nodiscard]] status fetch(const std::string& host, std::uint16_t port, const std::string& key,
                             std::span<const std::span<std::byte>> destinations,
                             const piece_callback& on_piece = {}, std::stop_token stop = {});

  struct impl;

private:
  explicit data_plane(std::unique_ptr<impl> impl);
  std::unique_ptr<impl> impl_;
};

} // namespace thaw::transport
