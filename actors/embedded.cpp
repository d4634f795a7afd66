#include "actors/embedded.hpp"

#include "actors/node.hpp"
#include "actors/registry.hpp"
#include "actors/scheduler.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <spdlog/spdlog.h>

namespace thaw {

std::unique_ptr<caf::actor_system_config> make_actor_system_config() {
  auto cfg = std::make_unique<caf::actor_system_config>();
  cfg->set("scheduler.policy", caf::atom("sharing"));
  cfg->set("logger.verbosity", caf::atom("quiet"));
  cfg->load<caf::io::middleman>();
  add_message_types(*cfg);
  return cfg;
}

expected<model_spec> model_spec_from_config(const config& t) {
  model_spec s;
  THAW_ASSIGN(s.name, t.get_string("name", ""));
  THAW_ASSIGN(s.checkpoint, t.get_string("checkpoint", ""));
  auto get_i32 = [&](std::string_view key, std::int32_t& out) -> status {
    THAW_ASSIGN(auto v, t.get_int(key, out));
    if (v < 0 || v > std::numeric_limits<std::int32_t>::max())
      return make_error(errc::invalid_argument,
                        "config key '" + std::string{key} + "' is out of range");
    out = static_cast<std::int32_t>(v);
    return {};
  };
  THAW_TRY(get_i32("min_instances", s.min_instances));
  THAW_TRY(get_i32("max_instances", s.max_instances));
  THAW_TRY(get_i32("target_concurrency", s.target_concurrency));
  THAW_TRY(get_i32("queue_limit", s.queue_limit));
  THAW_TRY(get_i32("kv_blocks", s.kv_blocks));
  THAW_TRY(get_i32("threads", s.threads));
  THAW_ASSIGN(s.chat_template, t.get_string("chat_template", ""));
  THAW_ASSIGN(s.prefetch, t.get_bool("prefetch", false));
  THAW_ASSIGN(auto keep, t.get_seconds("keep_alive", static_cast<double>(s.keep_alive_ms) / 1e3));
  s.keep_alive_ms = static_cast<std::int64_t>(keep * 1000.0);
  if (s.name.empty())
    return make_error(errc::invalid_argument, "models: a model has no name");
  if (s.checkpoint.empty())
    return make_error(errc::invalid_argument, "models: model " + s.name + " has no checkpoint");
  return s;
}

expected<serve_options> serve_options::from_config(const config& cfg) {
  serve_options o;
  THAW_ASSIGN(o.http.address, cfg.get_string("http.address", o.http.address));
  THAW_ASSIGN(auto port, cfg.get_int("http.port", 8000));
  if (port < 0 || port > 65535)
    return make_error(errc::invalid_argument, "config key 'http.port' must be 0..65535");
  o.http.port = static_cast<std::uint16_t>(port);
  THAW_ASSIGN(o.http.max_body_bytes, cfg.get_bytes("http.max_body_bytes", o.http.max_body_bytes));
  THAW_ASSIGN(o.http.max_pending_output_bytes,
              cfg.get_bytes("http.max_pending_output_bytes", o.http.max_pending_output_bytes));
  THAW_ASSIGN(auto write_timeout,
              cfg.get_seconds("http.write_timeout",
                              static_cast<double>(o.http.write_timeout.count())));
  if (write_timeout < 1 || write_timeout > 86400)
    return make_error(errc::invalid_argument, "config key 'http.write_timeout' must be 1..86400 s");
  o.http.write_timeout = std::chrono::seconds(static_cast<std::int64_t>(write_timeout));
  THAW_ASSIGN(auto io_threads, cfg.get_int("http.io_threads", o.http.io_threads));
  if (io_threads < 1 || io_threads > 64)
    return make_error(errc::invalid_argument, "config key 'http.io_threads' must be 1..64");
  o.http.io_threads = static_cast<int>(io_threads);

  THAW_ASSIGN(o.node.name, cfg.get_string("node.name", o.node.name));
  THAW_ASSIGN(auto slots, cfg.get_int("node.cpu_slots", o.node.cpu_slots));
  THAW_ASSIGN(o.node.slot_memory_bytes,
              cfg.get_bytes("node.slot_memory_bytes", o.node.slot_memory_bytes));
  THAW_ASSIGN(auto threads, cfg.get_int("node.threads", o.node.threads));
  if (slots < 1 || slots > 1024)
    return make_error(errc::invalid_argument, "config key 'node.cpu_slots' must be 1..1024");
  if (threads < 1 || threads > 1024)
    return make_error(errc::invalid_argument, "config key 'node.threads' must be 1..1024");
  o.node.cpu_slots = static_cast<std::int32_t>(slots);
  o.node.threads = static_cast<std::int32_t>(threads);
  THAW_ASSIGN(auto gpus, cfg.get_int("node.gpus", o.node.gpus));
  if (gpus < 0 || gpus > 64)
    return make_error(errc::invalid_argument, "config key 'node.gpus' must be 0..64");
  o.node.gpus = static_cast<std::int32_t>(gpus);
  THAW_ASSIGN(o.node.data_plane, cfg.get_bool("node.data_plane", o.node.data_plane));
  THAW_ASSIGN(o.node.data_address, cfg.get_string("node.data_address", o.node.data_address));
  THAW_ASSIGN(auto data_port, cfg.get_int("node.data_port", o.node.data_port));
  if (data_port < 0 || data_port > 65535)
    return make_error(errc::invalid_argument, "config key 'node.data_port' must be 0..65535");
  o.node.data_port = static_cast<std::uint16_t>(data_port);
  THAW_ASSIGN(auto room_wait,
              cfg.get_seconds("node.pull_room_wait",
                              std::chrono::duration<double>(o.node.pull_room_wait).count()));
  if (room_wait < 0)
    return make_error(errc::invalid_argument, "config key 'node.pull_room_wait' must be >= 0");
  o.node.pull_room_wait = std::chrono::milliseconds(static_cast<std::int64_t>(room_wait * 1000));
  // The DRAM tier of a serving node: 1 GiB unless configured.
  config with_default = cfg;
  if (!cfg.contains("loader.pool_bytes"))
    THAW_TRY(with_default.set("loader.pool_bytes=\"1GiB\""));
  THAW_ASSIGN(o.node.loader, loader_options::from_config(with_default));

  THAW_ASSIGN(auto keys, cfg.get_tables("api_keys"));
  for (const auto& k : keys) {
    api_key key;
    THAW_ASSIGN(key.key, k.get_string("key", ""));
    if (key.key.empty())
      return make_error(errc::invalid_argument, "api_keys: an entry has no key");
    THAW_ASSIGN(key.models, k.get_strings("models"));
    THAW_ASSIGN(key.admin, k.get_bool("admin", false));
    o.gateway.keys.push_back(std::move(key));
  }
  THAW_ASSIGN(auto models, cfg.get_tables("models"));
  for (const auto& m : models) {
    THAW_ASSIGN(auto spec, model_spec_from_config(m));
    o.models.push_back(std::move(spec));
  }
  THAW_ASSIGN(o.scheduler, scheduler_options::from_config(cfg));
  return o;
}

struct embedded_server::impl {
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<metrics::registry> metrics;
  caf::actor scheduler, node, registry, gateway;
  std::unique_ptr<http::server> http;
  bool stopped = false;
};

embedded_server::embedded_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

embedded_server::~embedded_server() {
  stop();
}

expected<std::unique_ptr<embedded_server>> embedded_server::start(serve_options options) {
  auto p = std::make_unique<impl>();
  p->metrics = std::make_shared<metrics::registry>();
  THAW_ASSIGN(auto ctx, node_context::create(options.node, p->metrics));
  p->cfg = make_actor_system_config();
  p->sys = std::make_unique<caf::actor_system>(*p->cfg);
  auto& sys = *p->sys;
  auto head = spawn_head_actors(sys, options, p->metrics);
  p->scheduler = head.scheduler;
  p->registry = head.registry;
  p->gateway = head.gateway;
  p->node = spawn_node(sys, std::move(ctx), p->scheduler);
  std::unique_ptr<embedded_server> server{new embedded_server(std::move(p))};
  for (auto& m : options.models) {
    if (auto r = server->deploy(m); !r)
      return std::move(r).err();
  }
  THAW_ASSIGN(server->impl_->http,
              http::server::start(options.http, gateway_handler(server->impl_->gateway)));
  spdlog::info("serve: listening on http://{}:{}", options.http.address, server->port());
  return server;
}

std::uint16_t embedded_server::port() const {
  return impl_->http ? impl_->http->port() : 0;
}

expected<model_spec> embedded_server::deploy(model_spec spec) {
  return deploy_and_wait(*impl_->sys, impl_->registry, std::move(spec));
}

head_actors spawn_head_actors(caf::actor_system& sys, const serve_options& options,
                              std::shared_ptr<metrics::registry> metrics) {
  head_actors h;
  h.scheduler = spawn_scheduler(sys, options.scheduler);
  h.registry = spawn_registry(sys, h.scheduler, metrics);
  h.gateway = spawn_gateway(sys, options.gateway, h.registry, h.scheduler, std::move(metrics));
  // Subscribed before anything is deployed: a deploy that a caller saw answered is known to the
  // gateway before any request the caller sends next (from another sender, the subscription
  // could reach the registry after the deploy, and the first request would get a 404).
  caf::scoped_actor waiter{sys};
  waiter->request(h.registry, caf::infinite, sub_atom::value, h.gateway)
      .receive([](bool) {}, [](caf::error&) {});
  return h;
}

expected<model_spec> deploy_and_wait(caf::actor_system& sys, const caf::actor& registry,
                                     model_spec spec) {
  caf::scoped_actor self{sys};
  expected<model_spec> out = make_error(errc::internal, "deploy: no answer");
  self->request(registry, caf::infinite, deploy_atom::value, std::move(spec))
      .receive([&](model_spec& s) { out = std::move(s); },
               [&](caf::error& e) { out = from_caf(e); });
  return out;
}

expected<std::vector<node_status>> embedded_server::nodes() {
  caf::scoped_actor self{*impl_->sys};
  expected<std::vector<node_status>> out = make_error(errc::internal, "status: no answer");
  self->request(impl_->scheduler, caf::infinite, status_atom::value)
      .receive([&](std::vector<node_status>& n) { out = std::move(n); },
               [&](caf::error& e) { out = from_caf(e); });
  return out;
}

void embedded_server::stop() {
  if (!impl_ || impl_->stopped)
    return;
  impl_->stopped = true;
  if (impl_->http)
    impl_->http->stop();
  for (auto* a : {&impl_->gateway, &impl_->registry, &impl_->node, &impl_->scheduler})
    caf::anon_send_exit(*a, caf::exit_reason::user_shutdown);
  impl_->gateway = impl_->registry = impl_->node = impl_->scheduler = caf::actor{};
  impl_->sys.reset(); // waits for every actor, the instances' threads included
}

} // namespace thaw
