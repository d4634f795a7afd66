// The serving half of data_plane: registered memory, published entries, and answers to peers'
// describe / fetch-start / fetch-end requests.

#include "transport/data_plane_impl.hpp"
#include "transport/ucx_check.hpp"

#include <algorithm>
#include <spdlog/spdlog.h>

namespace thaw::transport {

using impl = data_plane::impl;

int impl::find_region(const void* p, std::size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  std::lock_guard lock{regions_mutex};
  for (std::size_t i = 0; i < regions.size(); ++i) {
    const auto& r = regions[i];
    if (b >= r.base && n <= r.size && static_cast<std::size_t>(b - r.base) <= r.size - n)
      return static_cast<int>(i);
  }
  return -1;
}

status data_plane::register_memory(std::span<std::byte> region) {
  impl& s = *impl_;
  THAW_TRY(s.check_running());
  if (region.empty())
    return make_error(errc::invalid_argument, "register_memory: empty region");
  std::unique_lock lock{s.regions_mutex};
  for (const auto& r : s.regions) {
    if (region.data() < r.base + r.size && r.base < region.data() + region.size())
      return make_error(errc::invalid_argument,
                        "register_memory: region overlaps one registered before");
  }
  impl::region r;
  r.base = region.data();
  r.size = region.size();
  ucp_mem_map_params_t mp{};
  mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  mp.address = region.data();
  mp.length = region.size();
  THAW_UCX_CHECK(ucp_mem_map(s.ucx->context(), &mp, &r.memh), "register_memory");
  lock.unlock();
  return s.add_region(std::move(r));
}

expected<std::span<std::byte>> data_plane::allocate_memory(std::size_t bytes) {
  impl& s = *impl_;
  THAW_TRY(s.check_running());
  if (bytes == 0)
    return make_error(errc::invalid_argument, "allocate_memory: 0 bytes");
  impl::region r;
  ucp_mem_map_params_t mp{};
  mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  mp.length = bytes;
  mp.flags = UCP_MEM_MAP_ALLOCATE;
  THAW_UCX_CHECK(ucp_mem_map(s.ucx->context(), &mp, &r.memh), "allocate_memory");
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  if (ucs_status_t st = ucp_mem_query(r.memh, &attr); st != UCS_OK) {
    (void)ucp_mem_unmap(s.ucx->context(), r.memh);
    return ucx_error(st, "ucp_mem_query", "allocate_memory", __FILE__, __LINE__);
  }
  r.base = static_cast<std::byte*>(attr.address);
  r.size = bytes; // UCX may round the length up; the caller asked for `bytes`
  THAW_TRY(s.add_region(std::move(r)));
  return std::span<std::byte>{static_cast<std::byte*>(attr.address), bytes};
}

status impl::add_region(region r) {
  void* packed = nullptr;
  std::size_t packed_size = 0;
  if (ucs_status_t st = ucp_rkey_pack(ucx->context(), r.memh, &packed, &packed_size);
      st != UCS_OK) {
    (void)ucp_mem_unmap(ucx->context(), r.memh);
    return ucx_error(st, "ucp_rkey_pack", "register_memory", __FILE__, __LINE__);
  }
  const auto* bytes = static_cast<const std::byte*>(packed);
  r.packed_rkey.assign(bytes, bytes + packed_size);
  ucp_rkey_buffer_release(packed);
  std::lock_guard lock{regions_mutex};
  regions.push_back(std::move(r));
  return {};
}

status data_plane::publish(std::string key, std::vector<std::span<const std::byte>> segments) {
  impl& s = *impl_;
  THAW_TRY(s.check_running());
  if (key.empty())
    return make_error(errc::invalid_argument, "publish: empty key");
  auto e = std::make_shared<impl::entry>();
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const auto& seg = segments[i];
    const int region = s.find_region(seg.data(), seg.size());
    if (region < 0)
      return make_error(errc::invalid_argument, "publish '" + key + "': segment " +
                                                    std::to_string(i) +
                                                    " is not inside registered memory");
    e->segments.push_back({reinterpret_cast<std::uint64_t>(seg.data()), seg.size(),
                           static_cast<std::uint32_t>(region)});
  }
  std::lock_guard lock{s.serve_mutex};
  if (!s.entries.emplace(key, std::move(e)).second)
    return make_error(errc::already_exists, "publish: '" + key + "' is already published");
  return {};
}

void data_plane::unpublish(const std::string& key) {
  impl& s = *impl_;
  std::unique_lock lock{s.serve_mutex};
  auto it = s.entries.find(key);
  if (it == s.entries.end())
    return;
  auto e = it->second;
  s.entries.erase(it);
  // Pins drop on fetch-end or when the fetching peer's endpoint fails; stop() also ends the wait.
  s.serve_cv.wait(lock, [&] { return e->pins == 0 || s.stopped.load(); });
}

void impl::drop_lease(std::map<std::uint64_t, lease>::iterator it) {
  --it->second.pinned->pins;
  if (it->second.polling)
    ucx->end_op();
  leases.erase(it);
  serve_cv.notify_all();
}

void impl::release_leases_of(ucp_ep_h ep) {
  std::lock_guard lock{serve_mutex};
  for (auto it = leases.begin(); it != leases.end();) {
    if (it->second.ep == ep) {
      auto next = std::next(it);
      drop_lease(it);
      it = next;
    } else {
      ++it;
    }
  }
  serve_cv.notify_all();
}

void impl::serve(const request_frame& request, ucp_ep_h reply_ep) {
  reply_frame reply;
  reply.version = options.protocol_version;
  reply.id = request.id;

  if (request.version != options.protocol_version) {
    if (request.kind == request_kind::fetch_end || request.kind == request_kind::fetch_poll)
      return;
    reply.code = reply_code::unsupported;
    reply.message = "this node speaks data plane protocol version " +
                    std::to_string(options.protocol_version) + ", the request version " +
                    std::to_string(request.version);
  } else if (request.kind == request_kind::fetch_end || request.kind == request_kind::fetch_poll) {
    std::lock_guard lock{serve_mutex};
    auto it = leases.find(request.lease);
    if (it == leases.end() || it->second.ep != reply_ep)
      return;
    if (request.kind == request_kind::fetch_end) {
      drop_lease(it);
    } else if (!it->second.polling) {
      // The client's gets are emulated with messages this worker answers (registered memory on
      // one host, anything over TCP); waking per message is slow (measured on registered memory:
      // 0.06 GB/s sleeping, 0.7-0.9 GB/s polling). Direct shared-memory gets never ask, so the
      // thread sleeps through them and leaves the cores to the copy.
      it->second.polling = true;
      ucx->begin_op();
    }
    return; // neither is answered
  } else {
    std::lock_guard lock{serve_mutex};
    auto it = entries.find(request.key);
    if (it == entries.end()) {
      reply.code = reply_code::not_found;
      reply.message = "no entry '" + request.key + "'";
    } else if (request.kind == request_kind::describe) {
      for (const auto& seg : it->second->segments)
        reply.segments.push_back({0, seg.size, 0});
    } else {
      // fetch-start: pin the entry and hand out addresses and the rkeys of its regions.
      std::vector<std::uint32_t> used; // global region index per reply rkey
      {
        std::lock_guard rlock{regions_mutex};
        for (const auto& seg : it->second->segments) {
          auto pos = std::find(used.begin(), used.end(), seg.region);
          if (pos == used.end()) {
            used.push_back(seg.region);
            reply.rkeys.push_back(regions[seg.region].packed_rkey);
            pos = used.end() - 1;
          }
          reply.segments.push_back(
              {seg.address, seg.size, static_cast<std::uint32_t>(pos - used.begin())});
        }
      }
      ++it->second->pins;
      reply.lease = next_lease++;
      reply.worker_address = worker_address;
      leases.emplace(reply.lease, lease{it->second, reply_ep});
    }
  }
  // Replies go out between progress rounds rather than from inside the active-message handler.
  ucx->defer([this, reply_ep, bytes = encode(reply)]() mutable {
    if (auto s = send_frame(reply_ep, am_reply, std::move(bytes), false, "reply"); !s)
      spdlog::debug("data plane: {}", s.err().to_string());
  });
}

} // namespace thaw::transport
