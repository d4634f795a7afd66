#include "actors/instance.hpp"

#include "runtime/engine/host_model_runner.hpp"
#include "runtime/engine/tokenizer.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <chrono>
#include <spdlog/spdlog.h>
#include <unordered_map>

namespace thaw {
namespace {

struct live_request {
  sequence_id seq_id = 0;
  std::uint32_t next_seq = 0;
  caf::actor reply_to;
};

struct instance_state {
  std::shared_ptr<node_context> ctx;
  model_spec spec;
  // Destroyed bottom-up: engine before runner before weights (the runner reads them).
  std::unique_ptr<checkpoint> ckpt;
  std::unique_ptr<device_buffer> weights;
  std::unique_ptr<model_runner> runner;
  std::unique_ptr<tokenizer> tok;
  std::unique_ptr<engine> eng;
  std::optional<error> load_error;
  instance_started started;
  bool stepping = false;
  std::unordered_map<std::uint64_t, live_request> requests; // by request id
  std::unordered_map<sequence_id, std::uint64_t> by_sequence;
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

using instance_actor_ptr = caf::stateful_actor<instance_state>*;

status load(instance_state& s) {
  const auto t0 = std::chrono::steady_clock::now();
  THAW_ASSIGN(auto ck, checkpoint::open(s.spec.checkpoint));
  s.ckpt = std::make_unique<checkpoint>(std::move(ck));
  THAW_ASSIGN(auto handle, s.ctx->ld->load(*s.ckpt));
  THAW_TRY(handle.wait());
  const auto source = handle.progress().source;
  THAW_ASSIGN(s.weights, handle.take_buffer());
  host_runner_options ro;
  ro.num_kv_blocks = s.spec.kv_blocks;
  ro.threads = s.spec.threads > 0 ? s.spec.threads : s.ctx->options.threads;
  THAW_ASSIGN(s.runner, make_host_model_runner(*s.ckpt, *s.weights, ro));
  THAW_ASSIGN(auto tok, tokenizer::load(s.ckpt->dir() / "tokenizer.json"));
  s.tok = std::make_unique<tokenizer>(std::move(tok));
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
    self->send(req.reply_to, to_event(request_id, req.next_seq++, std::move(ev)));
    if (last) {
      finished = true;
      s.by_sequence.erase(it);
      s.requests.erase(request_id);
    }
  }
  // Counting the blocks only the radix cache holds walks its tree, too much for every step:
  // report when a sequence ends, when the engine goes idle, and otherwise every 100 ms.
  if (finished || !s.eng->has_work() ||
      std::chrono::steady_clock::now() - s.kv_reported >= std::chrono::milliseconds(100))
    report_kv(s);
  schedule_step(self);
}

caf::behavior instance_fn(instance_actor_ptr self, std::shared_ptr<node_context> ctx,
                          model_spec spec) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
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
    spdlog::info("instance: {} on {} loaded from {} in {:.3f} s", s.spec.name, s.started.node,
                 s.started.source, s.started.load_seconds);
  }
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
          self->send(reply_to, failure_event(r.request_id, *st.load_error));
          return;
        }
        if (st.requests.count(r.request_id) != 0) {
          self->send(reply_to,
                     failure_event(r.request_id, make_error(errc::already_exists,
                                                            "request id " +
                                                                std::to_string(r.request_id) +
                                                                " is already running here")));
          return;
        }
        auto id = st.eng->add(std::move(r.request));
        if (!id) {
          self->send(reply_to, failure_event(r.request_id, std::move(id).err()));
          return;
        }
        st.requests[r.request_id] = live_request{*id, 0, reply_to};
        st.by_sequence[*id] = r.request_id;
        schedule_step(self);
      },
      [=](cancel_request& c) {
        auto& st = self->state;
        auto it = st.requests.find(c.request_id);
        if (it == st.requests.end())
          return;
        (void)st.eng->cancel(it->second.seq_id);
        st.by_sequence.erase(it->second.seq_id);
        st.requests.erase(it);
        report_kv(st);
      },
      [=](step_atom) { run_step(self); },
  };
}

} // namespace

caf::actor spawn_instance(caf::actor_system& sys, std::shared_ptr<node_context> ctx,
                          model_spec spec) {
  return sys.spawn<caf::detached>(instance_fn, std::move(ctx), std::move(spec));
}

std::uint64_t instance_bytes(std::uint64_t weight_bytes, const model_config& cfg,
                             std::int32_t kv_blocks) {
  // f32 keys and values: layers x blocks x 16 tokens x kv heads x head_dim x 2 x 4 bytes.
  const std::uint64_t kv = cfg.num_layers * static_cast<std::uint64_t>(kv_blocks) * 16 *
                           cfg.num_kv_heads * cfg.head_dim * 2 * 4;
  return weight_bytes + kv;
}

} // namespace thaw
