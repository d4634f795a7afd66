// The fetching half of data_plane: describe, and fetch with RMA gets in pieces.

#include "transport/data_plane_impl.hpp"
#include "transport/ucx_check.hpp"

#include <atomic>
#include <deque>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <thread>

namespace thaw::transport {
namespace {

using impl = data_plane::impl;

// Turns a reply code into the caller's error.
status check_reply(const reply_frame& reply, const std::string& key, const std::string& peer) {
  switch (reply.code) {
  case reply_code::ok: return {};
  case reply_code::not_found:
    return make_error(errc::not_found, "'" + key + "' is not published on " + peer);
  case reply_code::unsupported:
    return make_error(errc::unsupported, peer + ": " + reply.message);
  case reply_code::invalid: break;
  }
  return make_error(errc::io_error, peer + " rejected the request: " + reply.message);
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 // Linux 5.14; older headers lack the name
#endif

/// Maps a peer's memory into this process ahead of the gets that read it. On one host UCX reads
/// a peer's segments through a shared-memory mapping that the first read of each page fills in
/// fault by fault (a 2 GiB model: half a million faults, most of a first fetch's time). Where
/// UCX can give a local address for the remote memory (ucp_rkey_ptr: shared memory), a thread
/// of its own populates the mapping segment by segment, in fetch order, ahead of the copies,
/// with one MADV_POPULATE_READ per segment. Elsewhere (TCP, other hosts) it does nothing.
class populate_ahead {
public:
  populate_ahead(std::vector<std::pair<const void*, std::size_t>> ranges)
      : ranges_(std::move(ranges)) {
    if (!ranges_.empty())
      thread_ = std::thread{[this] { run(); }};
  }
  ~populate_ahead() {
    stop_.store(true);
    if (thread_.joinable())
      thread_.join();
  }
  populate_ahead(const populate_ahead&) = delete;
  populate_ahead& operator=(const populate_ahead&) = delete;

private:
  void run() {
    const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    for (const auto& [ptr, bytes] : ranges_) {
      if (stop_.load())
        return;
      const auto begin = reinterpret_cast<std::uintptr_t>(ptr) / page * page;
      const auto end = reinterpret_cast<std::uintptr_t>(ptr) + bytes;
      if (::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ) != 0)
        return; // an older kernel: the gets fault the pages in as before
    }
  }

  std::vector<std::pair<const void*, std::size_t>> ranges_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// Local addresses of `segments` when UCX maps the peer's memory here, else empty.
std::vector<std::pair<const void*, std::size_t>>
mapped_ranges(const std::vector<segment_desc>& segments, const std::vector<ucp_rkey_h>& rkeys) {
  std::vector<std::pair<const void*, std::size_t>> out;
  for (const auto& seg : segments) {
    void* local = nullptr;
    if (ucp_rkey_ptr(rkeys[seg.region], seg.address, &local) != UCS_OK || local == nullptr)
      return {};
    out.emplace_back(local, seg.size);
  }
  return out;
}

// One RMA get of a fetch.
struct piece {
  std::size_t segment = 0;
  std::size_t offset = 0;
  std::size_t bytes = 0;
  struct fetch_state* state = nullptr;
};

// Completions land here from the progress thread; the fetching thread drains them.
struct fetch_state {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::pair<piece*, ucs_status_t>> landed;
  std::vector<piece> pieces; // owned here: callbacks point into it
  impl* owner = nullptr;
};

void on_get_done(void* request, ucs_status_t status, void* user_data) {
  auto* p = static_cast<piece*>(user_data);
  fetch_state* st = p->state;
  {
    std::lock_guard lock{st->mutex};
    st->landed.emplace_back(p, status);
  }
  st->cv.notify_one();
  st->owner->ucx->end_op();
  ucp_request_free(request);
}

} // namespace

expected<fetch_info> data_plane::describe(const std::string& host, std::uint16_t port,
                                          const std::string& key) {
  impl& s = *impl_;
  THAW_ASSIGN(auto to, s.connect(host, port));
  request_frame req;
  req.kind = request_kind::describe;
  req.key = key;
  THAW_ASSIGN(reply_frame reply, s.call(to, std::move(req)));
  THAW_TRY(check_reply(reply, key, to->name));
  fetch_info info;
  for (const auto& seg : reply.segments)
    info.segment_sizes.push_back(seg.size);
  return info;
}

status data_plane::fetch(const std::string& host, std::uint16_t port, const std::string& key,
                         std::span<const std::span<std::byte>> destinations,
                         const piece_callback& on_piece, std::stop_token stop) {
  impl& s = *impl_;
  const std::string what = "fetch '" + key + "' from " + host + ":" + std::to_string(port);
  if (stop.stop_requested())
    return make_error(errc::cancelled, what + ": cancelled");
  // Validate before asking the peer for anything (CONVENTIONS.md rule 11).
  std::vector<ucp_mem_h> local_memh(destinations.size());
  for (std::size_t i = 0; i < destinations.size(); ++i) {
    const int region = s.find_region(destinations[i].data(), destinations[i].size());
    if (region < 0)
      return make_error(errc::invalid_argument, what + ": destination " + std::to_string(i) +
                                                    " is not inside registered memory");
    std::lock_guard lock{s.regions_mutex};
    local_memh[i] = s.regions[static_cast<std::size_t>(region)].memh;
  }

  THAW_ASSIGN(auto to, s.connect(host, port));
  request_frame start;
  start.kind = request_kind::fetch_start;
  start.key = key;
  THAW_ASSIGN(reply_frame reply, s.call(to, std::move(start)));
  THAW_TRY(check_reply(reply, key, to->name));

  // From here the peer holds a pin for us: release it on every path out. The shared lock keeps
  // the endpoints and rkeys alive while we use them.
  std::shared_lock use{to->use};
  std::vector<ucp_rkey_h> rkeys;
  auto finish = [&](status result) -> status {
    if (!to->closed.load()) {
      request_frame end;
      end.version = s.options.protocol_version;
      end.kind = request_kind::fetch_end;
      end.lease = reply.lease;
      if (auto sent = s.send_frame(to->ep, am_request, encode(end), true, to->name); !sent)
        spdlog::debug("data plane: fetch-end to {}: {}", to->name, sent.err().to_string());
    }
    return result;
  };
  if (to->closed.load())
    return make_error(errc::io_error, what + ": connection closed: " + to->failure);

  if (reply.segments.size() != destinations.size())
    return finish(make_error(errc::invalid_argument,
                             what + ": the peer has " + std::to_string(reply.segments.size()) +
                                 " segments, " + std::to_string(destinations.size()) +
                                 " destinations given"));
  for (std::size_t i = 0; i < destinations.size(); ++i) {
    if (reply.segments[i].size != destinations[i].size())
      return finish(make_error(errc::invalid_argument,
                               what + ": segment " + std::to_string(i) + " has " +
                                   std::to_string(reply.segments[i].size) + " bytes, destination " +
                                   std::to_string(destinations[i].size())));
    if (reply.segments[i].region >= reply.rkeys.size())
      return finish(make_error(errc::corrupt, what + ": segment " + std::to_string(i) +
                                                  " names a missing rkey"));
  }
  auto data_ep = s.data_endpoint(*to, reply.worker_address);
  if (!data_ep)
    return finish(std::move(data_ep).err());
  for (const auto& packed : reply.rkeys) {
    auto k = s.rkey_for(*to, *data_ep, packed);
    if (!k)
      return finish(std::move(k).err());
    rkeys.push_back(*k);
  }

  // The peer's memory mapped ahead of the copies, where it is mapped at all; stopped and joined
  // before the rkeys can go (it is declared after the lock that keeps them).
  populate_ahead prefault{mapped_ranges(reply.segments, rkeys)};

  // Cut the segments into pieces, then keep `pieces_in_flight` gets outstanding.
  auto state = std::make_unique<fetch_state>();
  state->owner = &s;
  std::vector<piece>& pieces = state->pieces;
  for (std::size_t i = 0; i < destinations.size(); ++i)
    for (std::size_t off = 0; off < destinations[i].size(); off += s.options.piece_bytes)
      pieces.push_back({i, off, std::min(s.options.piece_bytes, destinations[i].size() - off),
                        state.get()});

  std::size_t next = 0, in_flight = 0, done = 0;
  bool asked_to_poll = false;
  status result;
  auto land = [&](const piece& p) {
    ++done;
    if (on_piece)
      on_piece(p.segment, p.offset, p.bytes);
  };
  while (done < pieces.size()) {
    if (stop.stop_requested() && result) {
      result = make_error(errc::cancelled, what + ": cancelled");
    }
    if (to->failed.load() && result)
      result = make_error(errc::io_error, what + ": connection failed: " + to->failure);
    if (!result && in_flight == 0)
      break;
    while (result && next < pieces.size() && in_flight < s.options.pieces_in_flight) {
      piece& p = pieces[next++];
      const auto& seg = reply.segments[p.segment];
      ucp_request_param_t rp{};
      rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                        UCP_OP_ATTR_FIELD_MEMH;
      rp.cb.send = on_get_done;
      rp.user_data = &p;
      rp.memh = local_memh[p.segment];
      void* r = ucp_get_nbx(*data_ep, destinations[p.segment].data() + p.offset, p.bytes,
                            seg.address + p.offset, rkeys[seg.region], &rp);
      if (r == nullptr) {
        land(p); // completed in place (shared memory copies often do)
      } else if (UCS_PTR_IS_ERR(r)) {
        result = ucx_error(UCS_PTR_STATUS(r), "ucp_get_nbx", what, __FILE__, __LINE__);
      } else {
        ++in_flight;
        s.ucx->begin_op();
        if (!asked_to_poll) {
          // Not done in place: UCX emulates the get with messages the server must answer.
          asked_to_poll = true;
          request_frame poll;
          poll.version = s.options.protocol_version;
          poll.kind = request_kind::fetch_poll;
          poll.lease = reply.lease;
          if (auto sent = s.send_frame(to->ep, am_request, encode(poll), true, to->name); !sent)
            spdlog::debug("data plane: fetch-poll to {}: {}", to->name, sent.err().to_string());
        }
      }
    }
    if (in_flight == 0)
      continue;
    std::unique_lock lock{state->mutex};
    if (!state->cv.wait_for(lock, s.options.timeout, [&] { return !state->landed.empty(); })) {
      // A get that never completes may still write into the destinations later; keep the state
      // alive rather than let its callback touch freed memory.
      spdlog::error("data plane: {}: {} gets stuck past the timeout", what, in_flight);
      (void)state.release();
      return finish(make_error(errc::io_error, what + ": no progress within " +
                                                   std::to_string(s.options.timeout.count()) +
                                                   " ms"));
    }
    auto landed = std::move(state->landed);
    state->landed.clear();
    lock.unlock();
    for (auto [p, st] : landed) {
      --in_flight;
      if (st != UCS_OK) {
        if (result)
          result = ucx_error(st, "ucp_get_nbx", what, __FILE__, __LINE__);
      } else if (result) {
        land(*p);
      }
    }
  }
  return finish(std::move(result));
}

} // namespace thaw::transport
