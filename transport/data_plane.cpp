// data_plane lifecycle: start (context, worker, handlers, listener) and stop. Endpoints to peers
// and the request/reply exchange are in data_plane_peers.cpp, serving in data_plane_serve.cpp,
// describe and fetch in data_plane_fetch.cpp.

#include "transport/data_plane_impl.hpp"
#include "transport/ucx_check.hpp"

#include <arpa/inet.h>
#include <cstring>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

namespace thaw::transport {
namespace {

using impl = data_plane::impl;

// The reply handler: routes a reply to the call waiting for it.
ucs_status_t on_reply(void* arg, const void*, size_t, void* data, size_t length,
                      const ucp_am_recv_param_t* param) {
  auto* self = static_cast<impl*>(arg);
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0) {
    // Frames are sent eager-only; a rendezvous frame comes from a broken or foreign peer.
    spdlog::warn("data plane: dropped a rendezvous reply frame of {} bytes", length);
    return UCS_OK;
  }
  auto reply = decode_reply({static_cast<const std::byte*>(data), length});
  if (!reply) {
    spdlog::warn("data plane: dropped a reply: {}", reply.err().to_string());
    return UCS_OK;
  }
  std::lock_guard lock{self->pending_mutex};
  if (auto it = self->pendings.find(reply->id); it != self->pendings.end()) {
    it->second->result = std::move(*reply);
    it->second->done = true;
    self->pendings.erase(it);
    self->pending_cv.notify_all();
  }
  return UCS_OK;
}

// The request handler: answers a peer (the work is in data_plane_serve.cpp).
ucs_status_t on_request(void* arg, const void*, size_t, void* data, size_t length,
                        const ucp_am_recv_param_t* param) {
  auto* self = static_cast<impl*>(arg);
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0 ||
      (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) == 0) {
    spdlog::warn("data plane: dropped a request frame of {} bytes (rendezvous or no reply "
                 "endpoint)", length);
    return UCS_OK;
  }
  auto request = decode_request({static_cast<const std::byte*>(data), length});
  if (!request) {
    spdlog::warn("data plane: dropped a request: {}", request.err().to_string());
    return UCS_OK;
  }
  self->serve(*request, param->reply_ep);
  return UCS_OK;
}

void on_server_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* self = static_cast<impl*>(arg);
  spdlog::debug("data plane: peer endpoint closed: {}", ucs_status_string(status));
  // Closing an endpoint inside its own error callback is not allowed; do it next round.
  self->ucx->defer([self, ep] {
    self->release_leases_of(ep);
    bool ours = false;
    {
      std::lock_guard lock{self->serve_mutex};
      ours = self->server_eps.erase(ep) != 0;
    }
    if (ours) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      if (void* r = ucp_ep_close_nbx(ep, &p); UCS_PTR_IS_PTR(r))
        ucp_request_free(r);
    }
  });
}

void on_connection(ucp_conn_request_h request, void* arg) {
  auto* self = static_cast<impl*>(arg);
  self->ucx->defer([self, request] {
    if (self->stopped.load()) {
      (void)ucp_listener_reject(self->listener, request);
      return;
    }
    ucp_ep_params_t params{};
    params.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.conn_request = request;
    params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    params.err_handler = {on_server_ep_error, self};
    ucp_ep_h ep = nullptr;
    if (const ucs_status_t s = ucp_ep_create(self->ucx->worker(), &params, &ep); s != UCS_OK) {
      spdlog::warn("data plane: accepting a peer: ucp_ep_create: {}", ucs_status_string(s));
      return;
    }
    std::lock_guard lock{self->serve_mutex};
    self->server_eps.insert(ep);
  });
}


} // namespace

std::size_t fetch_info::total_bytes() const {
  std::size_t n = 0;
  for (auto s : segment_sizes)
    n += s;
  return n;
}

data_plane::data_plane(std::unique_ptr<impl> i) : impl_(std::move(i)) {}

data_plane::~data_plane() { stop(); }

std::uint16_t data_plane::port() const noexcept { return impl_->port; }

expected<std::unique_ptr<data_plane>> data_plane::start(data_plane_options options) {
  if (options.piece_bytes == 0 || options.pieces_in_flight == 0)
    return make_error(errc::invalid_argument,
                      "data plane: piece_bytes and pieces_in_flight must be positive");
  auto state = std::make_unique<impl>();
  state->options = std::move(options);
  impl* self = state.get();
  std::unique_ptr<data_plane> plane{new data_plane(std::move(state))};

  THAW_ASSIGN(self->ucx, ucx_worker::create());
  for (auto [id, cb] : {std::pair{am_request, &on_request}, std::pair{am_reply, &on_reply}}) {
    ucp_am_handler_param_t hp{};
    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                    UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    hp.id = id;
    hp.cb = cb;
    hp.arg = self;
    hp.flags = UCP_AM_FLAG_WHOLE_MSG;
    THAW_UCX_CHECK(ucp_worker_set_am_recv_handler(self->ucx->worker(), &hp), "data plane");
  }

  const std::string where = self->options.address + ":" + std::to_string(self->options.port);
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  if (auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
      ::inet_pton(AF_INET, self->options.address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(self->options.port);
    addr_len = sizeof(sockaddr_in);
  } else if (auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
             ::inet_pton(AF_INET6, self->options.address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(self->options.port);
    addr_len = sizeof(sockaddr_in6);
  } else {
    return make_error(errc::invalid_argument,
                      "data plane: address '" + self->options.address + "' is not an IP literal");
  }
  ucp_listener_params_t lp{};
  lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
  lp.sockaddr.addrlen = addr_len;
  lp.conn_handler = {on_connection, self};
  THAW_UCX_CHECK(ucp_listener_create(self->ucx->worker(), &lp, &self->listener), where);

  ucp_listener_attr_t la{};
  la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  THAW_UCX_CHECK(ucp_listener_query(self->listener, &la), where);
  if (la.sockaddr.ss_family == AF_INET)
    self->port = ntohs(reinterpret_cast<const sockaddr_in*>(&la.sockaddr)->sin_port);
  else
    self->port = ntohs(reinterpret_cast<const sockaddr_in6*>(&la.sockaddr)->sin6_port);

  ucp_address_t* address = nullptr;
  std::size_t address_size = 0;
  THAW_UCX_CHECK(ucp_worker_get_address(self->ucx->worker(), &address, &address_size), where);
  const auto* address_bytes = reinterpret_cast<const std::byte*>(address);
  self->worker_address.assign(address_bytes, address_bytes + address_size);
  ucp_worker_release_address(self->ucx->worker(), address);

  THAW_TRY(self->ucx->start_progress());
  spdlog::debug("data plane: listening on {}:{} ({})", self->options.address, self->port,
                self->ucx->wakeup_mode() ? "wakeup mode" : "polling");
  return plane;
}

void data_plane::stop() {
  impl& s = *impl_;
  if (s.stopped.exchange(true) || !s.ucx)
    return;
  {
    // Waiters wake and see `stopped`.
    std::lock_guard lock{s.pending_mutex};
    for (auto& [id, p] : s.pendings) {
      p->result = make_error(errc::io_error, "data plane stopped");
      p->done = true;
    }
    s.pendings.clear();
    s.pending_cv.notify_all();
  }
  s.serve_cv.notify_all();
  s.ucx->stop_progress();
  if (s.listener != nullptr) {
    ucp_listener_destroy(s.listener);
    s.listener = nullptr;
  }

  // Close every endpoint; force, since a graceful flush could wait on a dead peer.
  std::vector<ucp_ep_h> eps;
  {
    std::lock_guard lock{s.serve_mutex};
    eps.assign(s.server_eps.begin(), s.server_eps.end());
    s.server_eps.clear();
    s.leases.clear();
  }
  std::vector<void*> closing;
  {
    std::vector<std::shared_ptr<impl::peer>> cached;
    {
      std::lock_guard lock{s.peers_mutex};
      for (auto& [name, p] : s.peers) {
        cached.push_back(p);
        s.closed_peers.push_back(p);
      }
      s.peers.clear();
    }
    for (auto& p : cached)
      (void)s.close_peer(*p, closing, true);
  }
  for (ucp_ep_h ep : eps) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    if (void* r = ucp_ep_close_nbx(ep, &p); UCS_PTR_IS_PTR(r))
      closing.push_back(r);
  }
  for (void* r : closing) {
    s.ucx->progress_until([r] { return ucp_request_check_status(r) != UCS_INPROGRESS; },
                          1'000'000);
    ucp_request_free(r);
  }
  s.ucx->progress_until([] { return false; }, 100); // let closes and deferred work settle
  {
    std::lock_guard lock{s.regions_mutex};
    for (auto& r : s.regions)
      (void)ucp_mem_unmap(s.ucx->context(), r.memh);
    s.regions.clear();
  }
  s.ucx.reset();
}

status impl::check_running() const {
  if (stopped.load())
    return make_error(errc::io_error, "data plane is stopped");
  return {};
}

} // namespace thaw::transport
