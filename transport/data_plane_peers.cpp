// data_plane's client endpoints: connecting to peers (a framing endpoint with error handling and
// an RMA endpoint without), their failure and closing, cached rkeys, and the request/reply
// exchange (call, send_frame).

#include "transport/data_plane_impl.hpp"
#include "transport/ucx_check.hpp"

#include "runtime/common/posix.hpp"

#include <cerrno>
#include <cstring>
#include <netdb.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <utility>

namespace thaw::transport {
namespace {

using impl = data_plane::impl;

void on_peer_ep_error(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* p = static_cast<impl::peer*>(arg);
  p->owner->peer_failed(p, status);
}

void on_send_done(void* request, ucs_status_t status, void* user_data) {
  auto* holder = static_cast<std::pair<impl*, std::vector<std::byte>>*>(user_data);
  if (status != UCS_OK)
    spdlog::debug("data plane: frame send failed: {}", ucs_status_string(status));
  holder->first->ucx->end_op();
  delete holder;
  ucp_request_free(request);
}

// Resolves host:port for a client endpoint (numeric or a name).
expected<sockaddr_storage> resolve(const std::string& host, std::uint16_t port, socklen_t& len,
                                   int socktype = SOCK_STREAM) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0)
    return make_error(errc::io_error, host + ":" + service + ": " + ::gai_strerror(rc));
  sockaddr_storage out{};
  std::memcpy(&out, found->ai_addr, found->ai_addrlen);
  len = found->ai_addrlen;
  ::freeaddrinfo(found);
  return out;
}

} // namespace

expected<std::string> local_address_towards(const std::string& host, std::uint16_t port) {
  socklen_t len = 0;
  THAW_ASSIGN(auto to, resolve(host, port, len, SOCK_DGRAM));
  const std::string what = "the local address towards " + host + ":" + std::to_string(port);
  unique_fd fd{::socket(to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  if (fd.get() < 0)
    return unexpected(posix_error(errno, "socket()", what, __FILE__, __LINE__));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), len) != 0)
    return unexpected(posix_error(errno, "connect()", what, __FILE__, __LINE__));
  sockaddr_storage local{};
  socklen_t local_len = sizeof local;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &local_len) != 0)
    return unexpected(posix_error(errno, "getsockname()", what, __FILE__, __LINE__));
  auto text = socket_host(local);
  if (text.empty())
    return make_error(errc::io_error, what + ": address family " +
                                          std::to_string(local.ss_family) + " is not IP");
  return text;
}

status impl::send_frame(ucp_ep_h ep, unsigned am_id, std::vector<std::byte> bytes,
                        bool want_reply_ep, const std::string& peer_name) {
  // UCX may keep reading the buffer after this returns; the holder lives until completion.
  auto* holder = new std::pair<impl*, std::vector<std::byte>>(this, std::move(bytes));
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                   UCP_OP_ATTR_FIELD_FLAGS;
  p.cb.send = on_send_done;
  p.user_data = holder;
  // Frames are small: eager keeps the receiver's handler simple (no rendezvous receive).
  p.flags = UCP_AM_SEND_FLAG_EAGER;
  if (want_reply_ep)
    p.flags |= UCP_AM_SEND_FLAG_REPLY;
  void* r = ucp_am_send_nbx(ep, am_id, nullptr, 0, holder->second.data(), holder->second.size(),
                            &p);
  if (r == nullptr) {
    delete holder;
    return {};
  }
  if (UCS_PTR_IS_ERR(r)) {
    delete holder;
    return ucx_error(UCS_PTR_STATUS(r), "ucp_am_send_nbx", peer_name, __FILE__, __LINE__);
  }
  // Pending: the progress thread polls until on_send_done (which may already have run, leaving
  // the count briefly negative; it balances either way).
  ucx->begin_op();
  return {};
}

expected<std::shared_ptr<impl::peer>> impl::connect(const std::string& host, std::uint16_t port) {
  THAW_TRY(check_running());
  const std::string name = host + ":" + std::to_string(port);
  std::lock_guard lock{peers_mutex};
  if (auto it = peers.find(name); it != peers.end()) {
    if (!it->second->failed.load())
      return it->second;
    closed_peers.push_back(it->second);
    peers.erase(it);
  }
  socklen_t len = 0;
  THAW_ASSIGN(sockaddr_storage addr, resolve(host, port, len));
  auto p = std::make_shared<peer>();
  p->owner = this;
  p->name = name;
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
  params.sockaddr.addrlen = len;
  params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  params.err_handler = {on_peer_ep_error, p.get()};
  THAW_UCX_CHECK(ucp_ep_create(ucx->worker(), &params, &p->ep), name);
  ucx->wake(); // the connection handshake needs progress
  peers.emplace(name, p);
  return p;
}

void impl::peer_failed(peer* p, ucs_status_t status) {
  p->failure = ucs_status_string(status);
  p->failed.store(true);
  {
    std::lock_guard lock{pending_mutex};
    for (auto it = pendings.begin(); it != pendings.end();) {
      if (it->second->to == p) {
        it->second->result =
            make_error(errc::io_error, p->name + ": connection failed: " + p->failure);
        it->second->done = true;
        it = pendings.erase(it);
      } else {
        ++it;
      }
    }
    pending_cv.notify_all();
  }
  ucx->defer([this, p] {
    {
      // Drop it from the cache so that the next call reconnects.
      std::lock_guard lock{peers_mutex};
      if (auto it = peers.find(p->name); it != peers.end() && it->second.get() == p) {
        closed_peers.push_back(it->second);
        peers.erase(it);
      }
    }
    close_failed_peer(p);
  });
}

void impl::close_failed_peer(peer* p) {
  std::vector<void*> closing;
  if (!close_peer(*p, closing, false)) {
    // A fetch still holds it; it notices `failed` and lets go.
    ucx->defer([this, p] { close_failed_peer(p); });
    return;
  }
  for (void* r : closing)
    ucp_request_free(r); // released by UCX when the close completes
}

bool impl::close_peer(peer& p, std::vector<void*>& closing, bool blocking) {
  std::unique_lock use{p.use, std::defer_lock};
  if (blocking)
    use.lock();
  else if (!use.try_lock())
    return false;
  if (p.closed.exchange(true))
    return true;
  ucp_ep_h data_ep = nullptr;
  {
    std::lock_guard lock{peers_mutex};
    for (auto& [packed, k] : p.rkeys)
      ucp_rkey_destroy(k);
    p.rkeys.clear();
    data_ep = std::exchange(p.data_ep, nullptr);
  }
  for (ucp_ep_h ep : {p.ep, data_ep}) {
    if (ep == nullptr)
      continue;
    ucp_request_param_t cp{};
    cp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    cp.flags = UCP_EP_CLOSE_FLAG_FORCE;
    if (void* r = ucp_ep_close_nbx(ep, &cp); UCS_PTR_IS_PTR(r))
      closing.push_back(r);
  }
  return true;
}

expected<ucp_rkey_h> impl::rkey_for(peer& to, ucp_ep_h data_ep,
                                    const std::vector<std::byte>& packed) {
  const std::string_view bytes{reinterpret_cast<const char*>(packed.data()), packed.size()};
  std::lock_guard lock{peers_mutex};
  if (auto it = to.rkeys.find(bytes); it != to.rkeys.end())
    return it->second;
  ucp_rkey_h k = nullptr;
  THAW_UCX_CHECK(ucp_ep_rkey_unpack(data_ep, packed.data(), &k), to.name);
  to.rkeys.emplace(std::string{bytes}, k);
  return k;
}

expected<ucp_ep_h> impl::data_endpoint(peer& to, const std::vector<std::byte>& address) {
  std::lock_guard lock{peers_mutex};
  if (to.data_ep != nullptr)
    return to.data_ep;
  if (to.closed.load())
    return make_error(errc::io_error, to.name + ": connection closed");
  if (address.empty())
    return make_error(errc::corrupt, to.name + ": fetch-start reply without a worker address");
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  params.address = reinterpret_cast<const ucp_address_t*>(address.data());
  params.err_mode = UCP_ERR_HANDLING_MODE_NONE;
  THAW_UCX_CHECK(ucp_ep_create(ucx->worker(), &params, &to.data_ep), to.name);
  ucx->wake();
  return to.data_ep;
}

expected<reply_frame> impl::call(const std::shared_ptr<peer>& to, request_frame request) {
  request.version = options.protocol_version;
  request.id = next_request.fetch_add(1);
  auto waiter = std::make_shared<pending>();
  waiter->to = to.get();
  {
    std::lock_guard lock{pending_mutex};
    if (to->failed.load())
      return make_error(errc::io_error, to->name + ": connection failed: " + to->failure);
    pendings.emplace(request.id, waiter);
  }
  status sent;
  {
    std::shared_lock use{to->use};
    sent = to->closed.load() ? status{make_error(errc::io_error, to->name + ": connection closed")}
                             : send_frame(to->ep, am_request, encode(request), true, to->name);
  }
  if (!sent) {
    std::lock_guard lock{pending_mutex};
    pendings.erase(request.id);
    return sent.err();
  }
  std::unique_lock lock{pending_mutex};
  if (!pending_cv.wait_for(lock, options.timeout, [&] { return waiter->done; })) {
    pendings.erase(request.id);
    return make_error(errc::io_error, to->name + ": no reply within " +
                                          std::to_string(options.timeout.count()) + " ms");
  }
  if (!waiter->result)
    return waiter->result.err();
  if (waiter->result->version != options.protocol_version)
    return make_error(errc::unsupported,
                      to->name + " speaks data plane protocol version " +
                          std::to_string(waiter->result->version) + ", this node speaks " +
                          std::to_string(options.protocol_version));
  return std::move(waiter->result);
}

} // namespace thaw::transport
