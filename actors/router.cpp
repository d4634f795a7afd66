#include "actors/router.hpp"

#include "actors/router_state.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include <spdlog/spdlog.h>

namespace thaw {
namespace router_impl {

instance_entry *find_instance(router_state &s, const caf::actor &handle) {
  for (auto &e : s.instances)
    if (e.handle == handle)
      return &e;
  return nullptr;
}

metrics::registry *metrics_of(router_ptr self) {
  return self->state.metrics.get();
}

void report_load(router_ptr self, const caf::actor &handle) {
  auto &s = self->state;
  auto *inst = find_instance(s, handle);
  if (inst == nullptr || !s.scheduler)
    return;
  std::int64_t tokens = 0;
  for (const auto &[id, r] : s.requests)
    if (r.instance == handle)
      tokens += static_cast<std::int64_t>(r.log.request.prompt.size() +
                                          r.log.generated.size());
  self->send(s.scheduler, load_atom::value, handle, inst->in_flight, tokens);
}

void release_slot(router_ptr self, const caf::actor &handle) {
  if (auto *inst = find_instance(self->state, handle)) {
    if (--inst->in_flight == 0)
      inst->idle_since = clock_type::now();
    report_load(self, handle);
  }
}

void fail_request(router_ptr self, std::uint64_t id, error e) {
  auto &s = self->state;
  auto it = s.requests.find(id);
  if (it == s.requests.end())
    return;
  auto ev = failure_event(id, std::move(e));
  ev.seq = it->second.next_seq;
  tell(self, it->second.sink, std::move(ev));
  if (it->second.instance)
    release_slot(self, it->second.instance);
  else
    s.queue.erase(std::remove(s.queue.begin(), s.queue.end(), id),
                  s.queue.end());
  s.requests.erase(it);
}

bool expected_soon(const router_state &s, clock_type::time_point now) {
  if (s.arrivals < 3 || s.arrival_gap_s <= 0)
    return false;
  const double since =
      std::chrono::duration<double>(now - s.last_arrival).count();
  return since <= 10 * s.arrival_gap_s;
}

namespace {

void dispatch(router_ptr self, instance_entry &inst, std::uint64_t id) {
  auto &r = self->state.requests.at(id);
  ++inst.in_flight;
  r.instance = inst.handle;
  r.early.clear();
  self->send(as_instance(inst.handle), instance_request{id, r.log});
  report_load(self, inst.handle);
}

void fail_queued(router_ptr self, const error &e) {
  auto queue = std::move(self->state.queue);
  self->state.queue.clear();
  for (auto id : queue)
    fail_request(self, id, e);
}

/// Sends request `id` to the least loaded instance under target, else asks for
/// one more instance (up to max) and queues it, else sends it to the least
/// loaded instance anyway (the engine queues it). `front`: a resumed request
/// goes ahead of new ones.
void admit(router_ptr self, std::uint64_t id, bool front = false) {
  auto &s = self->state;
  instance_entry *best = nullptr;
  for (auto &e : s.instances)
    if (!e.draining && (!best || e.in_flight < best->in_flight))
      best = &e;
  if (best && best->in_flight < s.spec.target_concurrency) {
    dispatch(self, *best, id);
    return;
  }
  auto enqueue = [&] {
    front ? s.queue.push_front(id) : s.queue.push_back(id);
  };
  const auto total = static_cast<std::int32_t>(s.instances.size()) + s.starting;
  if (total < s.spec.max_instances) {
    enqueue();
    // One start per batch of target_concurrency queued requests.
    const auto wanted = static_cast<std::int32_t>(
                            s.queue.size() + s.spec.target_concurrency - 1) /
                        std::max(1, s.spec.target_concurrency);
    if (s.starting < wanted)
      start_instance(self);
    return;
  }
  if (best) {
    dispatch(self, *best, id);
    return;
  }
  enqueue(); // an instance is starting
  if (s.starting == 0 && !s.stopping)
    start_instance(self); // every instance is gone or draining: one more
}

/// Records a migration's client-visible pause: the gap before the target's
/// first token.
void observe_pause(router_ptr self, double seconds) {
  if (auto *m = metrics_of(self))
    m->add_histogram("thaw_migration_pause_seconds",
                     "Client-visible pause of a migrated stream: the source's "
                     "last token to "
                     "the target's first",
                     metrics::latency_buckets(), {"model_name"})
        .get({self->state.spec.name})
        .observe(seconds);
}

/// Relays a committed event to the sink, folding it into the log.
void commit(router_ptr self, request_entry &r, token_event &&ev) {
  const auto now = clock_type::now();
  if (ev.index >= 0) {
    r.log.generated.push_back(ev.token);
    r.log.rng = ev.rng;
    r.log.stop_pending = ev.stop_pending;
    const double gap =
        std::chrono::duration<double>(now - r.last_event).count();
    if (ev.index == r.handoff_index) {
      r.handoff_index = -1;
      observe_pause(self, gap);
    }
    // The last few gaps, for a handoff notice that comes after the target's
    // first token.
    r.recent_gaps.emplace_back(ev.index, gap);
    if (r.recent_gaps.size() > 8)
      r.recent_gaps.pop_front();
  }
  r.last_event = now;
  ev.seq = r.next_seq++;
  ev.stop_pending
      .clear(); // the client needs neither the resume state nor its size
  tell(self, r.sink, std::move(ev));
}

void on_event(router_ptr self, token_event &ev) {
  auto &s = self->state;
  auto it = s.requests.find(ev.request_id);
  if (it == s.requests.end())
    return; // cancelled or failed meanwhile
  auto &r = it->second;
  const auto next = static_cast<std::int32_t>(r.log.generated.size());
  if (ev.index >= 0 && ev.index < next)
    return; // a duplicate (both sides of a handoff, or a resumed run)
  if (ev.index > next) {
    r.early.emplace(
        ev.index,
        std::move(ev)); // the target is ahead of the source's last events
    return;
  }
  bool last = ev.finish != finish_reason::none || ev.failed;
  commit(self, r, std::move(ev));
  for (auto e = r.early.begin();
       !last && e != r.early.end() &&
       static_cast<std::size_t>(e->first) == r.log.generated.size();
       e = r.early.erase(e)) {
    last = e->second.finish != finish_reason::none || e->second.failed;
    commit(self, r, std::move(e->second));
  }
  if (!last)
    return;
  release_slot(self, r.instance);
  s.requests.erase(it);
  drain(self);
}

void on_cancel(router_ptr self, std::uint64_t id) {
  auto &s = self->state;
  auto it = s.requests.find(id);
  if (it == s.requests.end())
    return;
  if (it->second.instance) {
    self->send(as_instance(it->second.instance), cancel_request{id});
    release_slot(self, it->second.instance);
  } else {
    s.queue.erase(std::remove(s.queue.begin(), s.queue.end(), id),
                  s.queue.end());
  }
  s.requests.erase(it);
}

void on_tick(router_ptr self) {
  auto &s = self->state;
  const auto now = clock_type::now();
  const auto keep_alive = std::chrono::milliseconds(s.spec.keep_alive_ms);
  auto count = static_cast<std::int32_t>(s.instances.size());
  for (auto it = s.instances.begin();
       it != s.instances.end() && count > s.spec.min_instances;) {
    if (it->in_flight == 0 && !it->draining &&
        now - it->idle_since >= keep_alive) {
      // Out of the table first, so nothing more is sent to it; no request is
      // pending on it.
      spdlog::info("router {}: instance on {} idle for {} ms, stopping it",
                   s.spec.name, it->node, s.spec.keep_alive_ms);
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
  if (s.instances.empty() && s.starting == 0 && expected_soon(s, now))
    self->request(s.scheduler, caf::infinite, prefetch_atom::value, s.spec.checkpoint)
        .then([](const std::string&) {},
              [=](caf::error &e) {
                spdlog::debug("router {}: prefetch: {}", self->state.spec.name,
                              from_caf(e).to_string());
              });
  for (const auto &inst : s.instances)
    if (inst.in_flight > 0)
      report_load(self, inst.handle); // their token counts grew
  self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
}

void on_submit(router_ptr self, submit_request &r) {
  auto &s = self->state;
  {
    const auto now = clock_type::now();
    if (s.arrivals > 0) {
      const double gap =
          std::chrono::duration<double>(now - s.last_arrival).count();
      s.arrival_gap_s =
          s.arrivals == 1 ? gap : 0.7 * s.arrival_gap_s + 0.3 * gap;
    }
    s.last_arrival = now;
    ++s.arrivals;
  }
  if (s.stopping) {
    tell(self, r.sink,
         failure_event(r.request_id, make_error(errc::not_found,
                                                      "model " + s.spec.name +
                                                          " was deleted")));
    return;
  }
  const auto outstanding = s.requests.size();
  if (static_cast<std::int64_t>(outstanding) >= s.spec.queue_limit) {
    tell(
        self, r.sink,
        failure_event(
            r.request_id,
            make_error(errc::resource_exhausted,
                       "model " + s.spec.name + " has " +
                           std::to_string(outstanding) +
                           " requests waiting or running, its limit is " +
                           std::to_string(s.spec.queue_limit))));
    return;
  }
  if (s.requests.count(r.request_id) != 0) {
    tell(
        self, r.sink,
        failure_event(r.request_id,
                      make_error(errc::already_exists,
                                 "request id " + std::to_string(r.request_id) +
                                     " is already running")));
    return;
  }
  auto &entry = s.requests[r.request_id];
  entry.sink = std::move(r.sink);
  entry.log.request = std::move(r.request);
  entry.log.rng = rng_state{entry.log.request.sampling.seed, 0};
  admit(self, r.request_id);
}

model_status status_of(const router_state &s) {
  model_status m;
  m.name = s.spec.name;
  m.instances = static_cast<std::int32_t>(s.instances.size());
  m.starting = s.starting;
  m.queued = static_cast<std::int32_t>(s.queue.size());
  m.in_flight = static_cast<std::int32_t>(s.requests.size() - s.queue.size());
  m.cold_starts = s.cold_starts;
  return m;
}

void stop(router_ptr self) {
  auto &s = self->state;
  s.stopping = true;
  const auto e =
      make_error(errc::not_found, "model " + s.spec.name + " was deleted");
  std::vector<std::uint64_t> ids;
  for (auto &[id, r] : s.requests)
    ids.push_back(id);
  for (auto id : ids)
    fail_request(self, id, e);
  for (auto &inst : s.instances)
    self->send_exit(inst.handle, caf::exit_reason::user_shutdown);
  s.instances.clear();
  self->quit();
}

router_actor::behavior_type router_fn(router_ptr self, model_spec spec, caf::actor scheduler,
                        std::shared_ptr<metrics::registry> metrics) {
  auto &s = self->state;
  s.spec = std::move(spec);
  s.scheduler = caf::actor_cast<scheduler_actor>(scheduler);
  s.metrics = std::move(metrics);
  self->set_down_handler(
      [=](const caf::down_msg &dm) { on_instance_down(self, dm); });
  self->send(self, tick_atom::value);
  return {
      [=](submit_request &r) { on_submit(self, r); },
      [=](cancel_request &c) { on_cancel(self, c.request_id); },
      [=](token_event &ev) { on_event(self, ev); },
      [=](migrate_handoff &h) { on_handoff(self, h); },
      [=](tick_atom) { on_tick(self); },
      [=](status_atom) -> model_status { return status_of(self->state); },
      [=](migrate_atom, std::string &from, std::string &to,
          std::int32_t max_gap) -> caf::result<migration_report> {
        auto rp = self->make_response_promise<migration_report>();
        migrate(self, rp, std::move(from), std::move(to), max_gap);
        return rp;
      },
      [=](stop_atom) { stop(self); },
  };
}

} // namespace

void observe_late_pause(router_ptr self, const request_entry &r,
                        std::int32_t index) {
  for (const auto &[i, gap] : r.recent_gaps)
    if (i == index)
      observe_pause(self, gap);
}

void drain(router_ptr self) {
  auto &s = self->state;
  while (!s.queue.empty() && !s.instances.empty()) {
    auto id = s.queue.front();
    s.queue.pop_front();
    const auto before = s.queue.size();
    admit(self, id, true);
    if (s.queue.size() >
        before) // admit queued it again: wait for the next instance
      break;
  }
}

void adopt_instance(router_ptr self, const instance_started &started) {
  auto &st = self->state;
  st.backoff = std::chrono::seconds(1);
  self->monitor(started.handle);
  st.instances.push_back(instance_entry{started.handle, started.node, 0});
  if (auto *m = metrics_of(self)) {
    m->add_counter("thaw_loads_total", "Model loads by the tier they came from",
                   {"model_name", "tier"})
        .get({st.spec.name, started.source})
        .inc();
    m->add_histogram("thaw_load_seconds", "Time to load an instance",
                     metrics::latency_buckets(), {"model_name", "tier"})
        .get({st.spec.name, started.source})
        .observe(started.load_seconds);
  }
  spdlog::info("router {}: instance on {} ready ({} in {:.3f} s)", st.spec.name,
               started.node, started.source, started.load_seconds);
}

void start_instance(router_ptr self) {
  auto &s = self->state;
  ++s.starting;
  ++s.cold_starts;
  if (auto *m = metrics_of(self))
    m->add_counter("thaw_cold_starts_total", "Instances started for a model",
                   {"model_name"})
        .get({s.spec.name})
        .inc();
  self->request(s.scheduler, caf::infinite, place_atom::value, s.spec)
      .then(
          [=](instance_started &started) {
            auto &st = self->state;
            --st.starting;
            if (st.stopping) {
              self->send_exit(started.handle, caf::exit_reason::user_shutdown);
              return;
            }
            adopt_instance(self, started);
            drain(self);
          },
          [=](caf::error &err) {
            auto &st = self->state;
            --st.starting;
            auto e = with_context(from_caf(err),
                                  "starting an instance of " + st.spec.name);
            spdlog::error("router: {}", e.to_string());
            st.retry_after = clock_type::now() + st.backoff;
            st.backoff = std::min(st.backoff * 2, std::chrono::seconds(60));
            if (st.instances.empty() && st.starting == 0)
              fail_queued(self, e);
            else
              drain(self);
          });
}

} // namespace router_impl

caf::actor spawn_router(caf::actor_system &sys, model_spec spec,
                        caf::actor scheduler,
                        std::shared_ptr<metrics::registry> metrics) {
  return caf::actor_cast<caf::actor>(sys.spawn(router_impl::router_fn, std::move(spec),
                                               std::move(scheduler), std::move(metrics)));
}

} // namespace thaw
