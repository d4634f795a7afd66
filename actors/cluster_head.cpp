// The head process: scheduler, registry, routers, gateway and HTTP, plus the head actor that
// admits nodes on the control port.

#include "actors/cluster.hpp"

#include "actors/registry.hpp"
#include "actors/scheduler.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/publish.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <spdlog/spdlog.h>

namespace thaw {
namespace {

/// Compares without stopping at the first difference, so the time taken does not tell a
/// guesser how much of the secret was right.
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size() || b.empty())
    return false;
  unsigned diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]);
  return diff == 0;
}

/// The published head actor: admits a node only with the right protocol version and secret.
head_actor::behavior_type head_fn(head_actor::pointer self, std::string secret,
                                  caf::actor scheduler) {
  return {
      [=](join_cluster& j) -> caf::result<caf::actor> {
        const auto peer = caf::to_string(self->current_sender() ? self->current_sender()->node()
                                                                : caf::node_id{});
        if (j.protocol_version != cluster_protocol_version) {
          spdlog::warn("head: refused node '{}' ({}): protocol version {}, this head speaks {}",
                       j.node_name, peer, j.protocol_version, cluster_protocol_version);
          return to_caf(make_error(errc::unsupported,
                                   "the head speaks cluster protocol version " +
                                       std::to_string(cluster_protocol_version) + ", node '" +
                                       j.node_name + "' speaks " +
                                       std::to_string(j.protocol_version)));
        }
        if (!same_secret(j.secret, secret)) {
          spdlog::warn("head: refused node '{}' ({}): wrong cluster secret", j.node_name, peer);
          return to_caf(make_error(errc::invalid_argument,
                                   "the head refused node '" + j.node_name +
                                       "': wrong cluster secret (cluster.secret / cluster.dir)"));
        }
        if (j.node_name.empty())
          return to_caf(make_error(errc::invalid_argument, "a node needs a name (node.name)"));
        // The scheduler knows nodes by name: a second node under a live node's name would
        // replace it there. Ask first.
        auto rp = self->make_response_promise<caf::actor>();
        self->request(scheduler, std::chrono::seconds(10), status_atom::value)
            .then(
                [=](const std::vector<node_status>& nodes) mutable {
                  for (const auto& n : nodes) {
                    if (n.name == j.node_name) {
                      spdlog::warn("head: refused node '{}' ({}): a node of that name is "
                                   "registered",
                                   j.node_name, peer);
                      rp.deliver(to_caf(make_error(
                          errc::already_exists,
                          "the head refused node '" + j.node_name +
                              "': a node of that name is already in the cluster (node.name)")));
                      return;
                    }
                  }
                  spdlog::info("head: node '{}' joined", j.node_name);
                  rp.deliver(scheduler);
                },
                [=](caf::error& e) mutable { rp.deliver(std::move(e)); });
        return rp;
      },
  };
}

} // namespace

struct head_server::impl {
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<metrics::registry> metrics;
  caf::actor scheduler, registry, gateway;
  head_actor head;
  std::unique_ptr<http::server> http;
  std::uint16_t control_port = 0;
  bool stopped = false;
};

head_server::head_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

head_server::~head_server() {
  stop();
}

expected<std::unique_ptr<head_server>> head_server::start(serve_options options,
                                                          cluster_options cluster) {
  auto p = std::make_unique<impl>();
  p->metrics = std::make_shared<metrics::registry>();
  p->cfg = make_cluster_system_config(cluster, cluster_role::head);
  p->sys = std::make_unique<caf::actor_system>(*p->cfg);
  auto& sys = *p->sys;
  auto head = spawn_head_actors(sys, options, p->metrics);
  p->scheduler = head.scheduler;
  p->registry = head.registry;
  p->gateway = head.gateway;
  p->head = sys.spawn(head_fn, cluster.secret, p->scheduler);
  std::unique_ptr<head_server> server{new head_server(std::move(p))};
  auto& s = *server->impl_;
  // The models first (they need no node: instances start on the first request), then the
  // doors: the control port and HTTP.
  for (auto& m : options.models)
    THAW_TRY(deploy_and_wait(sys, s.registry, std::move(m)));
  auto port = cluster.tls
                  ? caf::openssl::publish(s.head, cluster.port, cluster.address.c_str(), true)
                  : sys.middleman().publish(s.head, cluster.port, cluster.address.c_str(), true);
  if (!port)
    return make_error(errc::io_error, "cluster.port: cannot listen on " + cluster.address + ":" +
                                          std::to_string(cluster.port) + ": " +
                                          sys.render(port.error()));
  s.control_port = *port;
  THAW_ASSIGN(s.http, http::server::start(options.http, gateway_handler(s.gateway)));
  spdlog::info("head: http on {}:{}, nodes join on {}:{} ({})", options.http.address,
               s.http->port(), cluster.address, s.control_port,
               cluster.tls ? "TLS" : "plain TCP, no TLS");
  return server;
}

std::uint16_t head_server::http_port() const {
  return impl_->http ? impl_->http->port() : 0;
}

std::uint16_t head_server::control_port() const {
  return impl_->control_port;
}

void head_server::stop() {
  if (!impl_ || impl_->stopped)
    return;
  impl_->stopped = true;
  if (impl_->http)
    impl_->http->stop();
  if (impl_->control_port != 0)
    (void)impl_->sys->middleman().unpublish(impl_->head, impl_->control_port);
  caf::anon_send_exit(impl_->head, caf::exit_reason::user_shutdown);
  for (auto* a : {&impl_->gateway, &impl_->registry, &impl_->scheduler})
    caf::anon_send_exit(*a, caf::exit_reason::user_shutdown);
  impl_->head = nullptr;
  impl_->gateway = impl_->registry = impl_->scheduler = caf::actor{};
  impl_->sys.reset();
}

} // namespace thaw
