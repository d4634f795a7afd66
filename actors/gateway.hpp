#pragma once
/// The gateway actor (head): the HTTP edge. The HTTP server's handler only wraps each request
/// into an `http_call` message (CONVENTIONS.md rule 3); the gateway authenticates it, parses
/// and tokenizes it (runtime/api), submits its sequences to the model's router, and turns the
/// token events into the final JSON or SSE chunks. A client that disconnects cancels its
/// sequences, which frees their KV blocks.
///
/// Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health,
/// GET /metrics, POST /admin/models, DELETE /admin/models/{name}, GET /admin/status.
///
/// Messages (gateway_actor below):
///   (http_call)                        from the HTTP server's handler
///   (call_gone)                        the client of a call disconnected
///   (token_event)                      from routers
///   (deploy_atom, model_frontend_ptr), (delete_atom, std::string)   from the registry

#include "actors/messages.hpp"
#include "actors/registry.hpp"
#include "runtime/common/metrics.hpp"
#include "transport/http_server.hpp"

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <memory>
#include <string>
#include <vector>

namespace thaw {

/// A bearer API key and the models it may use ("*": all). Admin keys may use the admin API.
struct api_key {
  std::string key;
  std::vector<std::string> models;
  bool admin = false;
};

struct gateway_options {
  /// No keys: every client may use every model and the admin API (serve binds to 127.0.0.1).
  std::vector<api_key> keys;
};

/// One HTTP request handed to the gateway, with the means to answer it. Local only.
struct http_call {
  std::shared_ptr<http::request> request;
  std::shared_ptr<http::responder> responder;
};

/// The client of call `id` went away.
struct call_gone {
  std::uint64_t id = 0;
};

/// The gateway's interface (the messages above), checked by the compiler against its behavior.
/// Its handle travels as caf::actor (a request's sink, the registry's subscriber).
using gateway_actor =
    caf::typed_actor<caf::reacts_to<http_call>, caf::reacts_to<call_gone>,
                     caf::reacts_to<token_event>, caf::reacts_to<deploy_atom, model_frontend_ptr>,
                     caf::reacts_to<delete_atom, std::string>>;

[[nodiscard]] caf::actor spawn_gateway(caf::actor_system& sys, gateway_options options,
                                       caf::actor registry, caf::actor scheduler,
                                       std::shared_ptr<metrics::registry> metrics);

/// The HTTP handler that feeds `gateway`.
[[nodiscard]] http::handler gateway_handler(caf::actor gateway);

} // namespace thaw

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(thaw::http_call)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(thaw::call_gone)
