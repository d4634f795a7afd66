// The step loop over the real host runner (tiny model): greedy output against the scalar
// reference, seeded determinism under batching, chunked prefill, prefix reuse, preemption and
// recompute, cancellation, export/import, finish conditions and bad input.
#include "runtime/engine/engine.hpp"

#include "runtime/engine/host_model_runner.hpp"
#include "runtime/engine/tokenizer.hpp"
#include "tests/support/reference_model.hpp"
#include "tests/support/test_models.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

namespace thaw {
namespace {

using testing::temp_dir;

/// The tiny checkpoint, made once for the suite.
class EngineTest : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    dir_ = new temp_dir();
    testing::make_hf(dir_->path() / "hf", "tiny", dtype::f32);
    testing::import(dir_->path() / "hf", dir_->path() / "ck");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  /// A fresh runner with `blocks` KV blocks (each engine needs its own KV memory).
  static loaded_model load(std::int32_t blocks = 64) {
    auto m = load_host_model(dir_->path() / "ck", {blocks, 1});
    EXPECT_TRUE(m) << m.err().to_string();
    return std::move(*m);
  }

  static std::vector<std::int32_t> prompt(std::size_t n, std::int32_t seed) {
    std::vector<std::int32_t> t(n);
    for (std::size_t i = 0; i < n; ++i)
      t[i] = static_cast<std::int32_t>(3 + (i * 131 + static_cast<std::size_t>(seed) * 977) % 31000);
    return t;
  }

  static generation_request request(std::vector<std::int32_t> p, std::int32_t max_tokens,
                                    float temperature = 0.0f, std::uint64_t seed = 0) {
    generation_request r;
    r.prompt = std::move(p);
    r.max_tokens = max_tokens;
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    r.ignore_eos = true; // random weights: EOS would end runs at random
    return r;
  }

  /// Steps until idle; the tokens and last event of every sequence.
  struct outcome {
    std::map<sequence_id, std::vector<std::int32_t>> tokens;
    std::map<sequence_id, sequence_event> first, last;
  };
  static outcome drain(engine& e, outcome o = {}) {
    for (int guard = 0; e.has_work() && guard < 100000; ++guard)
      for (auto& ev : e.step()) {
        if (ev.token >= 0)
          o.tokens[ev.id].push_back(ev.token);
        o.first.emplace(ev.id, ev);
        o.last[ev.id] = ev;
      }
    EXPECT_FALSE(e.has_work());
    return o;
  }

  /// One request alone in a fresh engine.
  static std::vector<std::int32_t> alone(const generation_request& r, engine_options opt = {}) {
    auto m = load();
    engine e(*m.runner, nullptr, opt);
    auto id = e.add(r);
    EXPECT_TRUE(id);
    return drain(e).tokens[*id];
  }

  static temp_dir* dir_;
};

temp_dir* EngineTest::dir_ = nullptr;

TEST_F(EngineTest, GreedyOutputIsTheReferenceModelsArgmax) {
  auto m = load();
  engine e(*m.runner, nullptr);
  auto p = prompt(20, 1);
  auto id = e.add(request(p, 12));
  ASSERT_TRUE(id);
  auto out = drain(e);
  ASSERT_EQ(out.tokens[*id].size(), 12u);
  EXPECT_EQ(out.last[*id].finish, finish_reason::length);

  // The reference recomputes the whole sequence for every token.
  const auto V = static_cast<std::size_t>(m.runner->config().vocab_size);
  auto seq = p;
  for (std::size_t i = 0; i < 12; ++i) {
    auto logits = testing::reference_logits(*m.ckpt, static_cast<const std::byte*>(m.weights->data()), seq);
    auto last = std::span(logits).subspan((seq.size() - 1) * V, V);
    auto best = static_cast<std::int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
    EXPECT_EQ(out.tokens[*id][i], best) << "token " << i;
    seq.push_back(out.tokens[*id][i]);
  }
}

TEST_F(EngineTest, SeededSequenceIsTheSameWhateverIsBatchedWithIt) {
  auto r = request(prompt(25, 2), 30, 0.9f, 1234);
  auto expect = alone(r);
  ASSERT_EQ(expect.size(), 30u);

  auto m = load();
  engine_options opt;
  opt.max_batch_tokens = 24; // chunked prefill, and prefill sharing steps with decodes
  engine e(*m.runner, nullptr, opt);
  std::vector<sequence_id> others;
  for (int i = 0; i < 3; ++i)
    others.push_back(*e.add(request(prompt(10 + 7 * static_cast<std::size_t>(i), 10 + i), 20, 1.0f,
                                    static_cast<std::uint64_t>(i))));
  outcome o;
  for (int i = 0; i < 3; ++i) // the sequence arrives while others are running
    for (auto& ev : e.step())
      o.tokens[ev.id].push_back(ev.token);
  auto id = e.add(r);
  ASSERT_TRUE(id);
  others.push_back(*e.add(request(prompt(40, 99), 25, 0.7f, 5)));
  o = drain(e, std::move(o));
  EXPECT_EQ(o.tokens[*id], expect);
  // A different seed gives a different stream.
  r.sampling.seed = 1235;
  EXPECT_NE(alone(r), expect);
}

/// The host runner as a runner that samples where its logits are, as the CUDA runner does:
/// forward_sampled runs the forward and picks each row's token with thaw::sample on a copy of
/// the stream it is given. It checks the engine's side of the contract (parameters and streams
/// in batch order, the caller's stream advanced by the draw, logprobs > 0 left to forward()).
class sampling_runner final : public model_runner {
public:
  explicit sampling_runner(model_runner& inner) : inner_(inner) {}
  const model_config& config() const noexcept override { return inner_.config(); }
  std::int32_t num_kv_blocks() const noexcept override { return inner_.num_kv_blocks(); }
  status forward(std::span<const forward_item> batch, std::span<float> logits) override {
    ++plain_calls;
    return inner_.forward(batch, logits);
  }
  bool samples_on_device() const noexcept override { return true; }
  status forward_sampled(std::span<const forward_item> batch,
                         std::span<const sampling_params> params, std::span<const rng_state> rngs,
                         std::span<expected<sample_result>> out) override {
    ++sampled_calls;
    const auto V = static_cast<std::size_t>(config().vocab_size);
    std::vector<float> logits(params.size() * V);
    THAW_TRY(inner_.forward(batch, logits));
    for (std::size_t i = 0; i < params.size(); ++i) {
      EXPECT_LE(params[i].logprobs, 0);
      rng_state rng = rngs[i];
      out[i] = sample(std::span<const float>(logits).subspan(i * V, V), params[i], rng);
    }
    return {};
  }
  int plain_calls = 0;
  int sampled_calls = 0;

private:
  model_runner& inner_;
};

TEST_F(EngineTest, ARunnerThatSamplesOnItsDeviceGivesTheSameTokensAndStreams) {
  std::vector<generation_request> reqs{request(prompt(20, 5), 15),
                                       request(prompt(30, 6), 15, 0.8f, 77),
                                       request(prompt(12, 7), 15, 1.2f, 78)};
  reqs[1].sampling.top_p = 0.9f;
  reqs[2].sampling.top_k = 40;
  reqs[2].sampling.logprobs = 0;
  auto run = [&](model_runner& r) {
    engine e(r, nullptr, {.max_batch_tokens = 24});
    std::vector<sequence_id> ids;
    for (const auto& q : reqs)
      ids.push_back(*e.add(q));
    auto o = drain(e);
    std::vector<std::pair<std::vector<std::int32_t>, rng_state>> got;
    for (auto id : ids)
      got.emplace_back(o.tokens[id], o.last[id].rng);
    return got;
  };
  auto host = load();
  auto device = load();
  sampling_runner sampler(*device.runner);
  const auto expect = run(*host.runner);
  EXPECT_EQ(run(sampler), expect);
  EXPECT_GT(sampler.sampled_calls, 0);
  EXPECT_EQ(sampler.plain_calls, 0);
  EXPECT_GT(expect[1].second.counter, 0u) << "the seeded streams advanced";

  // Top alternatives need the whole rows: such a request goes through forward().
  reqs = {request(prompt(20, 5), 4, 0.8f, 9)};
  reqs[0].sampling.logprobs = 2;
  auto again = load();
  sampling_runner with_top(*again.runner);
  EXPECT_EQ(run(with_top), run(*load().runner));
  EXPECT_GT(with_top.plain_calls, 0);
  EXPECT_EQ(with_top.sampled_calls, 0);
}

TEST_F(EngineTest, ChunkedPrefillGivesTheSameTokensAsOneChunk) {
  auto r = request(prompt(70, 3), 10);
  engine_options small;
  small.max_batch_tokens = 7;
  EXPECT_EQ(alone(r, small), alone(r));
}

TEST_F(EngineTest, FinishedSequenceLeavesItsPrefixForTheNext) {
  auto m = load();
  engine e(*m.runner, nullptr);
  auto first = request(prompt(40, 4), 5);
  auto a = *e.add(first);
  auto out = drain(e);
  EXPECT_EQ(out.first[a].cached_tokens, 0);
  EXPECT_GE(e.stats().cached_blocks, 2); // 40 prompt + 4 computed generated tokens: 2 full blocks

  auto second = first;
  second.prompt.resize(37);
  second.prompt.push_back(5);
  second.prompt.push_back(6);
  auto b = *e.add(second);
  out = drain(e);
  EXPECT_EQ(out.first[b].cached_tokens, 32); // two whole blocks of the shared 37 tokens
  EXPECT_EQ(e.stats().prefix_hit_tokens, 32u);
  engine_options no_cache;
  no_cache.prefix_cache = false;
  EXPECT_EQ(out.tokens[b], alone(second, no_cache)); // reused KV computes the same tokens
}

TEST_F(EngineTest, PreemptedSequencesAreRecomputedAndProduceTheSameTokens) {
  // 12 blocks (192 positions) for four sequences that need 5 blocks each at the end.
  std::vector<generation_request> reqs;
  for (int i = 0; i < 4; ++i)
    reqs.push_back(request(prompt(30, 20 + i), 45, 0.8f, static_cast<std::uint64_t>(100 + i)));
  std::vector<std::vector<std::int32_t>> expect;
  for (auto& r : reqs)
    expect.push_back(alone(r));

  auto m = load(12);
  engine_options opt;
  opt.prefix_cache = false; // recompute from scratch, the hardest case
  engine e(*m.runner, nullptr, opt);
  std::vector<sequence_id> ids;
  for (auto& r : reqs)
    ids.push_back(*e.add(r));
  auto out = drain(e);
  EXPECT_GT(e.stats().preemptions, 0u);
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(out.tokens[ids[i]], expect[i]) << "sequence " << i;
    EXPECT_EQ(out.last[ids[i]].finish, finish_reason::length);
  }
  EXPECT_EQ(e.stats().kv_blocks_free, 12);
}

TEST_F(EngineTest, CancelFreesEverythingAtOnce) {
  auto m = load(32);
  engine_options opt;
  opt.prefix_cache = false;
  engine e(*m.runner, nullptr, opt);
  std::vector<sequence_id> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(*e.add(request(prompt(50, 30 + i), 100)));
  for (int i = 0; i < 4; ++i)
    (void)e.step();
  EXPECT_LT(e.stats().kv_blocks_free, 32);
  for (auto id : ids)
    ASSERT_TRUE(e.cancel(id));
  EXPECT_FALSE(e.has_work());
  EXPECT_EQ(e.stats().kv_blocks_free, 32);
  EXPECT_TRUE(e.step().empty());
  auto again = e.cancel(ids[0]);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.err().code, errc::not_found);
}

TEST_F(EngineTest, ExportedSequenceContinuesInAnotherEngineTokenForToken) {
  auto r = request(prompt(33, 5), 40, 1.0f, 77);
  r.sampling.top_k = 50;
  auto expect = alone(r);

  auto src_model = load();
  engine src(*src_model.runner, nullptr);
  auto id = *src.add(r);
  std::vector<std::int32_t> got;
  while (got.size() < 17)
    for (auto& ev : src.step())
      got.push_back(ev.token);
  auto st = src.export_state(id);
  ASSERT_TRUE(st) << st.err().to_string();
  EXPECT_EQ(st->generated, got);
  EXPECT_EQ(st->rng.counter, 17u);
  ASSERT_TRUE(src.cancel(id));

  auto dst_model = load();
  engine dst(*dst_model.runner, nullptr);
  auto moved = dst.import_state(*st);
  ASSERT_TRUE(moved) << moved.err().to_string();
  auto rest = drain(dst);
  got.insert(got.end(), rest.tokens[*moved].begin(), rest.tokens[*moved].end());
  EXPECT_EQ(got, expect);
  EXPECT_EQ(rest.last[*moved].finish, finish_reason::length);
}

// Live migration's engine side: the target holds an early export (prefilling it while the
// source decodes on), catches up with a later one, and is released with the final one; the
// continuation is token for token the unmigrated run, and the events' resume state (index,
// RNG) is what export_state gives.
TEST_F(EngineTest, HeldImportCatchesUpAndContinuesTokenForToken) {
  auto r = request(prompt(40, 9), 48, 1.0f, 5);
  r.sampling.top_p = 0.9f;
  auto expect = alone(r);

  auto src_model = load();
  engine src(*src_model.runner, nullptr);
  auto id = *src.add(r);
  std::vector<std::int32_t> got;
  auto step_src = [&](std::size_t until) {
    while (got.size() < until)
      for (auto& ev : src.step()) {
        EXPECT_EQ(ev.index, static_cast<std::int32_t>(got.size()));
        got.push_back(ev.token);
        EXPECT_EQ(ev.rng.counter, got.size());
      }
  };
  step_src(5);
  auto first = src.export_state(id);
  ASSERT_TRUE(first);

  auto dst_model = load();
  engine dst(*dst_model.runner, nullptr);
  auto held = dst.import_state(*first, import_mode::hold);
  ASSERT_TRUE(held) << held.err().to_string();
  EXPECT_FALSE(*dst.held_caught_up(*held));
  for (int guard = 0; dst.has_work() && guard < 100; ++guard)
    EXPECT_TRUE(dst.step().empty()) << "a held sequence samples nothing";
  EXPECT_FALSE(dst.has_work()) << "a caught-up held sequence needs no steps";
  EXPECT_TRUE(*dst.held_caught_up(*held));
  EXPECT_EQ(dst.stats().prefilled_tokens, 40u + 5u - 1u);

  step_src(12); // the source went on meanwhile: the next round sends the new tokens
  auto second = src.export_state(id);
  ASSERT_TRUE(dst.update_held(*held, *second, false));
  EXPECT_FALSE(*dst.held_caught_up(*held));
  while (dst.has_work())
    EXPECT_TRUE(dst.step().empty());

  step_src(14); // the handoff: the source pauses, the target is released with the final state
  auto last = src.export_state(id);
  ASSERT_TRUE(src.cancel(id));
  ASSERT_TRUE(dst.update_held(*held, *last, true));
  auto rest = drain(dst);
  ASSERT_FALSE(rest.tokens[*held].empty());
  EXPECT_EQ(rest.first[*held].index, 14);
  got.insert(got.end(), rest.tokens[*held].begin(), rest.tokens[*held].end());
  EXPECT_EQ(got, expect);
  // Every position of the final state was computed once: nothing was recomputed.
  EXPECT_EQ(dst.stats().prefilled_tokens, 40u + 14u);
}

TEST_F(EngineTest, HeldSequenceRefusesWhatIsNotItsContinuation) {
  auto r = request(prompt(20, 3), 30, 0.0f);
  auto src_model = load();
  engine src(*src_model.runner, nullptr);
  auto id = *src.add(r);
  std::size_t n = 0;
  while (n < 4)
    n += src.step().size();
  auto st = *src.export_state(id);
  auto dst_model = load();
  engine dst(*dst_model.runner, nullptr);
  auto held = *dst.import_state(st, import_mode::hold);

  auto other = st;
  other.generated[1] ^= 1; // a different history
  auto refused = dst.update_held(held, other, true);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.err().code, errc::invalid_argument);
  EXPECT_NE(refused.err().message.find("generated"), std::string::npos);
  other = st;
  other.request.prompt[0] ^= 1;
  EXPECT_FALSE(dst.update_held(held, other, false));
  auto plain = *dst.add(r);
  EXPECT_FALSE(dst.update_held(plain, st, true)) << "only a held sequence takes updates";
  EXPECT_FALSE(dst.held_caught_up(plain));
  EXPECT_EQ(dst.update_held(999, st, true).err().code, errc::not_found);
  // Refusals changed nothing: released with the real state, it finishes as the source would.
  ASSERT_TRUE(dst.update_held(held, st, true));
  auto rest = drain(dst);
  EXPECT_EQ(rest.tokens[held].size(), 30u - st.generated.size());
}

TEST_F(EngineTest, FinishesOnMaxTokensContextAndStopTokens) {
  auto m = load();
  engine_options opt;
  opt.max_context = 48;
  engine e(*m.runner, nullptr, opt);
  EXPECT_EQ(e.max_context(), 48);
  auto a = *e.add(request(prompt(40, 6), 100)); // the context ends it after 8 tokens
  auto out = drain(e);
  EXPECT_EQ(out.tokens[a].size(), 8u);
  EXPECT_EQ(out.last[a].finish, finish_reason::length);

  // Stop on the 4th token greedy produces.
  auto r = request(prompt(20, 7), 30);
  auto free_run = alone(r);
  auto stop_at = std::find(free_run.begin(), free_run.end(), free_run[3]) - free_run.begin();
  r.stop_token_ids = {free_run[3]};
  auto b = *e.add(r);
  out = drain(e);
  EXPECT_EQ(out.tokens[b].size(), static_cast<std::size_t>(stop_at + 1));
  EXPECT_EQ(out.last[b].finish, finish_reason::stop);
}

TEST_F(EngineTest, BadRequestsAreRefusedAndOthersCarryOn) {
  auto m = load();
  engine e(*m.runner, nullptr);
  auto good = request(prompt(20, 8), 10);
  auto id = *e.add(good);
  (void)e.step();
  auto refused = [&](generation_request r, const std::string& field) {
    auto got = e.add(std::move(r));
    ASSERT_FALSE(got);
    EXPECT_EQ(got.err().code, errc::invalid_argument);
    EXPECT_NE(got.err().message.find(field), std::string::npos) << got.err().message;
  };
  refused(request({}, 5), "prompt: empty");
  refused(request(prompt(256, 1), 5), "no room in the context");
  refused(request({1, 2, 32000}, 5), "outside the vocabulary");
  refused(request({1, -1}, 5), "outside the vocabulary");
  auto r = request({1, 2}, 0);
  refused(r, "max_tokens");
  r = request({1, 2}, 5);
  r.sampling.top_p = 0.0f;
  refused(r, "top_p");
  r = request({1, 2}, 5);
  r.stop = {"x"};
  refused(r, "stop strings need a tokenizer");
  r = request({1, 2}, 5);
  r.stop_token_ids = {40000};
  refused(r, "stop_token_ids");
  auto out = drain(e);
  EXPECT_EQ(out.tokens[id].size(), 9u); // plus the one sampled in the first step
  EXPECT_EQ(out.last[id].finish, finish_reason::length);

  sequence_state bad;
  bad.request = good;
  bad.generated = {5, 99999};
  auto imported = e.import_state(bad);
  ASSERT_FALSE(imported);
  EXPECT_NE(imported.err().message.find("generated"), std::string::npos);
}

/// Text through the engine: the bundled tokenizer (the tiny model shares its vocabulary).
class EngineTextTest : public EngineTest {
protected:
  static const tokenizer& tok() {
    static auto t = tokenizer::load(std::filesystem::path{THAW_SOURCE_DIR} /
                                    "assets/tokenizers/llama2/tokenizer.json");
    EXPECT_TRUE(t) << t.err().to_string();
    return *t;
  }
  /// Text and tokens of one request run to the end in `e`.
  static std::pair<std::string, sequence_event> run_text(engine& e, sequence_id id) {
    std::string text;
    sequence_event last;
    while (e.has_work())
      for (auto& ev : e.step())
        if (ev.id == id) {
          text += ev.text;
          last = ev;
        }
    return {text, last};
  }
};

TEST_F(EngineTextTest, StreamedTextIsTheDecodedTokensAndStopStringsCutIt) {
  auto m = load();
  engine e(*m.runner, &tok());
  auto r = request(tok().encode("Once upon a time").value(), 40, 0.8f, 3);
  auto id = *e.add(r);
  std::vector<std::int32_t> tokens;
  std::string text;
  while (e.has_work())
    for (auto& ev : e.step()) {
      tokens.push_back(ev.token);
      text += ev.text;
    }
  ASSERT_EQ(tokens.size(), 40u);
  EXPECT_EQ(text, tok().decode(tokens).value());
  ASSERT_GT(text.size(), 20u);

  // A stop string spanning a token boundary: the text up to it, the stop itself never.
  std::string before_last;
  {
    std::vector<std::int32_t> head(tokens.begin(), tokens.begin() + 20);
    before_last = tok().decode(head).value();
  }
  const auto stop = text.substr(before_last.size() - 2, 4);
  r.stop = {stop};
  id = *e.add(r);
  auto [cut, last] = run_text(e, id);
  EXPECT_EQ(cut, text.substr(0, text.find(stop)));
  EXPECT_EQ(last.finish, finish_reason::stop);
  EXPECT_EQ(last.stop_reason, stop);
}

TEST_F(EngineTextTest, ExportImportCarriesTheTextStateToo) {
  auto r = request(tok().encode("The quick brown fox").value(), 30, 1.0f, 11);
  r.stop = {"zzzz-never"}; // held-back text must travel with the sequence
  auto m1 = load();
  engine whole(*m1.runner, &tok());
  auto expect = run_text(whole, *whole.add(r)).first;

  for (std::size_t cut : {1u, 9u, 23u}) {
    auto src_model = load();
    engine src(*src_model.runner, &tok());
    auto id = *src.add(r);
    std::string got;
    std::size_t n = 0;
    while (n < cut)
      for (auto& ev : src.step()) {
        got += ev.text;
        ++n;
      }
    auto st = src.export_state(id);
    ASSERT_TRUE(st);
    ASSERT_TRUE(src.cancel(id));
    auto dst_model = load();
    engine dst(*dst_model.runner, &tok());
    auto moved = dst.import_state(*st);
    ASSERT_TRUE(moved) << moved.err().to_string();
    got += run_text(dst, *moved).first;
    EXPECT_EQ(got, expect) << "moved after " << cut << " tokens";
  }
}

} // namespace
} // namespace thaw
