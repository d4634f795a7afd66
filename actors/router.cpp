#include "actors/router.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <chrono>
#include <deque>
#include <spdlog/spdlog.h>
#include <unordered_map>

namespace thaw {
namespace {

using clock_type = std::chrono::steady_clock;

struct instance_entry {
  caf::actor handle;
  std::string node;
  std::int32_t in_flight = 0;
  clock_type::time_point idle_since = clock_type::now();
};

struct pending_request {
  caf::actor sink;
  caf::actor instance;
  std::uint32_t next_seq = 0;
};

struct router_state {
  model_spec spec;
  caf::actor scheduler;
  std::shared_ptr<metrics::registry> metrics;
  std::vector<instance_entry> instances;
  std::int32_t starting = 0;
  std::deque<submit_request> queue;
  std::unordered_map<std::uint64_t, pending_request> pending;
  std::uint64_t cold_starts = 0;
  bool stopping = false;
  /// After a failed start, min_instances is not pursued again before this (doubling back-off,
  /// 1 s to 60 s), so a model that cannot load does not retry every tick.
  clock_type::time_point retry_after{};
  std::chrono::seconds backoff{1};

  static inline const char* name = "router";
};

using router_ptr = caf::stateful_actor<router_state>*;

instance_entry* find_instance(router_state& s, const caf::actor_addr& addr) {
  for (auto& e : s.instances)
    if (e.handle.address() == addr)
      return &e;
  return nullptr;
}

void dispatch(router_ptr self, instance_entry& inst, submit_request&& r) {
  ++inst.in_flight;
  self->state.pending[r.request_id] = pending_request{r.sink, inst.handle, 0};
  self->send(inst.handle, instance_request{r.request_id, std::move(r.request)});
}

void fail_queued(router_ptr self, const error& e) {
  auto queue = std::move(self->state.queue);
  self->state.queue.clear();
  for (auto& r : queue)
    self->send(r.sink, failure_event(r.request_id, e));
}

void start_instance(router_ptr self);

/// Sends `r` to the least loaded instance under target, else asks for one more instance (up to
/// max) and queues, else sends it to the least loaded instance anyway (the engine queues it).
void admit(router_ptr self, submit_request&& r) {
  auto& s = self->state;
  instance_entry* best = nullptr;
  for (auto& e : s.instances)
    if (!best || e.in_flight < best->in_flight)
      best = &e;
  if (best && best->in_flight < s.spec.target_concurrency) {
    dispatch(self, *best, std::move(r));
    return;
  }
  const auto total = static_cast<std::int32_t>(s.instances.size()) + s.starting;
  if (total < s.spec.max_instances) {
    s.queue.push_back(std::move(r));
    // One start per batch of target_concurrency queued requests.
    const auto wanted = static_cast<std::int32_t>(s.queue.size() + s.spec.target_concurrency - 1) /
                        std::max(1, s.spec.target_concurrency);
    if (s.starting < wanted)
      start_instance(self);
    return;
  }
  if (best) {
    dispatch(self, *best, std::move(r));
    return;
  }
  s.queue.push_back(std::move(r)); // an instance is starting
}

void drain(router_ptr self) {
  auto& s = self->state;
  while (!s.queue.empty() && !s.instances.empty()) {
    auto r = std::move(s.queue.front());
    s.queue.pop_front();
    const auto before = s.queue.size();
    admit(self, std::move(r));
    if (s.queue.size() > before) // admit queued it again: wait for the next instance
      break;
  }
}

void start_instance(router_ptr self) {
  auto& s = self->state;
  ++s.starting;
  ++s.cold_starts;
  if (s.metrics)
    s.metrics->add_counter("thaw_cold_starts_total", "Instances started for a model",
                           {"model_name"})
        .get({s.spec.name})
        .inc();
  self->request(s.scheduler, caf::infinite, place_atom::value, s.spec)
      .then(
          [=](instance_started& started) {
            auto& st = self->state;
            --st.starting;
            if (st.stopping) {
              self->send_exit(started.handle, caf::exit_reason::user_shutdown);
              return;
            }
            st.backoff = std::chrono::seconds(1);
            self->monitor(started.handle);
            st.instances.push_back(instance_entry{started.handle, started.node, 0});
            if (st.metrics) {
              st.metrics
                  ->add_counter("thaw_loads_total", "Model loads by the tier they came from",
                                {"model_name", "tier"})
                  .get({st.spec.name, started.source})
                  .inc();
              st.metrics
                  ->add_histogram("thaw_load_seconds", "Time to load an instance",
                                  metrics::latency_buckets(), {"model_name", "tier"})
                  .get({st.spec.name, started.source})
                  .observe(started.load_seconds);
            }
            spdlog::info("router {}: instance on {} ready ({} in {:.3f} s)", st.spec.name,
                         started.node, started.source, started.load_seconds);
            drain(self);
          },
          [=](caf::error& err) {
            auto& st = self->state;
            --st.starting;
            auto e = with_context(from_caf(err), "starting an instance of " + st.spec.name);
            spdlog::error("router: {}", e.to_string());
            st.retry_after = clock_type::now() + st.backoff;
            st.backoff = std::min(st.backoff * 2, std::chrono::seconds(60));
            if (st.instances.empty() && st.starting == 0)
              fail_queued(self, e);
            else
              drain(self);
          });
}

void on_event(router_ptr self, token_event& ev) {
  auto& s = self->state;
  auto it = s.pending.find(ev.request_id);
  if (it == s.pending.end())
    return; // cancelled meanwhile
  ev.seq = it->second.next_seq++;
  const bool last = ev.finish != finish_reason::none || ev.failed;
  self->send(it->second.sink, std::move(ev));
  if (!last)
    return;
  if (auto* inst = find_instance(s, it->second.instance.address())) {
    if (--inst->in_flight == 0)
      inst->idle_since = clock_type::now();
  }
  s.pending.erase(it);
  drain(self);
}

void on_cancel(router_ptr self, std::uint64_t id) {
  auto& s = self->state;
  for (auto q = s.queue.begin(); q != s.queue.end(); ++q) {
    if (q->request_id == id) {
      s.queue.erase(q);
      return;
    }
  }
  auto it = s.pending.find(id);
  if (it == s.pending.end())
    return;
  self->send(it->second.instance, cancel_request{id});
  if (auto* inst = find_instance(s, it->second.instance.address())) {
    if (--inst->in_flight == 0)
      inst->idle_since = clock_type::now();
  }
  s.pending.erase(it);
}

void on_instance_down(router_ptr self, const caf::down_msg& dm) {
  auto& s = self->state;
  auto it = std::find_if(s.instances.begin(), s.instances.end(),
                         [&](const auto& e) { return e.handle.address() == dm.source; });
  if (it == s.instances.end())
    return;
  const auto node = it->node;
  s.instances.erase(it);
  const auto reason = dm.reason ? self->system().render(dm.reason) : std::string{"stopped"};
  for (auto p = s.pending.begin(); p != s.pending.end();) {
    if (p->second.instance.address() == dm.source) {
      auto ev = failure_event(p->first, make_error(errc::io_error,
                                                   "the instance of " + s.spec.name + " on node " +
                                                       node + " was lost: " + reason));
      ev.seq = p->second.next_seq;
      self->send(p->second.sink, std::move(ev));
      p = s.pending.erase(p);
    } else {
      ++p;
    }
  }
  if (!s.queue.empty() && s.instances.empty() && s.starting == 0 && !s.stopping)
    start_instance(self);
}

void on_tick(router_ptr self) {
  auto& s = self->state;
  const auto now = clock_type::now();
  const auto keep_alive = std::chrono::milliseconds(s.spec.keep_alive_ms);
  auto count = static_cast<std::int32_t>(s.instances.size());
  for (auto it = s.instances.begin(); it != s.instances.end() && count > s.spec.min_instances;) {
    if (it->in_flight == 0 && now - it->idle_since >= keep_alive) {
      // Out of the table first, so nothing more is sent to it; no request is pending on it.
      spdlog::info("router {}: instance on {} idle for {} ms, stopping it", s.spec.name, it->node,
                   s.spec.keep_alive_ms);
      self->demonitor(it->handle);
      self->send_exit(it->handle, caf::exit_reason::user_shutdown);
      it = s.instances.erase(it);
      --count;
    } else {
      ++it;
    }
  }
  while (count + s.starting < s.spec.min_instances && now >= s.retry_after)
    start_instance(self);
  self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
}

caf::behavior router_fn(router_ptr self, model_spec spec, caf::actor scheduler,
                        std::shared_ptr<metrics::registry> metrics) {
  auto& s = self->state;
  s.spec = std::move(spec);
  s.scheduler = std::move(scheduler);
  s.metrics = std::move(metrics);
  self->set_down_handler([=](const caf::down_msg& dm) { on_instance_down(self, dm); });
  self->send(self, tick_atom::value);
  return {
      [=](submit_request& r) {
        auto& st = self->state;
        const auto outstanding = st.queue.size() + st.pending.size();
        if (st.stopping) {
          self->send(r.sink, failure_event(r.request_id,
                                           make_error(errc::not_found,
                                                      "model " + st.spec.name + " was deleted")));
          return;
        }
        if (static_cast<std::int64_t>(outstanding) >= st.spec.queue_limit) {
          self->send(r.sink,
                     failure_event(r.request_id,
                                   make_error(errc::resource_exhausted,
                                              "model " + st.spec.name + " has " +
                                                  std::to_string(outstanding) +
                                                  " requests waiting or running, its limit is " +
                                                  std::to_string(st.spec.queue_limit))));
          return;
        }
        admit(self, std::move(r));
      },
      [=](cancel_request& c) { on_cancel(self, c.request_id); },
      [=](token_event& ev) { on_event(self, ev); },
      [=](tick_atom) { on_tick(self); },
      [=](status_atom) -> model_status {
        auto& st = self->state;
        model_status m;
        m.name = st.spec.name;
        m.instances = static_cast<std::int32_t>(st.instances.size());
        m.starting = st.starting;
        m.queued = static_cast<std::int32_t>(st.queue.size());
        m.in_flight = static_cast<std::int32_t>(st.pending.size());
        m.cold_starts = st.cold_starts;
        return m;
      },
      [=](stop_atom) {
        auto& st = self->state;
        st.stopping = true;
        const auto e = make_error(errc::not_found, "model " + st.spec.name + " was deleted");
        fail_queued(self, e);
        for (auto& [id, p] : st.pending)
          self->send(p.sink, failure_event(id, e));
        st.pending.clear();
        for (auto& inst : st.instances)
          self->send_exit(inst.handle, caf::exit_reason::user_shutdown);
        st.instances.clear();
        self->quit();
      },
  };
}

} // namespace

caf::actor spawn_router(caf::actor_system& sys, model_spec spec, caf::actor scheduler,
                        std::shared_ptr<metrics::registry> metrics) {
  return sys.spawn(router_fn, std::move(spec), std::move(scheduler), std::move(metrics));
}

} // namespace thaw
