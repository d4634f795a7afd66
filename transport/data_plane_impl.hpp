#pragma once
/// The state behind `data_plane` (transport/data_plane.hpp), shared by its three source files:
/// data_plane.cpp (lifecycle, endpoints, request/reply), data_plane_serve.cpp (registered memory,
/// publishing, answering peers) and data_plane_fetch.cpp (describe and fetch). Internal.

#include "transport/data_plane.hpp"
#include "transport/data_plane_frames.hpp"
#include "transport/ucx_worker.hpp"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>

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
  };
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
  struct peer {
    impl* owner = nullptr;
    std::string name; // "host:port"
    ucp_ep_h ep = nullptr;
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
  [[nodiscard]] expected<std::shared_ptr<peer>> connect(const std::string& host, std::uint16_t port);
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
