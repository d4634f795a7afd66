#include "actors/registry.hpp"

#include "actors/router.hpp"
#include "runtime/checkpoint/checkpoint.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <spdlog/spdlog.h>

namespace thaw {
namespace {

struct registry_state {
  caf::actor scheduler;
  std::shared_ptr<metrics::registry> metrics;
  std::map<std::string, model_frontend_ptr> models;
  std::vector<caf::actor> subscribers;

  static inline const char* name = "registry";
};

using registry_ptr = registry_actor::stateful_pointer<registry_state>;

status check_spec(const model_spec& s) {
  auto bad = [](std::string m) { return make_error(errc::invalid_argument, std::move(m)); };
  if (s.name.empty() || s.name.size() > 128)
    return bad("name: must be 1 to 128 characters");
  for (char c : s.name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
          c == ':' || c == '/'))
      return bad("name: '" + s.name + "' may only hold letters, digits and - _ . : /");
  if (s.checkpoint.empty())
    return bad("checkpoint: missing");
  if (s.min_instances < 0)
    return bad("min_instances: must be >= 0");
  if (s.max_instances < 1 || s.max_instances < s.min_instances)
    return bad("max_instances: must be >= 1 and >= min_instances");
  if (s.target_concurrency < 1)
    return bad("target_concurrency: must be >= 1");
  if (s.keep_alive_ms < 0)
    return bad("keep_alive: must be >= 0");
  if (s.queue_limit < 1)
    return bad("queue_limit: must be >= 1");
  if (s.kv_blocks < 1)
    return bad("kv_blocks: must be >= 1");
  if (s.threads < 0)
    return bad("threads: must be >= 0");
  return {};
}

/// Everything but the router: the checkpoint must open and its tokenizer load.
expected<std::shared_ptr<model_frontend>> make_frontend(model_spec& spec) {
  THAW_TRY(check_spec(spec));
  THAW_ASSIGN(auto ck, checkpoint::open(spec.checkpoint));
  spec.weight_bytes = ck.total_bytes();
  spec.content_id = ck.content_id();
  THAW_ASSIGN(auto tok, tokenizer::load(ck.dir() / "tokenizer.json"));
  auto f = std::make_shared<model_frontend>();
  f->spec = spec;
  f->tok = std::make_shared<const tokenizer>(std::move(tok));
  if (auto t = chat_template::from_tokenizer(*f->tok)) {
    f->tmpl = std::make_shared<const chat_template>(std::move(*t));
  } else if (!spec.chat_template.empty()) {
    // The families' markers are what from_source recognises them by.
    static const std::map<std::string, std::string> markers = {
        {"llama2", "[INST]"}, {"llama3", "<|start_header_id|>"}, {"chatml", "<|im_start|>"}};
    auto m = markers.find(spec.chat_template);
    if (m == markers.end())
      return make_error(errc::invalid_argument, "chat_template: '" + spec.chat_template +
                                                    "' is not llama2, llama3 or chatml");
    THAW_ASSIGN(auto tmpl, chat_template::from_source(m->second));
    f->tmpl = std::make_shared<const chat_template>(std::move(tmpl));
  }
  const auto positions = static_cast<std::int64_t>(ck.config().max_position_embeddings);
  f->max_context = static_cast<std::int32_t>(
      std::min<std::int64_t>(positions, static_cast<std::int64_t>(spec.kv_blocks) * 16));
  f->created = std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
  return f;
}

/// Model `name` is deployed with `prefetch`: the scheduler has its checkpoint read into the
/// DRAM tier of a node (see its prefetch_atom). Nodes that have not registered yet (a cluster's
/// head deploys before they join) are waited for, up to 20 tries half a second apart. Failures
/// are logged: the model still serves, from SSD.
void prefetch(registry_ptr self, const std::string& name, std::int32_t attempt) {
  auto& st = self->state;
  auto it = st.models.find(name);
  if (it == st.models.end() || !it->second->spec.prefetch)
    return; // deleted meanwhile
  self->request(st.scheduler, caf::infinite, prefetch_atom::value, it->second->spec.checkpoint)
      .then([=](std::string& node) { spdlog::info("registry: {} is in DRAM on {}", name, node); },
            [=](caf::error& e) {
              auto err = from_caf(e);
              if (err.code == errc::resource_exhausted && attempt < 20) { // no node yet
                self->delayed_send(self, std::chrono::milliseconds(500), prefetch_atom::value,
                                   name, attempt + 1);
                return;
              }
              spdlog::warn("registry: prefetch of {} failed: {}", name, err.to_string());
            });
}

registry_actor::behavior_type registry_fn(registry_ptr self, caf::actor scheduler,
                                          std::shared_ptr<metrics::registry> metrics) {
  self->state.scheduler = std::move(scheduler);
  self->state.metrics = std::move(metrics);
  self->set_exit_handler([=](caf::exit_msg& msg) {
    for (const auto& [name, f] : self->state.models)
      if (f->router.address() == msg.source) {
        spdlog::error("registry: the router of {} exited: {}", name,
                      self->system().render(msg.reason));
        return;
      }
    if (msg.source && msg.reason == caf::exit_reason::normal)
      return; // a deleted model's router finished
    self->quit(msg.reason);
  });
  return {
      [=](deploy_atom, model_spec& spec) -> caf::result<model_spec> {
        auto& st = self->state;
        if (st.models.count(spec.name) != 0)
          return to_caf(make_error(errc::already_exists,
                                   "model " + spec.name + " is already deployed"));
        auto f = make_frontend(spec);
        if (!f)
          return to_caf(with_context(std::move(f).err(), "deploying " + spec.name));
        (*f)->router = spawn_router(self->system(), spec, st.scheduler, st.metrics);
        self->link_to((*f)->router); // routers go when the registry goes
        model_frontend_ptr frontend = std::move(*f);
        st.models[spec.name] = frontend;
        for (auto& sub : st.subscribers)
          caf::anon_send(sub, deploy_atom::value, frontend);
        spdlog::info("registry: deployed {} from {} (context {} tokens, instances {}..{})",
                     spec.name, spec.checkpoint, frontend->max_context, spec.min_instances,
                     spec.max_instances);
        if (spec.prefetch)
          prefetch(self, spec.name, 0);
        return spec;
      },
      [=](prefetch_atom, const std::string& name, std::int32_t attempt) {
        prefetch(self, name, attempt);
      },
      [=](delete_atom, const std::string& name) -> caf::result<bool> {
        auto& st = self->state;
        auto it = st.models.find(name);
        if (it == st.models.end())
          return to_caf(make_error(errc::not_found, "model " + name + " is not deployed"));
        caf::anon_send(it->second->router, stop_atom::value);
        st.models.erase(it);
        for (auto& sub : st.subscribers)
          caf::anon_send(sub, delete_atom::value, name);
        spdlog::info("registry: deleted {}", name);
        return true;
      },
      [=](list_atom) -> std::vector<model_spec> {
        std::vector<model_spec> out;
        for (const auto& [name, f] : self->state.models)
          out.push_back(f->spec);
        return out;
      },
      [=](sub_atom, const caf::actor& sub) -> bool {
        self->state.subscribers.push_back(sub);
        for (const auto& [name, f] : self->state.models)
          caf::anon_send(sub, deploy_atom::value, f);
        return true;
      },
  };
}

} // namespace

caf::actor spawn_registry(caf::actor_system& sys, caf::actor scheduler,
                          std::shared_ptr<metrics::registry> metrics) {
  return caf::actor_cast<caf::actor>(
      sys.spawn(registry_fn, std::move(scheduler), std::move(metrics)));
}

} // namespace thaw
