#pragma once
/// A head and one node in one process, with the HTTP edge in front: what `thaw serve` runs, and
/// what the in-process tests start. Service order (CONVENTIONS.md rule 8): start() brings up the
/// actor system, scheduler, node, registry, gateway and then the HTTP server, and deploys the
/// configured models; stop() undoes it in reverse (HTTP first, so nothing new comes in).

#include "actors/gateway.hpp"
#include "actors/messages.hpp"
#include "actors/scheduler.hpp"
#include "actors/node_context.hpp"
#include "runtime/common/config.hpp"
#include "transport/http_server.hpp"

#include <caf/fwd.hpp>

#include <memory>
#include <vector>

namespace thaw {

struct serve_options {
  /// http.address, http.port, http.max_body_bytes, http.max_pending_output_bytes,
  /// http.write_timeout
  http::server_options http;
  node_options node;               ///< node.*, loader.*
  gateway_options gateway;         ///< [[api_keys]] key = "...", models = ["*"], admin = true
  std::vector<model_spec> models;  ///< [[models]] name, checkpoint, min_instances, ...
  scheduler_options scheduler;     ///< [placement] policy, seed, *_gbps

  /// Reads the keys named above; a bad value is an error naming its key.
  [[nodiscard]] static expected<serve_options> from_config(const config& cfg);
};

/// Reads one [[models]] table (or the admin API's fields) into a spec.
[[nodiscard]] expected<model_spec> model_spec_from_config(const config& table);

class embedded_server {
public:
  [[nodiscard]] static expected<std::unique_ptr<embedded_server>> start(serve_options options);
  ~embedded_server();
  embedded_server(const embedded_server&) = delete;
  embedded_server& operator=(const embedded_server&) = delete;

  [[nodiscard]] std::uint16_t port() const;
  /// Deploys a model and waits for the registry's answer.
  [[nodiscard]] expected<model_spec> deploy(model_spec spec);
  /// The scheduler's view of the nodes (blocking).
  [[nodiscard]] expected<std::vector<node_status>> nodes();
  /// Stops everything; idempotent.
  void stop();

  struct impl;

private:
  explicit embedded_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// The head's services, spawned together by the embedded server and `thaw head`.
struct head_actors {
  caf::actor scheduler;
  caf::actor registry;
  caf::actor gateway;
};
[[nodiscard]] head_actors spawn_head_actors(caf::actor_system& sys, const serve_options& options,
                                            std::shared_ptr<metrics::registry> metrics);

/// Deploys a model through `registry` and waits for its answer.
[[nodiscard]] expected<model_spec> deploy_and_wait(caf::actor_system& sys,
                                                   const caf::actor& registry, model_spec spec);

/// An actor system configured the way thaw runs it: CAF's work-sharing scheduler (half the
/// latency of work stealing on small machines), the middleman loaded, thaw's message types.
[[nodiscard]] std::unique_ptr<caf::actor_system_config> make_actor_system_config();

} // namespace thaw
