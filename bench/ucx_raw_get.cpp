#include "bench/ucx_raw_get.hpp"

#include "bench/timing.hpp"
#include "transport/ucx_check.hpp"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <ucp/api/ucp.h>

namespace thaw::bench {
namespace {

// A context and worker of its own, cleaned up in reverse order.
struct ucx_base {
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;

  status init(std::uint64_t features) {
    ucp_config_t* config = nullptr;
    THAW_UCX_CHECK(ucp_config_read(nullptr, nullptr, &config), "raw get");
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = features;
    const ucs_status_t s = ucp_init(&params, config, &context);
    ucp_config_release(config);
    THAW_UCX_CHECK(s, "raw get");
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    THAW_UCX_CHECK(ucp_worker_create(context, &wp, &worker), "raw get");
    return {};
  }
  ~ucx_base() {
    if (worker != nullptr)
      ucp_worker_destroy(worker);
    if (context != nullptr)
      ucp_cleanup(context);
  }
};

void append(std::vector<std::byte>& out, const void* p, std::size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  out.insert(out.end(), b, b + n);
}

} // namespace

// --- target ---

struct raw_get_target::state {
  ucx_base ucx;
  std::span<std::byte> region;
  ucp_mem_h memh = nullptr;
  std::vector<std::byte> rkey;
  std::vector<std::byte> address;

  ~state() {
    if (memh != nullptr)
      (void)ucp_mem_unmap(ucx.context, memh);
  }
};

raw_get_target::raw_get_target(std::unique_ptr<state> s) : state_(std::move(s)) {}
raw_get_target::~raw_get_target() = default;

std::span<std::byte> raw_get_target::region() const { return state_->region; }

expected<std::unique_ptr<raw_get_target>> raw_get_target::start(std::size_t bytes) {
  auto s = std::make_unique<state>();
  THAW_TRY(s->ucx.init(UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP));
  ucp_mem_map_params_t mp{};
  mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  mp.length = bytes;
  mp.flags = UCP_MEM_MAP_ALLOCATE;
  THAW_UCX_CHECK(ucp_mem_map(s->ucx.context, &mp, &s->memh), "raw get");
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS;
  THAW_UCX_CHECK(ucp_mem_query(s->memh, &attr), "raw get");
  s->region = {static_cast<std::byte*>(attr.address), bytes};
  void* packed = nullptr;
  std::size_t packed_size = 0;
  THAW_UCX_CHECK(ucp_rkey_pack(s->ucx.context, s->memh, &packed, &packed_size), "raw get");
  append(s->rkey, packed, packed_size);
  ucp_rkey_buffer_release(packed);
  ucp_address_t* address = nullptr;
  std::size_t address_size = 0;
  THAW_UCX_CHECK(ucp_worker_get_address(s->ucx.worker, &address, &address_size), "raw get");
  append(s->address, address, address_size);
  ucp_worker_release_address(s->ucx.worker, address);
  return std::unique_ptr<raw_get_target>(new raw_get_target(std::move(s)));
}

std::vector<std::byte> raw_get_target::connection_blob() const {
  // base, size, address length, address, rkey length, rkey.
  std::vector<std::byte> out;
  const auto base = reinterpret_cast<std::uint64_t>(state_->region.data());
  const std::uint64_t size = state_->region.size();
  const std::uint64_t address_size = state_->address.size();
  const std::uint64_t rkey_size = state_->rkey.size();
  append(out, &base, sizeof base);
  append(out, &size, sizeof size);
  append(out, &address_size, sizeof address_size);
  append(out, state_->address.data(), address_size);
  append(out, &rkey_size, sizeof rkey_size);
  append(out, state_->rkey.data(), rkey_size);
  return out;
}

status raw_get_target::serve_until_readable(int fd) {
  int efd = -1;
  THAW_UCX_CHECK(ucp_worker_get_efd(state_->ucx.worker, &efd), "raw get");
  for (;;) {
    while (ucp_worker_progress(state_->ucx.worker) != 0) {
    }
    const ucs_status_t s = ucp_worker_arm(state_->ucx.worker);
    if (s == UCS_ERR_BUSY)
      continue;
    THAW_UCX_CHECK(s, "raw get");
    pollfd fds[2] = {{fd, POLLIN, 0}, {efd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR)
      return make_error(errc::io_error, std::string{"raw get: poll: "} + std::strerror(errno));
    if ((fds[0].revents & (POLLIN | POLLHUP)) != 0)
      return {};
  }
}

// --- reader ---

struct raw_get_reader::state {
  ucx_base ucx;
  ucp_ep_h ep = nullptr;
  ucp_rkey_h rkey = nullptr;
  ucp_mem_h memh = nullptr;
  std::span<std::byte> destination;
  std::uint64_t remote_base = 0;
  std::uint64_t size = 0;

  ~state() {
    if (rkey != nullptr)
      ucp_rkey_destroy(rkey);
    if (ep != nullptr) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      void* r = ucp_ep_close_nbx(ep, &p);
      if (UCS_PTR_IS_PTR(r)) {
        while (ucp_request_check_status(r) == UCS_INPROGRESS)
          ucp_worker_progress(ucx.worker);
        ucp_request_free(r);
      }
    }
    if (memh != nullptr)
      (void)ucp_mem_unmap(ucx.context, memh);
  }
};

raw_get_reader::raw_get_reader(std::unique_ptr<state> s) : state_(std::move(s)) {}
raw_get_reader::~raw_get_reader() = default;

expected<std::unique_ptr<raw_get_reader>>
raw_get_reader::connect(std::span<const std::byte> blob, std::span<std::byte> destination) {
  auto s = std::make_unique<state>();
  std::size_t at = 0;
  auto take = [&](void* out, std::size_t n) {
    if (at + n > blob.size())
      return false;
    std::memcpy(out, blob.data() + at, n);
    at += n;
    return true;
  };
  std::uint64_t address_size = 0, rkey_size = 0;
  if (!take(&s->remote_base, 8) || !take(&s->size, 8) || !take(&address_size, 8) ||
      at + address_size > blob.size())
    return make_error(errc::corrupt, "raw get: truncated connection blob");
  const std::byte* address = blob.data() + at;
  at += address_size;
  if (!take(&rkey_size, 8) || at + rkey_size > blob.size())
    return make_error(errc::corrupt, "raw get: truncated connection blob");
  const std::byte* rkey = blob.data() + at;
  if (destination.size() < s->size)
    return make_error(errc::invalid_argument, "raw get: destination smaller than the region");
  s->destination = destination;

  // AM as well: without it UCX 1.13 picks no CMA lane for RMA on user memory and falls back to
  // emulated gets (measured: 0.16 GB/s instead of several).
  THAW_TRY(s->ucx.init(UCP_FEATURE_RMA | UCP_FEATURE_AM));
  ucp_mem_map_params_t mp{};
  mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  mp.address = destination.data();
  mp.length = destination.size();
  THAW_UCX_CHECK(ucp_mem_map(s->ucx.context, &mp, &s->memh), "raw get");
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
  ep.address = reinterpret_cast<const ucp_address_t*>(address);
  THAW_UCX_CHECK(ucp_ep_create(s->ucx.worker, &ep, &s->ep), "raw get");
  THAW_UCX_CHECK(ucp_ep_rkey_unpack(s->ep, rkey, &s->rkey), "raw get");
  return std::unique_ptr<raw_get_reader>(new raw_get_reader(std::move(s)));
}

expected<double> raw_get_reader::read_all(std::size_t piece_bytes) {
  state& s = *state_;
  std::size_t done = 0;
  ucs_status_t failure = UCS_OK;
  struct sink {
    std::size_t* done;
    ucs_status_t* failure;
  } counters{&done, &failure};
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                   UCP_OP_ATTR_FIELD_MEMH;
  p.cb.send = [](void* request, ucs_status_t st, void* user) {
    auto* c = static_cast<sink*>(user);
    ++*c->done;
    if (st != UCS_OK)
      *c->failure = st;
    ucp_request_free(request);
  };
  p.user_data = &counters;
  p.memh = s.memh;

  const auto start = clock::now();
  std::size_t posted = 0;
  for (std::uint64_t off = 0; off < s.size; off += piece_bytes) {
    const std::size_t n = std::min<std::uint64_t>(piece_bytes, s.size - off);
    void* r = ucp_get_nbx(s.ep, s.destination.data() + off, n, s.remote_base + off, s.rkey, &p);
    if (UCS_PTR_IS_ERR(r))
      return transport::ucx_error(UCS_PTR_STATUS(r), "ucp_get_nbx", "raw get", __FILE__, __LINE__);
    if (r != nullptr)
      ++posted;
  }
  while (done < posted)
    ucp_worker_progress(s.ucx.worker);
  const double seconds = since(start);
  if (failure != UCS_OK)
    return transport::ucx_error(failure, "ucp_get_nbx", "raw get", __FILE__, __LINE__);
  return seconds;
}

} // namespace thaw::bench
