// The node process: its context and node actor, joined to a head over the middleman.

#include "actors/cluster.hpp"

#include "actors/node.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/remote_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <mutex>
#include <spdlog/spdlog.h>
#include <thread>

namespace thaw {
namespace {

/// Set once by the watcher, read by whoever waits on the node.
struct failure_slot {
  mutable std::mutex mu;
  std::optional<error> failure;
};

/// Monitors the head; when it goes (closed connection, or silent past cluster.timeout), the
/// node can do nothing useful: record why, so the process stops.
/// It handles no message of its own: its down handler is its work.
using watcher_actor = caf::typed_actor<caf::reacts_to<tick_atom>>;

watcher_actor::behavior_type watcher_fn(watcher_actor::pointer self, head_actor head,
                                        std::string where, std::shared_ptr<failure_slot> slot) {
  self->monitor(head);
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto e = make_error(errc::io_error, "lost the head at " + where + ": " +
                                            self->system().render(dm.reason));
    spdlog::error("node: {}", e.message);
    {
      std::lock_guard lock{slot->mu};
      slot->failure = std::move(e);
    }
    self->quit();
  });
  return {[](tick_atom) {}};
}

} // namespace

struct node_server::impl {
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor node, watcher;
  std::shared_ptr<failure_slot> failure = std::make_shared<failure_slot>();
  bool stopped = false;
};

node_server::node_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

node_server::~node_server() {
  stop();
}

expected<std::unique_ptr<node_server>> node_server::start(node_options node,
                                                          cluster_options cluster,
                                                          std::string head_host,
                                                          std::uint16_t head_port) {
  // A cluster node lends its DRAM tier to peers and pulls from theirs: it has a data plane,
  // by default on the interface this machine reaches the head through.
  if (node.data_plane && node.data_address.empty()) {
    auto local = transport::local_address_towards(head_host, head_port);
    if (!local)
      return with_context(std::move(local).err(), "node.data_address (not set)");
    node.data_address = std::move(*local);
  }
  THAW_ASSIGN(auto ctx, node_context::create(node, std::make_shared<metrics::registry>(), true));
  auto p = std::make_unique<impl>();
  p->cfg = make_cluster_system_config(cluster, cluster_role::node);
  p->sys = std::make_unique<caf::actor_system>(*p->cfg);
  auto& sys = *p->sys;
  const auto where = head_host + ":" + std::to_string(head_port);
  std::unique_ptr<node_server> server{new node_server(std::move(p))};
  auto& s = *server->impl_;

  // The head may still be starting: retry until the connect timeout.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds{cluster.connect_ms};
  head_actor head;
  for (;;) {
    auto h = cluster.tls ? caf::openssl::remote_actor<head_actor>(sys, head_host, head_port)
                         : sys.middleman().remote_actor<head_actor>(head_host, head_port);
    if (h) {
      head = std::move(*h);
      break;
    }
    if (h.error() == caf::sec::unexpected_actor_messaging_interface)
      // A head of cluster protocol 9 or older published an untyped actor.
      return make_error(errc::unsupported,
                        "the head at " + where + " does not speak this node's cluster protocol " +
                            "(version " + std::to_string(cluster_protocol_version) + "): " +
                            sys.render(h.error()));
    if (std::chrono::steady_clock::now() >= deadline)
      return make_error(
          errc::io_error,
          "cannot reach the head at " + where + " within " + std::to_string(cluster.connect_ms) +
              " ms (cluster.connect_timeout): " + sys.render(h.error()) +
              (cluster.tls ? " (TLS: the head accepts only certificates from its own `thaw "
                             "cluster init`)"
                           : " (if the head runs TLS, set cluster.dir to the cluster's "
                             "certificates)"));
    std::this_thread::sleep_for(std::chrono::milliseconds{200});
  }

  caf::actor scheduler;
  std::optional<error> refused;
  {
    caf::scoped_actor self{sys};
    self->request(head, std::chrono::milliseconds{cluster.connect_ms},
                  join_cluster{cluster_protocol_version, cluster.secret, node.name})
        .receive([&](caf::actor& sched) { scheduler = std::move(sched); },
                 [&](caf::error& e) { refused = from_caf(e); });
  }
  if (refused)
    return with_context(std::move(*refused), "joining the cluster at " + where);
  if (!scheduler)
    return make_error(errc::internal, "the head at " + where + " answered without a scheduler");
  s.watcher = caf::actor_cast<caf::actor>(sys.spawn(watcher_fn, head, where, s.failure));
  s.node = spawn_node(sys, std::move(ctx), scheduler);
  spdlog::info("node: {} joined the cluster at {} ({})", node.name, where,
               cluster.tls ? "TLS" : "plain TCP, no TLS");
  return server;
}

std::optional<error> node_server::failure() const {
  std::lock_guard lock{impl_->failure->mu};
  return impl_->failure->failure;
}

void node_server::stop() {
  if (!impl_ || impl_->stopped)
    return;
  impl_->stopped = true;
  for (auto* a : {&impl_->watcher, &impl_->node})
    if (*a)
      caf::anon_send_exit(*a, caf::exit_reason::user_shutdown);
  impl_->watcher = impl_->node = caf::actor{};
  impl_->sys.reset(); // waits for the instances' threads
}

} // namespace thaw
