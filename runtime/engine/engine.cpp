#include "runtime/engine/engine.hpp"

#include "runtime/engine/kv_blocks.hpp"
#include "runtime/engine/radix_cache.hpp"
#include "runtime/engine/stop_matcher.hpp"
#include "runtime/engine/tokenizer.hpp"

#include <algorithm>
#include <deque>
#include <map>

namespace thaw {

std::string_view to_string(finish_reason r) noexcept {
  switch (r) {
  case finish_reason::none: return "none";
  case finish_reason::length: return "length";
  case finish_reason::stop: return "stop";
  case finish_reason::error: return "error";
  }
  return "unknown";
}

namespace {

struct sequence {
  sequence_id id = 0;
  generation_request request;
  std::vector<std::int32_t> tokens; ///< prompt + generated
  std::int32_t computed = 0;        ///< positions whose KV is in `blocks`
  std::vector<std::int32_t> blocks; ///< one reference held on each
  std::int32_t inserted_blocks = 0; ///< full blocks already offered to the radix cache
  rng_state rng;
  std::optional<detokenizer> detok;
  std::optional<stop_matcher> stops;
  std::int32_t cached_tokens = 0; ///< prefix-cache hit at first admission
  bool reported_cached = false;
  bool running = false;
  bool held = false; ///< a migration target: computes all tokens but the last, samples nothing

  [[nodiscard]] std::int32_t prompt_len() const noexcept {
    return static_cast<std::int32_t>(request.prompt.size());
  }
  [[nodiscard]] std::int32_t generated() const noexcept {
    return static_cast<std::int32_t>(tokens.size()) - prompt_len();
  }
  /// Tokens to run before the next sample (a held sequence keeps its last one back, so its
  /// release always has a token whose logits it samples).
  [[nodiscard]] std::int32_t pending() const noexcept {
    return static_cast<std::int32_t>(tokens.size()) - computed - (held ? 1 : 0);
  }
};

struct scheduled {
  sequence* seq;
  std::int32_t n; ///< tokens run this step
};

} // namespace

struct engine::impl {
  model_runner* runner;
  const tokenizer* tok;
  engine_options opt;
  kv_blocks blocks;
  radix_cache cache;
  std::int32_t context = 0;
  std::vector<std::int32_t> eos;
  std::map<sequence_id, std::unique_ptr<sequence>> all; // id order is arrival order
  std::deque<sequence*> waiting;
  std::vector<sequence*> running; ///< arrival order: the youngest is last
  sequence_id next_id = 1;
  engine_stats counters;
  std::vector<float> logits;

  impl(model_runner& r, const tokenizer* t, engine_options o)
      : runner(&r), tok(t), opt(o), blocks(r.num_kv_blocks()), cache(blocks) {
    const auto& cfg = r.config();
    std::int64_t limit = opt.max_context > 0 ? opt.max_context
                                             : static_cast<std::int64_t>(cfg.max_position_embeddings);
    if (limit <= 0)
      limit = std::int64_t{1} << 30;
    limit = std::min<std::int64_t>(limit, std::int64_t{r.num_kv_blocks()} * kv_block_tokens);
    context = static_cast<std::int32_t>(limit);
    if (tok)
      eos = tok->eos_ids();
    else
      for (auto e : cfg.eos_token_ids)
        eos.push_back(static_cast<std::int32_t>(e));
  }

  /// Checks a request (and, for an imported sequence, the tokens it already generated) before
  /// anything is queued.
  [[nodiscard]] status check(const generation_request& r,
                             std::span<const std::int32_t> generated) const {
    const auto vocab = static_cast<std::int64_t>(runner->config().vocab_size);
    auto bad = [](std::string what) { return make_error(errc::invalid_argument, std::move(what)); };
    auto ids_in_vocabulary = [&](std::span<const std::int32_t> ids, std::string_view field) -> status {
      for (std::size_t i = 0; i < ids.size(); ++i)
        if (ids[i] < 0 || ids[i] >= vocab)
          return bad(std::string{field} + ": token " + std::to_string(i) + " is id " +
                     std::to_string(ids[i]) + ", outside the vocabulary of " + std::to_string(vocab));
      return {};
    };
    if (r.prompt.empty())
      return bad("prompt: empty (at least one token is needed)");
    if (r.prompt.size() + generated.size() >= static_cast<std::size_t>(context))
      return bad("prompt: " + std::to_string(r.prompt.size() + generated.size()) +
                 " tokens leave no room in the context of " + std::to_string(context));
    THAW_TRY(ids_in_vocabulary(r.prompt, "prompt"));
    THAW_TRY(ids_in_vocabulary(generated, "generated"));
    THAW_TRY(r.sampling.validate());
    if (r.max_tokens < 1)
      return bad("max_tokens: " + std::to_string(r.max_tokens) + " (must be at least 1)");
    THAW_TRY(stop_matcher::validate(r.stop));
    if (!tok && std::any_of(r.stop.begin(), r.stop.end(), [](auto& s) { return !s.empty(); }))
      return bad("stop: stop strings need a tokenizer, and this engine has none");
    return ids_in_vocabulary(r.stop_token_ids, "stop_token_ids");
  }

  /// The queued or running sequence `id`.
  [[nodiscard]] expected<sequence*> find(sequence_id id) const {
    auto it = all.find(id);
    if (it == all.end())
      return make_error(errc::not_found,
                        "sequence " + std::to_string(id) + ": not queued or running");
    return it->second.get();
  }

  sequence& enqueue(generation_request r) {
    auto s = std::make_unique<sequence>();
    s->id = next_id++;
    s->tokens = r.prompt;
    s->rng = rng_state{r.sampling.seed, 0};
    if (tok) {
      s->detok.emplace(*tok);
      s->stops.emplace(r.stop);
    }
    s->request = std::move(r);
    auto* raw = s.get();
    all.emplace(raw->id, std::move(s));
    waiting.push_back(raw);
    return *raw;
  }

  void release_blocks(sequence& s) {
    for (auto b : s.blocks)
      (void)blocks.release(b); // held by s: cannot fail
    s.blocks.clear();
    s.computed = 0;
    s.inserted_blocks = 0;
  }

  /// Frees the blocks of `s` and takes it out of its queue.
  void detach(sequence& s) {
    release_blocks(s);
    if (s.running)
      running.erase(std::find(running.begin(), running.end(), &s));
    else
      waiting.erase(std::find(waiting.begin(), waiting.end(), &s));
    s.running = false;
  }

  void remove(sequence& s) {
    detach(s);
    all.erase(s.id);
  }

  /// Blocks for `s` to hold `positions` positions, evicting cached prefixes first when short;
  /// false (nothing taken) when even that does not free enough.
  bool grow(sequence& s, std::int32_t positions) {
    const std::int32_t need = kv_blocks_for(positions) - static_cast<std::int32_t>(s.blocks.size());
    if (need <= 0)
      return true;
    if (blocks.free_count() < need)
      cache.evict(need - blocks.free_count());
    auto got = blocks.allocate(need);
    if (!got)
      return false;
    s.blocks.insert(s.blocks.end(), got->begin(), got->end());
    return true;
  }

  void preempt(sequence& s) {
    detach(s);
    // Back to the front of the queue, ahead of newer arrivals; older preempted sequences stay
    // ahead of younger ones because the youngest is preempted first.
    waiting.push_front(&s);
    ++counters.preemptions;
  }

  /// Takes the longest cached prefix for a sequence that holds no blocks; at least one token is
  /// left to run, since its logits are needed.
  void take_prefix(sequence& s) {
    if (!opt.prefix_cache)
      return;
    auto m = cache.lookup(std::span(s.tokens).first(s.tokens.size() - 1));
    s.blocks = std::move(m.blocks);
    s.computed = m.tokens;
    s.inserted_blocks = static_cast<std::int32_t>(s.blocks.size());
    counters.prefix_hit_tokens += static_cast<std::uint64_t>(m.tokens);
    if (!s.reported_cached)
      s.cached_tokens = std::min(m.tokens, s.prompt_len());
  }

  std::vector<scheduled> schedule() {
    std::vector<scheduled> plan;
    std::int32_t budget = opt.max_batch_tokens;
    // Running sequences, oldest first: each gets its decode token (or its next prefill chunk).
    for (std::size_t i = 0; i < running.size() && budget > 0; ++i) {
      sequence& s = *running[i];
      const std::int32_t n = std::min(s.pending(), budget);
      if (n == 0)
        continue; // a held sequence that has caught up
      bool placed = true;
      while (!grow(s, s.computed + n)) {
        sequence& youngest = *running.back();
        preempt(youngest);
        if (&youngest == &s) {
          placed = false;
          break;
        }
      }
      if (!placed)
        break; // s was the youngest: everything after it is gone too
      plan.push_back({&s, n});
      budget -= n;
    }
    // Then waiting sequences in order, while budget, slots and blocks last.
    while (budget > 0 && !waiting.empty() &&
           static_cast<std::int32_t>(running.size()) < opt.max_running) {
      sequence& s = *waiting.front();
      if (s.blocks.empty())
        take_prefix(s);
      const std::int32_t n = std::min(s.pending(), budget);
      if (!grow(s, s.computed + n)) {
        release_blocks(s); // give the prefix back; it is looked up again next time
        break;
      }
      waiting.pop_front();
      s.running = true;
      running.push_back(&s);
      if (n > 0)
        plan.push_back({&s, n});
      budget -= n;
    }
    return plan;
  }

  /// Offers the sequence's newly completed blocks to the radix cache.
  void share_prefix(sequence& s) {
    if (!opt.prefix_cache)
      return;
    const std::int32_t full =
        std::min(s.computed / kv_block_tokens, static_cast<std::int32_t>(s.blocks.size()));
    if (full <= s.inserted_blocks)
      return;
    const auto tokens = std::span(s.tokens).first(static_cast<std::size_t>(full) * kv_block_tokens);
    if (cache.insert(tokens, std::span(s.blocks).first(static_cast<std::size_t>(full))))
      s.inserted_blocks = full;
  }

  /// Appends `picked`, the next token of `s` sampled from its logits, and fills `ev`; true when
  /// `s` ended.
  bool advance(sequence& s, expected<sample_result> picked, sequence_event& ev) {
    if (!picked) {
      ev.finish = finish_reason::error;
      ev.failure = std::move(picked).err();
      return true;
    }
    const std::int32_t token = picked->token;
    s.tokens.push_back(token);
    ev.token = token;
    ev.logprob = picked->logprob;
    ev.top = std::move(picked->top);
    ev.index = s.generated() - 1;

    // Feeds decoded text through the stop matcher into the event; true when a stop matched.
    auto feed = [&](std::string_view text) {
      auto r = s.stops->push(text);
      ev.text += r.text;
      if (r.stopped) {
        ev.finish = finish_reason::stop;
        ev.stop_reason = std::move(r.matched);
      }
      return r.stopped;
    };
    const bool stop_id =
        std::find(s.request.stop_token_ids.begin(), s.request.stop_token_ids.end(), token) !=
            s.request.stop_token_ids.end() ||
        (!s.request.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end());
    if (stop_id) {
      ev.finish = finish_reason::stop;
    } else if (s.detok) {
      // push cannot fail: the sampled id is inside the vocabulary.
      if (auto piece = s.detok->push(token); piece && feed(*piece))
        return true;
    }
    if (ev.finish == finish_reason::none &&
        (s.generated() >= s.request.max_tokens ||
         static_cast<std::int32_t>(s.tokens.size()) >= context))
      ev.finish = finish_reason::length;
    if (ev.finish != finish_reason::none && s.detok && !s.stops->stopped() &&
        !feed(s.detok->flush()))
      ev.text += s.stops->flush();
    return ev.finish != finish_reason::none;
  }

  std::vector<sequence_event> step() {
    std::vector<sequence_event> events;
    auto plan = schedule();
    if (plan.empty())
      return events;
    ++counters.steps;

    std::vector<forward_item> batch;
    batch.reserve(plan.size());
    std::size_t rows = 0;
    for (auto& p : plan) {
      forward_item item;
      item.tokens = std::span(p.seq->tokens).subspan(static_cast<std::size_t>(p.seq->computed),
                                                     static_cast<std::size_t>(p.n));
      item.start_pos = p.seq->computed;
      item.block_table = p.seq->blocks;
      item.want_logits = p.seq->computed + p.n == static_cast<std::int32_t>(p.seq->tokens.size());
      rows += item.want_logits ? 1 : 0;
      batch.push_back(item);
    }
    // Where the runner can sample where its logits are (a GPU), only tokens come back; top
    // alternatives (logprobs > 0) need the whole rows here.
    bool on_device = runner->samples_on_device();
    std::vector<sampling_params> params;
    std::vector<rng_state> rngs;
    if (on_device)
      for (std::size_t i = 0; i < plan.size() && on_device; ++i)
        if (batch[i].want_logits) {
          on_device = plan[i].seq->request.sampling.logprobs <= 0;
          params.push_back(plan[i].seq->request.sampling);
          rngs.push_back(plan[i].seq->rng);
        }
    const std::size_t vocab = runner->config().vocab_size;
    std::vector<expected<sample_result>> picked;
    status ran;
    if (on_device) {
      picked.assign(rows, make_error(errc::internal, "not sampled"));
      ran = runner->forward_sampled(batch, params, rngs, picked);
    } else {
      logits.resize(rows * vocab);
      ran = runner->forward(batch, logits);
    }
    if (!ran) {
      for (auto& p : plan) {
        sequence_event ev;
        ev.id = p.seq->id;
        ev.finish = finish_reason::error;
        ev.failure = ran.err();
        events.push_back(std::move(ev));
        remove(*p.seq);
      }
      return events;
    }

    std::size_t row = 0;
    std::vector<sequence*> finished;
    for (std::size_t i = 0; i < plan.size(); ++i) {
      sequence& s = *plan[i].seq;
      const bool decode = plan[i].n == 1 && s.computed + 1 == static_cast<std::int32_t>(s.tokens.size()) &&
                          s.generated() > 0;
      (decode ? counters.decoded_tokens : counters.prefilled_tokens) +=
          static_cast<std::uint64_t>(plan[i].n);
      s.computed += plan[i].n;
      share_prefix(s);
      if (!batch[i].want_logits)
        continue;
      sequence_event ev;
      ev.id = s.id;
      if (!s.reported_cached) {
        ev.cached_tokens = s.cached_tokens;
        s.reported_cached = true;
      }
      expected<sample_result> next = make_error(errc::internal, "not sampled");
      if (on_device) {
        next = std::move(picked[row]);
        if (next && s.request.sampling.temperature > 0.0f)
          ++s.rng.counter; // the one draw the device made from this stream
      } else {
        next = sample(std::span<const float>(logits).subspan(row * vocab, vocab),
                      s.request.sampling, s.rng);
      }
      if (advance(s, std::move(next), ev))
        finished.push_back(&s);
      ev.rng = s.rng;
      if (s.stops)
        ev.stop_pending = s.stops->pending();
      ++row;
      events.push_back(std::move(ev));
    }
    for (auto* s : finished)
      remove(*s);
    return events;
  }
};

engine::engine(model_runner& runner, const tokenizer* tok, engine_options options)
    : impl_(std::make_unique<impl>(runner, tok, options)) {}

engine::~engine() = default;

expected<sequence_id> engine::add(generation_request request) {
  THAW_TRY(impl_->check(request, {}));
  return impl_->enqueue(std::move(request)).id;
}

status engine::cancel(sequence_id id) {
  THAW_ASSIGN(sequence * s, impl_->find(id));
  impl_->remove(*s);
  return {};
}

std::vector<sequence_event> engine::step() { return impl_->step(); }

bool engine::has_work() const noexcept {
  if (!impl_->waiting.empty())
    return true;
  return std::any_of(impl_->running.begin(), impl_->running.end(),
                     [](const sequence* s) { return s->pending() > 0; });
}

expected<sequence_state> engine::export_state(sequence_id id) const {
  THAW_ASSIGN(const sequence* found, impl_->find(id));
  const sequence& s = *found;
  sequence_state st;
  st.request = s.request;
  st.generated.assign(s.tokens.begin() + s.prompt_len(), s.tokens.end());
  st.rng = s.rng;
  if (s.stops) {
    st.stop_pending = s.stops->pending();
    st.stop_stopped = s.stops->stopped();
  }
  return st;
}

expected<sequence_id> engine::import_state(sequence_state state, import_mode mode) {
  THAW_TRY(impl_->check(state.request, state.generated));
  if (static_cast<std::int64_t>(state.generated.size()) >= state.request.max_tokens)
    return make_error(errc::invalid_argument,
                      "generated: " + std::to_string(state.generated.size()) +
                          " tokens already reach max_tokens " +
                          std::to_string(state.request.max_tokens) + "; nothing left to run");
  if (state.stop_stopped)
    return make_error(errc::invalid_argument, "stop_stopped: the sequence already stopped");
  sequence& s = impl_->enqueue(std::move(state.request));
  s.tokens.insert(s.tokens.end(), state.generated.begin(), state.generated.end());
  s.rng = state.rng;
  s.reported_cached = true; // the source reported the prompt's cache hit
  if (s.detok) {
    // The detokenizer's state is a function of the ids; the text it gives back was already
    // emitted by the source (or is held in the stop matcher's pending text).
    for (auto id : state.generated)
      (void)s.detok->push(id);
    s.stops->restore(std::move(state.stop_pending), false);
  }
  s.held = mode == import_mode::hold;
  return s.id;
}

status engine::update_held(sequence_id id, const sequence_state& newer, bool release) {
  THAW_ASSIGN(sequence * found, impl_->find(id));
  sequence& s = *found;
  if (!s.held)
    return make_error(errc::invalid_argument,
                      "sequence " + std::to_string(id) + ": not held (already released?)");
  auto bad = [&](const std::string& what) {
    return make_error(errc::invalid_argument,
                      "sequence " + std::to_string(id) + ": " + what +
                          " is not a continuation of the held sequence");
  };
  if (newer.request.prompt != s.request.prompt)
    return bad("the prompt");
  const auto have = static_cast<std::size_t>(s.generated());
  if (newer.generated.size() < have ||
      !std::equal(newer.generated.begin(), newer.generated.begin() + static_cast<std::ptrdiff_t>(have),
                  s.tokens.begin() + s.prompt_len()))
    return bad("the generated tokens");
  if (release && newer.stop_stopped)
    return make_error(errc::invalid_argument, "stop_stopped: the sequence already stopped");
  const auto added = std::span(newer.generated).subspan(have);
  THAW_TRY(impl_->check(newer.request, newer.generated));
  if (static_cast<std::int64_t>(newer.generated.size()) >= newer.request.max_tokens)
    return make_error(errc::invalid_argument,
                      "generated: " + std::to_string(newer.generated.size()) +
                          " tokens already reach max_tokens; nothing left to run");
  s.tokens.insert(s.tokens.end(), added.begin(), added.end());
  if (s.detok)
    for (auto t : added)
      (void)s.detok->push(t);
  if (release) {
    s.rng = newer.rng;
    if (s.stops)
      s.stops->restore(newer.stop_pending, false);
    s.held = false;
  }
  return {};
}

expected<bool> engine::held_caught_up(sequence_id id) const {
  THAW_ASSIGN(const sequence* s, impl_->find(id));
  if (!s->held)
    return make_error(errc::invalid_argument,
                      "sequence " + std::to_string(id) + ": not held");
  return s->running && s->pending() == 0;
}

engine_stats engine::stats() const noexcept {
  engine_stats st = impl_->counters;
  st.running = static_cast<std::int32_t>(impl_->running.size());
  st.waiting = static_cast<std::int32_t>(impl_->waiting.size());
  st.kv_blocks_free = impl_->blocks.free_count();
  st.kv_blocks_total = impl_->blocks.capacity();
  st.cached_blocks = impl_->cache.cached_blocks();
  st.evictable_blocks = impl_->cache.evictable_blocks();
  return st;
}

std::int32_t engine::max_context() const noexcept { return impl_->context; }

} // namespace thaw
