#pragma once
/// The state behind `data_plane` (transport/data_plane.hpp), shared by its source files:
/// data_plane.cpp (start, stop, UCX handlers), data_plane_peers.cpp (client endpoints, request and
/// reply), data_plane_serve.cpp (memory, publishing, answering peers) and data_plane_fetch.cpp
/// (describe and fetch). Internal.

#include "transport/data_plane.hpp"
#include "transport/data_plane_frames.hpp"
#include "transport/ucx_worker.hpp"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>

#include <ucp/api/ucp.h>

namespace thaw::transport {

/// Active message ids.
inline constexpr unsigned am_request = 0x7a01; ///< client -> server: request_frame
inline constexpr unsigned am_reply = 0x7a02;   ///< server -> client: reply_frame

struct data_plane::impl {
  data_plane_options options;
  std::unique_ptr<ucx_worker> ucx;
  ucp_listener_h listener = nullptr;
  std::uint16_t port = 0;
  std::vector<std::byte> worker_address; // handed out in fetch-start replies
  std::atomic<bool> stopped{false};

  // --- registered memory (data_plane_serve.cpp) ---
  struct region {
    std::byte* base = nullptr;
    std::size_t size = 0;
    ucp_mem_h memh = nullptr;
    std::vector<std::byte> packed_rkey;
  };
  std::mutex regions_mutex;
  std::vector<region> regions; // only grows until stop, so indices stay valid

  /// Packs the region's rkey and adds it (unmapping it on failure).
  [[nodiscard]] status add_region(region r);
  /// The index of the region holding [p, p+n), or -1.
  [[nodiscard]] int find_region(const void* p, std::size_t n);

  // --- serving (data_plane_serve.cpp) ---
  struct entry {
    std::vector<segment_desc> segments;
    int pins = 0; // fetches between fetch-start and fetch-end
  };
  struct lease {
    std::shared_ptr<entry> pinned;
    ucp_ep_h ep = nullptr; // the server-side endpoint of the fetching peer
    bool polling = false;  // the client asked for progress (fetch_poll): ucx->begin_op held
  };
  /// Drops a lease: unpins, stops polling for it. serve_mutex held.
  void drop_lease(std::map<std::uint64_t, lease>::iterator it);
  std::mutex serve_mutex;
  std::condition_variable serve_cv; // signalled when pins drop
  std::map<std::string, std::shared_ptr<entry>> entries;
  std::map<std::uint64_t, lease> leases;
  std::uint64_t next_lease = 1;
  std::set<ucp_ep_h> server_eps; // endpoints accepted by the listener

  /// Answers one request (progress thread); the reply, if any, goes back on `reply_ep`.
  void serve(const request_frame& request, ucp_ep_h reply_ep);
  /// Drops the pins held through a server endpoint that failed or closed.
  void release_leases_of(ucp_ep_h ep);

  // --- client side (data_plane.cpp, data_plane_fetch.cpp) ---
  // Two endpoints per peer. UCX 1.13 offers no shared-memory or CMA transport to endpoints with
  // peer error handling, so frames go over `ep` (connected to the listener, error handling on:
  // a refused or dead peer is noticed at once), and RMA reads over `data_ep`, created from the
  // worker address the peer hands out, without error handling, so that UCX may pick CMA or
  // shared memory on one host (measured: emulated gets over TCP reach 0.45 GB/s).
  struct peer {
    impl* owner = nullptr;
    std::string name; // "host:port"
    ucp_ep_h ep = nullptr;
    ucp_ep_h data_ep = nullptr; // guarded by impl::peers_mutex
    // Unpacked rkeys on data_ep by their packed bytes, kept for the next fetch: unpacking anew
    // re-attaches the peer's shared memory and faults in every page again (measured: a 512 MiB
    // fetch at 0.55 GB/s instead of the raw get's 2.5-3.7). Guarded by impl::peers_mutex.
    std::map<std::string, ucp_rkey_h, std::less<>> rkeys;
    // Shared by a caller using ep, data_ep or rkeys; exclusive to close them.
    std::shared_mutex use;
    std::atomic<bool> failed{false};
    std::atomic<bool> closed{false}; // ucp_ep_close_nbx issued
    std::string failure; // set before `failed`
  };
  std::mutex peers_mutex;
  std::map<std::string, std::shared_ptr<peer>> peers;
  std::vector<std::shared_ptr<peer>> closed_peers; // alive until stop: UCX may still hold them

  struct pending {
    peer* to = nullptr;
    bool done = false;
    expected<reply_frame> result{reply_frame{}};
  };
  std::mutex pending_mutex;
  std::condition_variable pending_cv;
  std::map<std::uint64_t, std::shared_ptr<pending>> pendings;
  std::atomic<std::uint64_t> next_request{1};

  /// The cached endpoint to host:port, connecting if there is none (or the old one failed).
  [[nodiscard]] expected<std::shared_ptr<peer>> connect(const std::string& host,
                                                        std::uint16_t port);
  /// The peer's RMA endpoint, created on first use from the worker address in a fetch-start reply.
  [[nodiscard]] expected<ucp_ep_h> data_endpoint(peer& to, const std::vector<std::byte>& address);
  /// The rkey for `packed` on the peer's data endpoint, unpacked once and cached.
  [[nodiscard]] expected<ucp_rkey_h> rkey_for(peer& to, ucp_ep_h data_ep,
                                              const std::vector<std::byte>& packed);
  /// Destroys a peer's rkeys and closes both its endpoints (once), adding the close requests
  /// still in progress to `closing`. Without `blocking`, gives up (returns false) while a caller
  /// uses the peer.
  bool close_peer(peer& p, std::vector<void*>& closing, bool blocking);
  /// close_peer from the progress thread: retries next round while the peer is in use.
  void close_failed_peer(peer* p);
  /// Sends a request to `to` and waits for its reply (bounded by options.timeout). Checks the
  /// reply's version; reply codes other than ok are left to the caller.
  [[nodiscard]] expected<reply_frame> call(const std::shared_ptr<peer>& to, request_frame request);
  /// Sends one frame without waiting for anything but local completion (UCX owns a copy).
  [[nodiscard]] status send_frame(ucp_ep_h ep, unsigned am_id, std::vector<std::byte> bytes,
                                  bool want_reply_ep, const std::string& peer_name);
  /// Marks a client endpoint failed, fails its pending calls and closes it (progress thread).
  void peer_failed(peer* p, ucs_status_t status);
  /// Checks that the plane is running.
  [[nodiscard]] status check_running() const;
};

} // namespace thaw::transport
