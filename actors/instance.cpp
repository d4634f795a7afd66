#include "actors/instance.hpp"

#include "runtime/engine/host_model_runner.hpp"
#if THAW_HAVE_CUDA
#include "gpu/cuda/cuda_device.hpp"
#include "runtime/engine/cuda_model_runner.hpp"
#endif
#include "runtime/engine/tokenizer.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <chrono>
#include <set>
#include <spdlog/spdlog.h>
#include <unordered_map>

namespace thaw {
namespace {

struct live_request {
  sequence_id seq_id = 0;
  std::uint32_t next_seq = 0;
  caf::actor reply_to;
};

/// This instance as a migration's source: its sequences go to `order.target`.
struct outgoing_migration {
  bool active = false;
  migrate_order order;
  caf::typed_response_promise<migration_report> rp;
  std::set<std::uint64_t> remaining; ///< request ids not yet handed off
  std::unordered_map<std::uint64_t, std::int32_t> rounds; ///< state rounds sent, per request
  migration_report report;
};

/// This instance as a migration's target: a sequence held (prefilled, not decoding) until its
/// source hands it off.
struct incoming_sequence {
  sequence_id seq_id = 0;
  caf::actor source;
  std::int32_t tokens = 0; ///< prompt + generated tokens held
  bool acked = false;      ///< the source was told that `tokens` are in the KV cache
};

struct instance_state {
  std::shared_ptr<node_context> ctx;
  model_spec spec;
  std::shared_ptr<host::thread_pool> pool; ///< its slot's compute threads (CPU slots)
  device* gpu = nullptr;                   ///< its slot's GPU (GPU slots)
  // Destroyed bottom-up: engine before runner before weights (the runner reads them).
  std::unique_ptr<checkpoint> ckpt;
  std::unique_ptr<device_buffer> weights; ///< a loaded copy, or
  std::unique_ptr<mapped_model> mapped;   ///< the DRAM tier's own bytes
  std::unique_ptr<model_runner> runner;
  std::shared_ptr<const tokenizer> tok; ///< the node's copy, shared by its instances
  std::unique_ptr<engine> eng;
  std::optional<error> load_error;
  instance_started started;
  bool stepping = false;
  std::unordered_map<std::uint64_t, live_request> requests; // by request id
  std::unordered_map<sequence_id, std::uint64_t> by_sequence;
  outgoing_migration out;
  std::unordered_map<std::uint64_t, incoming_sequence> incoming; // by request id
  /// Requests handed off to another instance: a cancel that reaches this one is passed on. Only
  /// a cancel the router sent before it heard of the handoff comes here, so an entry is kept
  /// for a minute (pruned at each handoff), not for the instance's life.
  std::unordered_map<std::uint64_t, std::pair<caf::actor, std::chrono::steady_clock::time_point>>
      forwarded;
  std::uint64_t migrations = 0; ///< outgoing migrations begun; tells a stale timeout apart
  metrics::family<metrics::gauge>* kv_family = nullptr; ///< vllm:kv_cache_usage_perc
  metrics::gauge* kv_usage = nullptr;                   ///< this instance's series
  metrics::labels kv_labels;
  std::chrono::steady_clock::time_point kv_reported{};

  ~instance_state() {
    if (kv_family != nullptr)
      kv_family->remove(kv_labels);
    eng.reset();
    runner.reset();
  }

  static inline const char* name = "instance";
};

using instance_actor_ptr = instance_actor::stateful_pointer<instance_state>;

/// The weights: on a GPU slot, copied to its GPU from the node's DRAM tier. On the CPU, in place
/// in the node's DRAM tier (loader::map when the model is ready there; else a
/// load_mode::in_place load, which reads it there first): no copy, and instances of a model
/// share one copy. Otherwise, or where the tier's layout or room says no, loaded into a buffer
/// of the instance's own. Then the runner, the tokenizer and the engine.
status load(instance_state& s) {
  const auto t0 = std::chrono::steady_clock::now();
  load_source source = load_source::dram;
  weight_files files;
  if (s.gpu != nullptr) {
    // On a GPU: copied from the node's DRAM tier (read from SSD first if it is not there) on
    // the GPU's copy lanes, then the CUDA runner over it.
#if THAW_HAVE_CUDA
    THAW_ASSIGN(auto handle, s.ctx->ld->load(*s.ckpt, load_mode::copy, s.gpu));
    THAW_TRY(handle.wait());
    s.started.transfer_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    source = handle.progress().source;
    THAW_ASSIGN(s.weights, handle.take_buffer());
    cuda_runner_options co;
    co.num_kv_blocks = s.spec.kv_blocks;
    THAW_ASSIGN(s.runner, make_cuda_model_runner(*s.ckpt, weights_in(*s.ckpt, *s.weights),
                                                 static_cast<cuda::cuda_device&>(*s.gpu), co));
#else
    return make_error(errc::unsupported, "a GPU slot in a thaw built without CUDA");
#endif
  } else if (!(s.mapped = s.ctx->ld->map(*s.ckpt))) {
    THAW_ASSIGN(auto handle, s.ctx->ld->load(*s.ckpt, load_mode::in_place));
    THAW_TRY(handle.wait());
    s.started.transfer_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    source = handle.progress().source;
    if (handle.mode() == load_mode::in_place) {
      THAW_ASSIGN(s.mapped, handle.take_mapped());
    } else {
      THAW_ASSIGN(s.weights, handle.take_buffer());
      files = weights_in(*s.ckpt, *s.weights);
    }
  }
  if (s.mapped) {
    files.files = s.mapped->files();
    s.started.mapped = true;
  }
  if (s.gpu == nullptr) {
    host_runner_options ro;
    ro.num_kv_blocks = s.spec.kv_blocks;
    if (s.spec.threads > 0 && s.spec.threads != s.ctx->options.threads)
      ro.threads = s.spec.threads; // a pool of its own
    else
      ro.pool = s.pool;
    ro.kv_device = s.ctx->dev.get();
    THAW_ASSIGN(s.runner, make_host_model_runner(*s.ckpt, files, ro));
  }
  THAW_ASSIGN(s.tok, s.ctx->tokenizer_for(s.ckpt->content_id(), s.ckpt->dir()));
  s.eng = std::make_unique<engine>(*s.runner, s.tok.get());
  s.started.node = s.ctx->options.name;
  s.started.source = to_string(source);
  s.started.load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {};
}

token_event to_event(std::uint64_t request_id, std::uint32_t seq, sequence_event&& ev) {
  token_event out;
  out.request_id = request_id;
  out.seq = seq;
  out.token = ev.token;
  out.logprob = ev.logprob;
  out.top = std::move(ev.top);
  out.text = std::move(ev.text);
  out.finish = ev.finish;
  out.stop_reason = std::move(ev.stop_reason);
  out.cached_tokens = ev.cached_tokens;
  out.index = ev.index;
  out.rng = ev.rng;
  out.stop_pending = std::move(ev.stop_pending);
  if (ev.failure) {
    out.failed = true;
    out.failure = std::move(*ev.failure);
  }
  return out;
}

/// KV cache usage, 0..1, as vLLM reports it: blocks held by sequences (cached prefixes that
/// only the radix cache holds count as free, since they are evicted on demand).
void report_kv(instance_state& s) {
  if (s.kv_usage == nullptr)
    return;
  s.kv_reported = std::chrono::steady_clock::now();
  const auto st = s.eng->stats();
  const auto held = st.kv_blocks_total - st.kv_blocks_free - st.evictable_blocks;
  s.kv_usage->set(st.kv_blocks_total > 0 ? static_cast<double>(held) / st.kv_blocks_total : 0.0);
}

void schedule_step(instance_actor_ptr self) {
  if (!self->state.stepping && self->state.eng->has_work()) {
    self->state.stepping = true;
    self->send(self, step_atom::value);
  }
}

/// Delivers the source's report once nothing is left to hand off.
void finish_migration(instance_actor_ptr self) {
  auto& m = self->state.out;
  if (!m.active || !m.remaining.empty())
    return;
  m.active = false;
  self->demonitor(m.order.target);
  m.rp.deliver(m.report);
}

/// Ends an outgoing migration early: the sequences not handed off stay here and go on.
void abort_migration(instance_actor_ptr self, std::string reason) {
  auto& m = self->state.out;
  if (!m.active)
    return;
  spdlog::warn("instance {}: migration aborted, {} sequences stay here: {}", self->state.spec.name,
               m.remaining.size(), reason);
  for (auto id : m.remaining)
    self->send(as_instance(m.order.target), migrate_drop{id});
  m.report.kept += static_cast<std::int32_t>(m.remaining.size());
  m.report.aborted = true;
  m.report.reason = std::move(reason);
  m.remaining.clear();
  finish_migration(self);
}

/// Target side: tells each source which held sequences have caught up with their last round.
void ack_caught_up(instance_actor_ptr self) {
  auto& s = self->state;
  for (auto& [id, in] : s.incoming) {
    if (in.acked)
      continue;
    if (auto up = s.eng->held_caught_up(in.seq_id); up && *up) {
      in.acked = true;
      self->send(as_instance(in.source), migrate_ack{id, in.tokens, false, {}});
    }
  }
}

std::int32_t total_tokens(const sequence_state& st) {
  return static_cast<std::int32_t>(st.request.prompt.size() + st.generated.size());
}

/// Source side: the target holds `a.tokens` of a sequence; send the next round, or hand it
/// off when the gap is small enough.
void on_migrate_ack(instance_actor_ptr self, migrate_ack& a) {
  auto& s = self->state;
  auto& m = s.out;
  if (!m.active || m.remaining.count(a.request_id) == 0)
    return; // finished meanwhile, or the migration is over
  auto req = s.requests.find(a.request_id);
  if (a.failed || req == s.requests.end()) {
    if (a.failed)
      spdlog::warn("instance {}: target refused request {}: {}", s.spec.name, a.request_id,
                   a.failure.to_string());
    m.remaining.erase(a.request_id);
    ++m.report.kept;
    finish_migration(self);
    return;
  }
  auto st = s.eng->export_state(req->second.seq_id);
  if (!st) { // cannot happen for a live request; keep it here
    m.remaining.erase(a.request_id);
    ++m.report.kept;
    finish_migration(self);
    return;
  }
  const auto gap = total_tokens(*st) - a.tokens;
  m.report.tokens_sent += std::max(0, gap);
  ++m.report.rounds;
  // On a device where prefilling a few tokens costs as much as decoding them (small models on
  // a CPU), the target never closes a gap below a couple of tokens: after max_rounds the
  // handoff goes ahead with whatever gap is left (the pause grows by its prefill).
  if (gap > m.order.max_gap && ++m.rounds[a.request_id] < migrate_order::max_rounds) {
    self->send(as_instance(m.order.target), migrate_state{a.request_id, std::move(*st), false, {}});
    return;
  }
  // The handoff: this copy stops between two steps, so every token it sampled has already gone
  // to the router, and the target's first event is the next index.
  const auto next_index = static_cast<std::int32_t>(st->generated.size());
  (void)s.eng->cancel(req->second.seq_id);
  auto sink = req->second.reply_to;
  s.by_sequence.erase(req->second.seq_id);
  s.requests.erase(req);
  self->send(as_instance(m.order.target), migrate_state{a.request_id, std::move(*st), true, sink});
  tell(self, sink, migrate_handoff{a.request_id, m.order.target, next_index});
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(s.forwarded,
                [&](const auto& f) { return now - f.second.second > std::chrono::minutes(1); });
  s.forwarded[a.request_id] = {m.order.target, now};
  m.remaining.erase(a.request_id);
  ++m.report.moved;
  finish_migration(self);
}

/// Target side: a round of state from a source.
void on_migrate_state(instance_actor_ptr self, migrate_state& m) {
  auto& s = self->state;
  auto source = caf::actor_cast<caf::actor>(self->current_sender());
  auto refuse = [&](error e) {
    if (m.final) // the source let go already: the request ends with the reason
      tell(self, m.sink,
           failure_event(m.request_id,
                         with_context(std::move(e), "taking over a migrated request")));
    else
      self->send(as_instance(source), migrate_ack{m.request_id, 0, true, std::move(e)});
  };
  if (s.load_error)
    return refuse(*s.load_error);
  const auto tokens = total_tokens(m.state);
  auto in = s.incoming.find(m.request_id);
  if (!m.final) {
    if (in == s.incoming.end()) {
      auto id = s.eng->import_state(std::move(m.state), import_mode::hold);
      if (!id)
        return refuse(std::move(id).err());
      self->monitor(source);
      s.incoming[m.request_id] = incoming_sequence{*id, source, tokens, false};
      spdlog::info("instance {}: holding request {} for a migration ({} tokens)", s.spec.name,
                   m.request_id, tokens);
    } else {
      if (auto r = s.eng->update_held(in->second.seq_id, m.state, false); !r)
        return refuse(std::move(r).err());
      in->second.tokens = tokens;
      in->second.acked = false;
    }
    schedule_step(self);
    ack_caught_up(self);
    return;
  }
  sequence_id seq = 0;
  if (in != s.incoming.end()) {
    seq = in->second.seq_id;
    s.incoming.erase(in);
    if (auto r = s.eng->update_held(seq, m.state, true); !r) {
      (void)s.eng->cancel(seq);
      return refuse(std::move(r).err());
    }
  } else {
    auto id = s.eng->import_state(std::move(m.state));
    if (!id)
      return refuse(std::move(id).err());
    seq = *id;
  }
  s.requests[m.request_id] = live_request{seq, 0, m.sink};
  s.by_sequence[seq] = m.request_id;
  schedule_step(self);
}

void drop_incoming(instance_actor_ptr self, std::uint64_t request_id) {
  auto& s = self->state;
  auto in = s.incoming.find(request_id);
  if (in == s.incoming.end())
    return;
  (void)s.eng->cancel(in->second.seq_id);
  s.incoming.erase(in);
}

void run_step(instance_actor_ptr self) {
  auto& s = self->state;
  s.stepping = false;
  bool finished = false;
  for (auto& ev : s.eng->step()) {
    auto it = s.by_sequence.find(ev.id);
    if (it == s.by_sequence.end())
      continue;
    const auto request_id = it->second;
    auto& req = s.requests.at(request_id);
    const bool last = ev.finish != finish_reason::none;
    tell(self, req.reply_to, to_event(request_id, req.next_seq++, std::move(ev)));
    if (last) {
      finished = true;
      s.by_sequence.erase(it);
      s.requests.erase(request_id);
      if (s.out.active && s.out.remaining.erase(request_id) != 0) {
        self->send(as_instance(s.out.order.target), migrate_drop{request_id});
        ++s.out.report.finished_on_source;
        finish_migration(self);
      }
    }
  }
  ack_caught_up(self);
  // Counting the blocks only the radix cache holds walks its tree, too much for every step:
  // report when a sequence ends, when the engine goes idle, and otherwise every 100 ms.
  if (finished || !s.eng->has_work() ||
      std::chrono::steady_clock::now() - s.kv_reported >= std::chrono::milliseconds(100))
    report_kv(s);
  schedule_step(self);
}

instance_actor::behavior_type instance_fn(instance_actor_ptr self,
                                          std::shared_ptr<node_context> ctx, model_spec spec,
                                          std::shared_ptr<checkpoint> ckpt,
                                          std::shared_ptr<host::thread_pool> pool, device* gpu) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  s.ckpt = std::make_unique<checkpoint>(std::move(*ckpt));
  s.pool = std::move(pool);
  s.gpu = gpu;
  s.spec = std::move(spec);
  if (auto r = load(s); !r) {
    s.load_error = with_context(std::move(r).err(), "loading " + s.spec.name);
    spdlog::error("instance: {}", s.load_error->to_string());
  } else {
    s.started.handle = caf::actor_cast<caf::actor>(self);
    if (s.ctx->metrics) {
      s.kv_labels = {s.spec.name, s.ctx->options.name, std::to_string(self->id())};
      s.kv_family = &s.ctx->metrics->add_gauge("vllm:kv_cache_usage_perc",
                                               "KV cache blocks held by sequences, 0..1",
                                               {"model_name", "node", "instance"});
      s.kv_usage = &s.kv_family->get(s.kv_labels);
      report_kv(s);
    }
    spdlog::info("instance: {} on {} {} {} in {:.3f} s", s.spec.name, s.started.node,
                 s.started.mapped ? "running in place in" : "loaded from", s.started.source,
                 s.started.load_seconds);
  }
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    if (st.out.active && st.out.order.target.address() == dm.source)
      abort_migration(self, "the target instance was lost: " + self->system().render(dm.reason));
    for (auto it = st.incoming.begin(); it != st.incoming.end();) {
      if (it->second.source.address() == dm.source) {
        (void)st.eng->cancel(it->second.seq_id);
        it = st.incoming.erase(it);
      } else {
        ++it;
      }
    }
  });
  return {
      [=](ready_atom) -> caf::result<instance_started> {
        if (self->state.load_error) {
          auto e = *self->state.load_error;
          self->quit();
          return to_caf(e);
        }
        return self->state.started;
      },
      [=](instance_request& r) {
        auto& st = self->state;
        auto reply_to = caf::actor_cast<caf::actor>(self->current_sender());
        if (st.load_error) {
          tell(self, reply_to, failure_event(r.request_id, *st.load_error));
          return;
        }
        if (st.requests.count(r.request_id) != 0) {
          tell(self, reply_to,
               failure_event(r.request_id, make_error(errc::already_exists,
                                                            "request id " +
                                                                std::to_string(r.request_id) +
                                                                " is already running here")));
          return;
        }
        // A resumed request (failover) carries the tokens it already has.
        auto id = r.state.generated.empty() ? st.eng->add(std::move(r.state.request))
                                            : st.eng->import_state(std::move(r.state));
        if (!id) {
          tell(self, reply_to, failure_event(r.request_id, std::move(id).err()));
          return;
        }
        st.requests[r.request_id] = live_request{*id, 0, reply_to};
        st.by_sequence[*id] = r.request_id;
        schedule_step(self);
      },
      [=](cancel_request& c) {
        auto& st = self->state;
        auto it = st.requests.find(c.request_id);
        if (it == st.requests.end()) {
          if (auto f = st.forwarded.find(c.request_id); f != st.forwarded.end())
            self->send(as_instance(f->second.first), c);
          return;
        }
        if (st.out.active && st.out.remaining.erase(c.request_id) != 0) {
          self->send(as_instance(st.out.order.target), migrate_drop{c.request_id});
          finish_migration(self);
        }
        (void)st.eng->cancel(it->second.seq_id);
        st.by_sequence.erase(it->second.seq_id);
        st.requests.erase(it);
        report_kv(st);
      },
      [=](step_atom) { run_step(self); },
      [=](migrate_atom, migrate_order& o) -> caf::result<migration_report> {
        auto& st = self->state;
        if (st.out.active)
          return to_caf(make_error(errc::already_exists,
                                   "instance of " + st.spec.name + " is already migrating"));
        if (!o.target || o.target.address() == self->address())
          return to_caf(make_error(errc::invalid_argument, "migrate: no other target instance"));
        st.out = outgoing_migration{};
        ++st.migrations;
        st.out.active = true;
        st.out.order = o;
        st.out.rp = self->make_response_promise<migration_report>();
        self->monitor(o.target);
        for (auto& [id, req] : st.requests) {
          auto state = st.eng->export_state(req.seq_id);
          if (!state)
            continue;
          st.out.report.tokens_sent += total_tokens(*state);
          ++st.out.report.rounds;
          st.out.remaining.insert(id);
          self->send(as_instance(o.target), migrate_state{id, std::move(*state), false, {}});
        }
        spdlog::info("instance {}: migrating {} sequences", st.spec.name, st.out.remaining.size());
        self->delayed_send(self, std::chrono::milliseconds(o.timeout_ms), timeout_atom::value,
                           st.migrations);
        auto rp = st.out.rp;
        finish_migration(self); // nothing to move: answered at once
        return rp;
      },
      [=](timeout_atom, std::uint64_t n) {
        if (self->state.out.active && n == self->state.migrations)
          abort_migration(self, "not handed off within " +
                                    std::to_string(self->state.out.order.timeout_ms) + " ms");
      },
      [=](migrate_atom, stop_atom, std::string& reason) {
        abort_migration(self, std::move(reason));
      },
      [=](migrate_state& m) { on_migrate_state(self, m); },
      [=](migrate_ack& a) { on_migrate_ack(self, a); },
      [=](migrate_drop& d) { drop_incoming(self, d.request_id); },
  };
}

} // namespace

instance_actor spawn_instance(caf::actor_system& sys, std::shared_ptr<node_context> ctx,
                          model_spec spec, checkpoint ckpt,
                          std::shared_ptr<host::thread_pool> pool, device* gpu) {
  return sys.spawn<caf::detached>(instance_fn, std::move(ctx), std::move(spec),
                                  std::make_shared<checkpoint>(std::move(ckpt)), std::move(pool),
                                  gpu);
}

std::uint64_t instance_bytes(std::uint64_t weight_bytes, const model_config& cfg,
                             std::int32_t kv_blocks) {
  // f32 keys and values: layers x blocks x 16 tokens x kv heads x head_dim x 2 x 4 bytes.
  const std::uint64_t kv = cfg.num_layers * static_cast<std::uint64_t>(kv_blocks) * 16 *
                           cfg.num_kv_heads * cfg.head_dim * 2 * 4;
  return weight_bytes + kv;
}

} // namespace thaw
