// The router's recovery paths: failover (an instance is lost, its requests
// resume elsewhere from the committed log) and live migration (an instance's
// sequences move to a new instance on another node without the client seeing a
// gap). See router.hpp for the protocol.
#include "actors/router_state.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include <spdlog/spdlog.h>

namespace thaw::router_impl {
namespace {

void count(router_ptr self, const char *name, const char *help,
           const std::string &outcome) {
  if (auto *m = metrics_of(self))
    m->add_counter(name, help, {"model_name", "outcome"})
        .get({self->state.spec.name, outcome})
        .inc();
}

/// Puts request `id` back at the front of the queue to run on another instance
/// from its log.
void resume(router_ptr self, std::uint64_t id, const std::string &why) {
  auto &s = self->state;
  auto &r = s.requests.at(id);
  if (++r.resumes > max_resumes) {
    fail_request(self, id,
                 make_error(errc::io_error, why + "; the request was resumed " +
                                                std::to_string(max_resumes) +
                                                " times already, giving up"));
    return;
  }
  spdlog::warn("router {}: request {} resumes after {} tokens: {}", s.spec.name,
               id, r.log.generated.size(), why);
  count(self, "thaw_failovers_total", "Requests resumed on another instance",
        "resumed");
  r.instance = caf::actor{};
  r.early.clear();
  r.handoff_index = -1;
  s.queue.push_front(id);
}

/// Starts an instance if the queue has work and nothing else will take it.
void ensure_capacity(router_ptr self) {
  auto &s = self->state;
  if (s.queue.empty() || s.stopping)
    return;
  const bool usable =
      std::any_of(s.instances.begin(), s.instances.end(),
                  [](const instance_entry &e) { return !e.draining; });
  if (!usable && s.starting == 0)
    start_instance(self);
  else
    drain(self);
}

} // namespace

void on_instance_down(router_ptr self, const caf::down_msg &dm) {
  auto &s = self->state;
  if (s.migrating && s.migration_target &&
      s.migration_target.address() == dm.source)
    self->send(as_instance(s.migration_source), migrate_atom::value, stop_atom::value,
               "the target instance was lost: " +
                   (dm.reason ? self->system().render(dm.reason)
                              : std::string{"stopped"}));
  auto it =
      std::find_if(s.instances.begin(), s.instances.end(), [&](const auto &e) {
        return e.handle.address() == dm.source;
      });
  if (it == s.instances.end())
    return;
  const auto node = it->node;
  const auto handle = it->handle;
  s.instances.erase(it);
  const auto reason =
      dm.reason ? self->system().render(dm.reason) : std::string{"stopped"};
  const auto why = "the instance of " + s.spec.name + " on node " + node +
                   " was lost: " + reason;
  std::vector<std::uint64_t> lost;
  for (auto &[id, r] : s.requests)
    if (r.instance == handle)
      lost.push_back(id);
  for (auto id : lost)
    resume(self, id, why);
  // A migration whose source died: its report will never come (the target drops
  // what it held when it sees the source go).
  if (s.migrating && s.migration_source == handle)
    if (auto failed = std::move(s.migration_failed))
      failed(make_error(errc::io_error,
                        "migrate: the source instance was lost: " + reason));
  ensure_capacity(self);
}

void on_handoff(router_ptr self, migrate_handoff &h) {
  auto &s = self->state;
  auto it = s.requests.find(h.request_id);
  if (it == s.requests.end())
    return; // cancelled meanwhile (the source passed the cancel on)
  auto &r = it->second;
  release_slot(self, r.instance);
  auto *target = find_instance(s, h.target);
  if (target ==
      nullptr) { // the target died before this notice came: resume from the log
    resume(self, h.request_id,
           "the migration target of " + s.spec.name + " was lost");
    ensure_capacity(self);
    return;
  }
  ++target->in_flight;
  r.instance = h.target;
  report_load(self, h.target);
  if (static_cast<std::int32_t>(r.log.generated.size()) <= h.next_index)
    r.handoff_index =
        h.next_index; // the pause is measured at the target's first token
  else
    observe_late_pause(self, r,
                       h.next_index); // that token came before this notice
}

void end_migration(router_ptr self) {
  auto &s = self->state;
  s.migrating = false;
  s.migration_source = caf::actor{};
  s.migration_target = caf::actor{};
  s.migration_failed = nullptr;
}

void migrate(router_ptr self, caf::typed_response_promise<migration_report> rp,
             std::string from, std::string to, std::int32_t max_gap) {
  auto &s = self->state;
  auto refuse = [&](errc code, std::string msg) mutable {
    rp.deliver(to_caf(make_error(code, msg)));
  };
  if (s.migrating)
    return refuse(errc::already_exists,
                  "a migration of " + s.spec.name + " is under way");
  auto src =
      std::find_if(s.instances.begin(), s.instances.end(),
                   [&](const instance_entry &e) { return e.node == from; });
  if (src == s.instances.end())
    return refuse(errc::not_found,
                  "no instance of " + s.spec.name + " runs on node " + from);
  if (from == to)
    return refuse(errc::invalid_argument,
                  "migrate: source and target node are both " + from);
  s.migrating = true;
  const auto source = src->handle;
  count(self, "thaw_migrations_total", "Live migrations by outcome", "started");
  auto fail = [=](error e) mutable {
    auto &st = self->state;
    if (!st.migrating)
      return; // already ended (the node died, then its request failed too)
    end_migration(self);
    if (auto *inst = find_instance(st, source))
      inst->draining = false;
    count(self, "thaw_migrations_total", "Live migrations by outcome",
          "aborted");
    spdlog::warn("router {}: migration {} -> {} failed: {}", st.spec.name, from,
                 to, e.to_string());
    rp.deliver(to_caf(e));
  };
  s.migration_source = source;
  s.migration_failed = fail;
  // A new instance on the target node (placed by the scheduler, which knows it
  // is this router's), then the handoff.
  self->request(s.scheduler, caf::infinite, place_atom::value, s.spec, to)
      .then(
          [=](instance_started &started) mutable {
            auto &st = self->state;
            if (!st.migrating) { // given up meanwhile
              self->send_exit(started.handle, caf::exit_reason::user_shutdown);
              return;
            }
            adopt_instance(self, started);
            st.migration_target = started.handle;
            auto *inst = find_instance(st, source);
            if (inst == nullptr)
              return fail(make_error(errc::io_error,
                                     "migrate: the source instance on " + from +
                                         " was lost while the target started"));
            inst->draining = true;
            migrate_order order{started.handle, max_gap, 30'000};
            const auto ordered_at = clock_type::now();
            self->request(as_instance(source), caf::infinite, migrate_atom::value, order)
                .then(
                    [=](migration_report &rep) mutable {
                      auto &st2 = self->state;
                      if (!st2.migrating)
                        return;
                      end_migration(self);
                      // The resume (rounds of recompute, then the handoff), for
                      // the scheduler's migration-time line a*tokens + b.
                      if (!rep.aborted && rep.moved > 0)
                        self->send(st2.scheduler, migrate_atom::value,
                                   rep.tokens_sent,
                                   std::chrono::duration<double>(
                                       clock_type::now() - ordered_at)
                                       .count());
                      if (auto *m = metrics_of(self)) {
                        m->add_counter("thaw_migration_rounds_total",
                                       "State rounds sent by migrations",
                                       {"model_name"})
                            .get({st2.spec.name})
                            .inc(static_cast<double>(rep.rounds));
                        m->add_counter("thaw_migration_recomputed_tokens_total",
                                       "Tokens migration targets prefilled",
                                       {"model_name"})
                            .get({st2.spec.name})
                            .inc(static_cast<double>(rep.tokens_sent));
                      }
                      count(self, "thaw_migrations_total",
                            "Live migrations by outcome",
                            rep.aborted ? "aborted" : "completed");
                      if (rep.aborted) {
                        if (auto *i = find_instance(st2, source))
                          i->draining = false;
                      } else if (auto it2 = std::find_if(
                                     st2.instances.begin(), st2.instances.end(),
                                     [&](const auto &e) {
                                       return e.handle == source;
                                     });
                                 it2 != st2.instances.end()) {
                        // Every request on it was handed off (the handoffs came
                        // before this report): its slot is free for another
                        // model.
                        self->demonitor(source);
                        self->send_exit(source,
                                        caf::exit_reason::user_shutdown);
                        st2.instances.erase(it2);
                      }
                      spdlog::info(
                          "router {}: migration {} -> {}: {} moved, {} "
                          "finished on the source, {} kept, {} rounds{}",
                          st2.spec.name, from, to, rep.moved,
                          rep.finished_on_source, rep.kept, rep.rounds,
                          rep.aborted ? " (aborted: " + rep.reason + ")" : "");
                      drain(self);
                      rp.deliver(rep);
                    },
                    [=](caf::error &err) mutable { fail(from_caf(err)); });
          },
          [=](caf::error &err) mutable {
            fail(with_context(from_caf(err), "migrate: starting on " + to));
          });
}

} // namespace thaw::router_impl
