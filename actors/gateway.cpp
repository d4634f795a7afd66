#include "actors/gateway.hpp"

#include "actors/gateway_state.hpp"
#include "runtime/common/units.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace thaw {
namespace gw {

void send_error(gateway_ptr self, http::responder& r, const api::api_error& e) {
  self->state.m.http_errors->get({std::to_string(e.status)}).inc();
  r.send(e.status, "application/json", api::to_json(e));
}

namespace {

/// The key a request presents, or null when keys are configured and it presents none that
/// matches. With no keys configured every request passes (as the embedded default).
const api_key* find_key(const gateway_state& s, const http::request& req) {
  auto auth = req.header("authorization");
  constexpr std::string_view bearer = "Bearer ";
  if (auth.substr(0, bearer.size()) != bearer)
    return nullptr;
  auth.remove_prefix(bearer.size());
  for (const auto& k : s.options.keys)
    if (k.key == auth)
      return &k;
  return nullptr;
}

api::api_error unauthorized() {
  api::api_error e;
  e.status = 401;
  e.type = "authentication_error";
  e.message = "Missing or invalid API key: send 'Authorization: Bearer <key>'";
  e.code = "invalid_api_key";
  return e;
}

} // namespace

bool may_use(const gateway_state& s, const http::request& req, const std::string& model) {
  if (s.options.keys.empty())
    return true;
  const auto* k = find_key(s, req);
  if (k == nullptr)
    return false;
  return std::find(k->models.begin(), k->models.end(), "*") != k->models.end() ||
         std::find(k->models.begin(), k->models.end(), model) != k->models.end();
}

namespace {

api::api_error status_error(int status, std::string type, std::string message) {
  api::api_error e;
  e.status = status;
  e.type = std::move(type);
  e.message = std::move(message);
  return e;
}

void list_models(gateway_ptr self, http_call& hc) {
  std::vector<std::string> names;
  std::int64_t created = 0;
  for (const auto& [name, f] : self->state.models) {
    if (may_use(self->state, *hc.request, name)) {
      names.push_back(name);
      created = std::max(created, f->created);
    }
  }
  hc.responder->send(200, "application/json", api::models_json(names, created));
}

/// POST /admin/models: {"name", "checkpoint", "min_instances", "max_instances",
/// "target_concurrency", "keep_alive" (seconds or "30s"/"5m"), "queue_limit", "kv_blocks"}.
expected<model_spec> parse_deploy(std::string_view body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return make_error(errc::parse_error, "body: not a JSON object");
  model_spec spec;
  auto get_string = [&](const char* key, std::string& out, bool required) -> status {
    if (!j.contains(key)) {
      if (required)
        return make_error(errc::invalid_argument, std::string{key} + ": missing");
      return {};
    }
    if (!j[key].is_string())
      return make_error(errc::invalid_argument, std::string{key} + ": must be a string");
    out = j[key].get<std::string>();
    return {};
  };
  auto get_int = [&](const char* key, std::int32_t& out) -> status {
    if (!j.contains(key))
      return {};
    if (!j[key].is_number_integer())
      return make_error(errc::invalid_argument, std::string{key} + ": must be an integer");
    out = j[key].get<std::int32_t>();
    return {};
  };
  THAW_TRY(get_string("name", spec.name, true));
  THAW_TRY(get_string("checkpoint", spec.checkpoint, true));
  THAW_TRY(get_string("chat_template", spec.chat_template, false));
  THAW_TRY(get_int("min_instances", spec.min_instances));
  THAW_TRY(get_int("max_instances", spec.max_instances));
  THAW_TRY(get_int("target_concurrency", spec.target_concurrency));
  THAW_TRY(get_int("queue_limit", spec.queue_limit));
  THAW_TRY(get_int("kv_blocks", spec.kv_blocks));
  if (j.contains("prefetch") && !j["prefetch"].is_boolean())
    return make_error(errc::invalid_argument, "prefetch: must be true or false");
  spec.prefetch = j.value("prefetch", false);
  if (j.contains("keep_alive")) {
    const auto& k = j["keep_alive"];
    double secs = 0;
    if (k.is_number()) {
      secs = k.get<double>();
    } else if (k.is_string()) {
      THAW_ASSIGN(secs, parse_seconds(k.get<std::string>()));
    } else {
      return make_error(errc::invalid_argument, "keep_alive: must be seconds or a duration");
    }
    spec.keep_alive_ms = static_cast<std::int64_t>(secs * 1000.0);
  }
  return spec;
}

nlohmann::json spec_json(const model_spec& s) {
  return {{"name", s.name},
          {"checkpoint", s.checkpoint},
          {"min_instances", s.min_instances},
          {"max_instances", s.max_instances},
          {"target_concurrency", s.target_concurrency},
          {"keep_alive_s", static_cast<double>(s.keep_alive_ms) / 1000.0},
          {"queue_limit", s.queue_limit},
          {"kv_blocks", s.kv_blocks},
          {"chat_template", s.chat_template},
          {"prefetch", s.prefetch}};
}

void deploy(gateway_ptr self, http_call& hc) {
  auto spec = parse_deploy(hc.request->body);
  if (!spec) {
    send_error(self, *hc.responder, api::from_error(spec.err()));
    return;
  }
  auto r = hc.responder;
  self->request(self->state.registry, caf::infinite, deploy_atom::value, std::move(*spec))
      .then([=](model_spec& done) { r->send(201, "application/json", spec_json(done).dump()); },
            [=](caf::error& err) {
              auto e = from_caf(err);
              auto api_err = api::from_error(e);
              if (e.code == errc::already_exists)
                api_err.status = 409;
              send_error(self, *r, api_err);
            });
}

void undeploy(gateway_ptr self, http_call& hc, std::string name) {
  auto r = hc.responder;
  self->request(self->state.registry, caf::infinite, delete_atom::value, name)
      .then([=](bool) { r->send(200, "application/json", nlohmann::json{{"deleted", name}}.dump()); },
            [=](caf::error& err) { send_error(self, *r, api::from_error(from_caf(err))); });
}

/// POST /admin/models/{name}/migrate: {"from": node, "to": node, "max_gap": tokens (default
/// 1)}: moves the model's instance on `from` to a new one on `to`, its streams and all.
void migrate_model(gateway_ptr self, http_call& hc, const std::string& name) {
  auto r = hc.responder;
  auto bad = [&](std::string what) {
    send_error(self, *r, api::from_error(make_error(errc::invalid_argument, std::move(what))));
  };
  auto j = nlohmann::json::parse(hc.request->body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return send_error(self, *r, api::from_error(make_error(errc::parse_error,
                                                           "body: not a JSON object")));
  for (const char* key : {"from", "to"})
    if (!j.contains(key) || !j[key].is_string())
      return bad(std::string{key} + ": a node name (string) is required");
  std::int32_t max_gap = migrate_order{}.max_gap;
  if (j.contains("max_gap")) {
    if (!j["max_gap"].is_number_integer() || j["max_gap"].get<std::int64_t>() < 0 ||
        j["max_gap"].get<std::int64_t>() > 1'000'000)
      return bad("max_gap: must be an integer >= 0");
    max_gap = j["max_gap"].get<std::int32_t>();
  }
  auto f = self->state.models.find(name);
  if (f == self->state.models.end())
    return send_error(self, *r, api::from_error(make_error(errc::not_found,
                                                           "model " + name + " is not deployed")));
  self->request(as_router(f->second->router), caf::infinite, migrate_atom::value,
                j["from"].get<std::string>(), j["to"].get<std::string>(), max_gap)
      .then(
          [=](migration_report& rep) {
            r->send(200, "application/json",
                    nlohmann::json{{"moved", rep.moved},
                                   {"finished_on_source", rep.finished_on_source},
                                   {"kept", rep.kept},
                                   {"rounds", rep.rounds},
                                   {"tokens_recomputed", rep.tokens_sent},
                                   {"aborted", rep.aborted},
                                   {"reason", rep.reason}}
                        .dump());
          },
          [=](caf::error& err) { send_error(self, *r, api::from_error(from_caf(err))); });
}

nlohmann::json node_json(const node_status& n) {
  nlohmann::json slots = nlohmann::json::array();
  for (const auto& s : n.slots)
    slots.push_back({{"index", s.index},
                     {"kind", s.kind},
                     {"memory_bytes", s.memory_bytes},
                     {"used_bytes", s.used_bytes},
                     {"models", s.models}});
  nlohmann::json instances = nlohmann::json::array();
  for (const auto& i : n.instances)
    instances.push_back({{"model", i.model}});
  return {{"name", n.name},
          {"dram_models", n.dram_models},
          {"dram_bytes", n.dram_bytes},
          {"dram_used_bytes", n.dram_used_bytes},
          {"slots", slots},
          {"instances", instances},
          {"ssd_bandwidth", n.ssd_bandwidth},
          {"dram_bandwidth", n.dram_bandwidth},
          {"loads_ssd", n.loads_ssd},
          {"loads_dram", n.loads_dram},
          {"remote_bandwidth", n.remote_bandwidth},
          {"loads_remote", n.loads_remote},
          {"starts_in_place", n.starts_in_place},
          {"queued_ssd_bytes", n.queued_ssd_bytes},
          {"queued_dram_bytes", n.queued_dram_bytes}};
}

/// GET /admin/status: the scheduler's view of the nodes and every router's view of its model.
void cluster_status(gateway_ptr self, http_call& hc) {
  auto r = hc.responder;
  std::vector<caf::actor> routers;
  for (const auto& [name, f] : self->state.models)
    routers.push_back(f->router);
  self->request(self->state.scheduler, caf::infinite, status_atom::value)
      .then(
          [=](std::vector<node_status>& nodes) {
            auto out = std::make_shared<nlohmann::json>();
            (*out)["nodes"] = nlohmann::json::array();
            for (const auto& n : nodes)
              (*out)["nodes"].push_back(node_json(n));
            (*out)["models"] = nlohmann::json::array();
            auto left = std::make_shared<std::size_t>(routers.size());
            if (*left == 0) {
              r->send(200, "application/json", out->dump());
              return;
            }
            for (const auto& router : routers) {
              auto finish_one = [=] {
                if (--*left == 0)
                  r->send(200, "application/json", out->dump());
              };
              self->request(as_router(router), std::chrono::seconds(5), status_atom::value)
                  .then(
                      [=](model_status& m) {
                        (*out)["models"].push_back({{"name", m.name},
                                                    {"instances", m.instances},
                                                    {"starting", m.starting},
                                                    {"queued", m.queued},
                                                    {"in_flight", m.in_flight},
                                                    {"cold_starts", m.cold_starts}});
                        finish_one();
                      },
                      [=](caf::error&) { finish_one(); });
            }
          },
          [=](caf::error& err) { send_error(self, *r, api::from_error(from_caf(err))); });
}

void route(gateway_ptr self, http_call& hc) {
  auto& s = self->state;
  const auto& req = *hc.request;
  const auto& path = req.path;
  auto method_not_allowed = [&] {
    send_error(self, *hc.responder,
               status_error(405, "invalid_request_error",
                            req.method + " is not allowed on " + path));
  };
  if (path == "/health") {
    hc.responder->send(200, "application/json", R"({"status":"ok"})");
    return;
  }
  if (path == "/metrics") {
    hc.responder->send(200, "text/plain; version=0.0.4; charset=utf-8", s.m.reg->render());
    return;
  }
  const bool is_admin = path == "/admin/status" || path.rfind("/admin/models", 0) == 0;
  if (!s.options.keys.empty()) {
    const auto* key = find_key(s, req);
    if (key == nullptr) {
      send_error(self, *hc.responder, unauthorized());
      return;
    }
    if (is_admin && !key->admin) {
      send_error(self, *hc.responder,
                 status_error(403, "permission_error", "this API key may not use the admin API"));
      return;
    }
  }
  if (path == "/v1/completions" || path == "/v1/chat/completions") {
    if (req.method != "POST")
      return method_not_allowed();
    start_completion(self,
                     path == "/v1/completions" ? api::endpoint::completions
                                               : api::endpoint::chat_completions,
                     hc);
  } else if (path == "/v1/models") {
    if (req.method != "GET")
      return method_not_allowed();
    list_models(self, hc);
  } else if (path == "/admin/models") {
    if (req.method != "POST")
      return method_not_allowed();
    deploy(self, hc);
  } else if (path.rfind("/admin/models/", 0) == 0) {
    auto name = path.substr(std::string_view{"/admin/models/"}.size());
    constexpr std::string_view migrate_suffix = "/migrate";
    if (name.size() > migrate_suffix.size() && name.ends_with(migrate_suffix)) {
      if (req.method != "POST")
        return method_not_allowed();
      migrate_model(self, hc, name.substr(0, name.size() - migrate_suffix.size()));
      return;
    }
    if (req.method != "DELETE")
      return method_not_allowed();
    undeploy(self, hc, name);
  } else if (path == "/admin/status") {
    if (req.method != "GET")
      return method_not_allowed();
    cluster_status(self, hc);
  } else {
    send_error(self, *hc.responder,
               status_error(404, "NotFoundError", "no route for " + req.method + " " + path));
  }
}

gateway_metrics make_metrics(std::shared_ptr<metrics::registry> reg) {
  gateway_metrics m;
  const auto buckets = metrics::latency_buckets();
  m.running = &reg->add_gauge("vllm:num_requests_running", "Requests producing tokens",
                              {"model_name"});
  m.waiting = &reg->add_gauge("vllm:num_requests_waiting",
                              "Requests waiting for their first token", {"model_name"});
  m.ttft = &reg->add_histogram("vllm:time_to_first_token_seconds", "Time to first token",
                               buckets, {"model_name"});
  m.itl = &reg->add_histogram("vllm:inter_token_latency_seconds", "Time between tokens",
                              buckets, {"model_name"});
  m.e2e = &reg->add_histogram("vllm:e2e_request_latency_seconds", "Request latency", buckets,
                              {"model_name"});
  m.prompt_tokens = &reg->add_counter("vllm:prompt_tokens_total", "Prompt tokens processed",
                                      {"model_name"});
  m.generation_tokens = &reg->add_counter("vllm:generation_tokens_total",
                                          "Tokens generated", {"model_name"});
  m.success = &reg->add_counter("vllm:request_success_total", "Requests finished",
                                {"model_name", "finished_reason"});
  m.http_errors = &reg->add_counter("thaw_http_errors_total", "Error responses by status",
                                    {"status"});
  m.reg = std::move(reg);
  return m;
}

gateway_actor::behavior_type gateway_fn(gateway_ptr self, gateway_options options,
                                        caf::actor registry, caf::actor scheduler,
                                        std::shared_ptr<metrics::registry> reg) {
  auto& s = self->state;
  s.options = std::move(options);
  s.registry = caf::actor_cast<registry_actor>(registry);
  s.scheduler = caf::actor_cast<scheduler_actor>(scheduler);
  s.m = make_metrics(std::move(reg));
  return {
      [=](http_call& hc) { route(self, hc); },
      [=](call_gone& g) { on_call_gone(self, g.id); },
      [=](token_event& ev) { on_token_event(self, ev); },
      [=](deploy_atom, const model_frontend_ptr& f) { self->state.models[f->spec.name] = f; },
      [=](delete_atom, const std::string& name) { self->state.models.erase(name); },
  };
}

} // namespace
} // namespace gw

caf::actor spawn_gateway(caf::actor_system& sys, gateway_options options, caf::actor registry,
                         caf::actor scheduler, std::shared_ptr<metrics::registry> metrics) {
  return caf::actor_cast<caf::actor>(sys.spawn(gw::gateway_fn, std::move(options),
                                               std::move(registry), std::move(scheduler),
                                               std::move(metrics)));
}

http::handler gateway_handler(caf::actor gateway) {
  return [gateway](http::request req, std::shared_ptr<http::responder> r) {
    caf::anon_send(gateway,
                   http_call{std::make_shared<http::request>(std::move(req)), std::move(r)});
  };
}

} // namespace thaw
