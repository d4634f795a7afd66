// The CUDA model runner against the scalar reference (tests/support/reference_model.hpp) and the
// host runner on the same checkpoint, and its own consistency: chunked prefill, batching, CUDA
// graphs against eager steps, tensor parallelism at world size 1, validation. Every test but the
// first needs a GPU and reports SKIPPED without one.
#include "runtime/engine/cuda_model_runner.hpp"

#include "gpu/cuda/communicator.hpp"
#include "gpu/cuda/cuda_device.hpp"
#include "runtime/engine/sampler.hpp"
#include "tests/support/cuda_test.hpp"
#include "tests/support/reference_model.hpp"
#include "tests/support/runner_checks.hpp"
#include "tests/support/test_models.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <tuple>

namespace thaw {
namespace {

using testing::temp_dir;

struct model_pair {
  temp_dir dir;
  loaded_model host;
  loaded_model gpu;
  model_runner& g() { return *gpu.runner; }
  model_runner& h() { return *host.runner; }
  [[nodiscard]] std::filesystem::path ckpt() const { return dir.path() / "ck"; }
};

std::unique_ptr<model_pair> make_pair(const std::string& preset, dtype t,
                                      cuda_runner_options opt = {}) {
  auto f = std::make_unique<model_pair>();
  testing::make_hf(f->dir.path() / "hf", preset, dtype::f32);
  testing::import(f->dir.path() / "hf", f->ckpt(), t);
  auto h = load_host_model(f->ckpt(), {opt.num_kv_blocks, 2});
  EXPECT_TRUE(h) << h.err().to_string();
  auto g = load_cuda_model(f->ckpt(), opt);
  EXPECT_TRUE(g) << g.err().to_string();
  if (!h || !g)
    return nullptr;
  f->host = std::move(*h);
  f->gpu = std::move(*g);
  return f;
}

using testing::decode_all;
using testing::iota_blocks;
using testing::max_rel_diff;
using testing::prefill_chunks;
using testing::some_tokens;

// GEMM inputs are rounded to the weights' type on the GPU (the host keeps f32 activations):
// about 2^-8 relative per rounding for bf16, 2^-11 for f16, over a layer or two of the tiny
// models. f32 runs in f32 throughout, against a double-accumulating reference.
float tolerance(dtype t) {
  switch (t) {
    case dtype::f32: return 1e-3f;
    case dtype::f16: return 1e-2f;
    case dtype::bf16: return 4e-2f;
  }
  return 0;
}

TEST(cuda_model_runner, without_a_gpu_loading_fails_with_an_error_that_says_why) {
  if (cuda::device_count() > 0)
    GTEST_SKIP() << "this machine has a GPU; the test is for machines without one";
  temp_dir dir;
  testing::make_hf(dir.path() / "hf", "tiny");
  testing::import(dir.path() / "hf", dir.path() / "ck");
  auto m = load_cuda_model(dir.path() / "ck", {});
  ASSERT_FALSE(m);
  EXPECT_EQ(m.err().code, errc::device_error) << m.err().to_string();
  EXPECT_NE(m.err().message.find(cuda::unavailable_reason()), std::string::npos)
      << m.err().to_string();
}

class cuda_vs_reference : public ::testing::TestWithParam<std::tuple<std::string, dtype>> {};

TEST_P(cuda_vs_reference, every_position_matches_and_prefill_modes_agree) {
  THAW_SKIP_WITHOUT_GPU();
  const auto& [preset, type] = GetParam();
  auto f = make_pair(preset, type);
  ASSERT_TRUE(f);
  auto& r = f->g();
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  // 70 positions: past tiny-mistral's 64-token sliding window and over 5 blocks.
  const auto tokens = some_tokens(70, static_cast<std::int32_t>(V));
  const auto ref = testing::reference_logits(
      *f->host.ckpt, static_cast<const std::byte*>(f->host.weights->data()), tokens);
  const auto blocks = iota_blocks(0, 5);
  const auto dec = decode_all(r, tokens, blocks);
  for (std::size_t p = 0; p < tokens.size(); ++p)
    ASSERT_LE(max_rel_diff({dec.data() + p * V, V}, {ref.data() + p * V, V}), tolerance(type))
        << "position " << p;
  // The whole prompt in one forward (the tiled prefill kernel), and in chunks of 9 over a
  // cached prefix, give the last position's logits as decoding did.
  const std::span<const float> last{dec.data() + (tokens.size() - 1) * V, V};
  const auto one = prefill_chunks(r, tokens, iota_blocks(5, 5), tokens.size());
  EXPECT_LE(max_rel_diff(one, last), tolerance(type));
  const auto chunked = prefill_chunks(r, tokens, iota_blocks(10, 5), 9);
  EXPECT_LE(max_rel_diff(chunked, last), tolerance(type));
}

INSTANTIATE_TEST_SUITE_P(
    presets, cuda_vs_reference,
    ::testing::Combine(::testing::Values("tiny", "tiny-qwen2", "tiny-mistral"),
                       ::testing::Values(dtype::f32, dtype::bf16, dtype::f16)),
    [](const auto& info) {
      std::string n = std::get<0>(info.param) + "_" + std::string(to_string(std::get<1>(info.param)));
      std::replace(n.begin(), n.end(), '-', '_');
      return n;
    });

// Greedy generation, each runner feeding back its own choice.
std::vector<std::int32_t> greedy(model_runner& r, std::vector<std::int32_t> prompt, int steps) {
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  const auto blocks = iota_blocks(0, kv_blocks_for(static_cast<std::int64_t>(prompt.size()) + steps));
  std::vector<float> logits(V);
  std::vector<std::int32_t> out;
  forward_item it{prompt, 0, blocks, true};
  EXPECT_TRUE(r.forward({&it, 1}, logits));
  auto pos = static_cast<std::int32_t>(prompt.size());
  for (int i = 0; i < steps; ++i) {
    rng_state rng;
    auto s = sample(logits, {.temperature = 0.0f}, rng);
    EXPECT_TRUE(s);
    if (!s)
      break;
    out.push_back(s->token);
    std::int32_t tok = s->token;
    forward_item next{{&tok, 1}, pos++, blocks, true};
    auto ok = r.forward({&next, 1}, logits);
    EXPECT_TRUE(ok) << ok.err().to_string();
  }
  return out;
}

TEST(cuda_model_runner, greedy_generation_of_tiny_is_identical_to_the_host_runner) {
  THAW_SKIP_WITHOUT_GPU();
  auto f = make_pair("tiny", dtype::f32);
  ASSERT_TRUE(f);
  const auto prompt = some_tokens(12, static_cast<std::int32_t>(f->g().config().vocab_size));
  EXPECT_EQ(greedy(f->g(), prompt, 60), greedy(f->h(), prompt, 60));
}

TEST(cuda_model_runner, stories15m_bf16_matches_the_host_runner) {
  THAW_SKIP_WITHOUT_GPU();
  auto f = make_pair("stories15m", dtype::bf16);
  ASSERT_TRUE(f);
  const auto V = static_cast<std::size_t>(f->g().config().vocab_size);
  const auto tokens = some_tokens(40, static_cast<std::int32_t>(V));
  const auto blocks = iota_blocks(0, 3);
  const auto g = decode_all(f->g(), tokens, blocks);
  const auto h = decode_all(f->h(), tokens, blocks);
  // Six layers of bf16-rounded activations: a looser bound than the one-layer tiny models.
  for (std::size_t p = 0; p < tokens.size(); ++p)
    EXPECT_LE(max_rel_diff({g.data() + p * V, V}, {h.data() + p * V, V}), 0.1f) << "position " << p;
}

TEST(cuda_model_runner, batched_items_match_each_alone_and_repeat_bit_for_bit) {
  THAW_SKIP_WITHOUT_GPU();
  auto f = make_pair("tiny-qwen2", dtype::f32);
  ASSERT_TRUE(f);
  auto& r = f->g();
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  const auto a = some_tokens(30, static_cast<std::int32_t>(V), 1);
  const auto b = some_tokens(5, static_cast<std::int32_t>(V), 2);
  // Shuffled, non-contiguous block ids.
  const std::vector<std::int32_t> ba{7, 2, 11}, bb{4, 9};
  const auto alone_a = prefill_chunks(r, a, ba, a.size());
  const auto alone_b = prefill_chunks(r, b, bb, b.size());
  // a's prompt again (prefill) beside b's last token (decode over its cached prefix).
  std::vector<float> both(2 * V), again(2 * V);
  const std::int32_t b_last = b.back();
  const forward_item batch[] = {{a, 0, ba, true}, {{&b_last, 1}, 4, bb, true}};
  ASSERT_TRUE(r.forward(batch, both));
  EXPECT_LE(max_rel_diff({both.data(), V}, alone_a), 1e-4f);
  EXPECT_LE(max_rel_diff({both.data() + V, V}, alone_b), 1e-4f);
  ASSERT_TRUE(r.forward(batch, again));
  EXPECT_EQ(0, std::memcmp(both.data(), again.data(), both.size() * sizeof(float)));
}

// Decodes `steps` tokens for three sequences at once, one forward per step.
std::vector<float> decode_three(model_runner& r, int steps) {
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  const std::vector<std::vector<std::int32_t>> tables{{0, 1, 2}, {3, 4, 5}, {6, 7, 8}};
  std::vector<float> all;
  std::vector<float> logits(3 * V);
  for (int s = 0; s < steps; ++s) {
    std::int32_t tok[3] = {s % 200 + 1, s % 150 + 2, s % 100 + 3};
    const forward_item batch[] = {{{&tok[0], 1}, s, tables[0], true},
                                  {{&tok[1], 1}, s, tables[1], true},
                                  {{&tok[2], 1}, s, tables[2], true}};
    auto ok = r.forward(batch, logits);
    EXPECT_TRUE(ok) << ok.err().to_string();
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

TEST(cuda_model_runner, decode_from_cuda_graphs_is_bit_identical_to_eager_steps) {
  THAW_SKIP_WITHOUT_GPU();
  auto with = make_pair("tiny", dtype::bf16, {.num_kv_blocks = 16, .cuda_graphs = true});
  auto without = make_pair("tiny", dtype::bf16, {.num_kv_blocks = 16, .cuda_graphs = false});
  ASSERT_TRUE(with && without);
  const auto a = decode_three(with->g(), 40);
  const auto b = decode_three(without->g(), 40);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  // And both agree with the host runner.
  const auto h = decode_three(with->h(), 40);
  EXPECT_LE(max_rel_diff(a, h), tolerance(dtype::bf16));
}

TEST(cuda_model_runner, tensor_parallel_group_of_one_gives_the_same_logits) {
  THAW_SKIP_WITHOUT_GPU();
  auto group = cuda::communicator::create_group({0});
  if (!group && group.err().code == errc::unsupported)
    GTEST_SKIP() << group.err().to_string(); // built without NCCL
  ASSERT_TRUE(group) << group.err().to_string();
  ASSERT_EQ((*group)[0]->world_size(), 1);
  auto plain = make_pair("tiny-qwen2", dtype::bf16);
  auto tp = make_pair("tiny-qwen2", dtype::bf16, {.comm = (*group)[0].get()});
  ASSERT_TRUE(plain && tp);
  const auto a = decode_three(plain->g(), 20);
  const auto b = decode_three(tp->g(), 20);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

TEST(cuda_model_runner, sampling_on_the_gpu_picks_the_host_samplers_tokens) {
  THAW_SKIP_WITHOUT_GPU();
  auto f = make_pair("tiny-qwen2", dtype::f32);
  ASSERT_TRUE(f);
  auto& r = f->g();
  ASSERT_TRUE(r.samples_on_device());
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  const std::vector<sampling_params> params{
      {.temperature = 0.0f, .logprobs = 0},
      {.temperature = 0.8f, .top_p = 0.9f, .seed = 11},
      {.temperature = 1.1f, .top_k = 20, .seed = 12, .logprobs = 0},
      {.temperature = 0.7f, .min_p = 0.05f, .seed = 13}};
  const std::vector<std::vector<std::int32_t>> tables{{0, 1}, {2, 3}, {4, 5}, {6, 7}};
  int mismatches = 0;
  for (int step = 0; step < 25; ++step) {
    // The same forward twice, once with logits back (sampled here), once sampled on the GPU;
    // the second rewrites the KV the first wrote, with the same values.
    std::int32_t tok[4] = {step + 1, step + 40, step + 90, step + 150};
    std::vector<forward_item> batch;
    for (std::size_t i = 0; i < 4; ++i)
      batch.push_back({{&tok[i], 1}, step, tables[i], true});
    std::vector<float> logits(4 * V);
    ASSERT_TRUE(r.forward(batch, logits));
    std::vector<rng_state> rngs;
    for (const auto& p : params)
      rngs.push_back({p.seed, static_cast<std::uint64_t>(step)});
    std::vector<expected<sample_result>> got(4, make_error(errc::internal, "unset"));
    auto ok = r.forward_sampled(batch, params, rngs, got);
    ASSERT_TRUE(ok) << ok.err().to_string();
    for (std::size_t i = 0; i < 4; ++i) {
      rng_state rng = rngs[i];
      auto want = sample({logits.data() + i * V, V}, params[i], rng);
      ASSERT_TRUE(want && got[i]) << i;
      mismatches += got[i]->token != want->token ? 1 : 0;
      if (params[i].logprobs == 0 && got[i]->token == want->token) {
        EXPECT_NEAR(got[i]->logprob, want->logprob, 1e-4f);
      }
    }
  }
  // A draw may differ only where the uniform lands within rounding of a boundary.
  EXPECT_LE(mismatches, 1);
  // A bad parameter is that item's error; the others are sampled.
  auto bad = params;
  bad[1].top_p = 0.0f;
  std::int32_t tok[4] = {1, 2, 3, 4};
  std::vector<forward_item> batch;
  for (std::size_t i = 0; i < 4; ++i)
    batch.push_back({{&tok[i], 1}, 0, tables[i], true});
  std::vector<rng_state> rngs(4);
  std::vector<expected<sample_result>> got(4, make_error(errc::internal, "unset"));
  ASSERT_TRUE(r.forward_sampled(batch, bad, rngs, got));
  ASSERT_FALSE(got[1]);
  EXPECT_NE(got[1].err().message.find("top_p"), std::string::npos);
  EXPECT_TRUE(got[0] && got[2] && got[3]);
}

TEST(cuda_model_runner, invalid_batches_are_rejected_and_the_runner_carries_on) {
  THAW_SKIP_WITHOUT_GPU();
  auto f = make_pair("tiny", dtype::f32, {.num_kv_blocks = 4});
  ASSERT_TRUE(f);
  auto& r = f->g();
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  std::vector<float> logits(V);
  const std::vector<std::int32_t> blocks{0, 1};
  const std::int32_t bad_token = static_cast<std::int32_t>(V);
  forward_item it{{&bad_token, 1}, 0, blocks, true};
  auto s = r.forward({&it, 1}, logits);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::invalid_argument);
  EXPECT_NE(s.err().message.find("outside the vocabulary"), std::string::npos);
  const std::vector<std::int32_t> bad_blocks{0, 4};
  const std::int32_t tok = 5;
  forward_item far{{&tok, 1}, 20, bad_blocks, true};
  s = r.forward({&far, 1}, logits);
  ASSERT_FALSE(s);
  EXPECT_NE(s.err().message.find("block id 4 out of range"), std::string::npos);
  forward_item ok{{&tok, 1}, 0, blocks, true};
  std::vector<float> small(V - 1);
  s = r.forward({&ok, 1}, small);
  ASSERT_FALSE(s);
  EXPECT_TRUE(r.forward({&ok, 1}, logits));
  std::vector<float> host(V);
  ASSERT_TRUE(f->h().forward({&ok, 1}, host));
  EXPECT_LE(max_rel_diff(logits, host), 1e-4f);
}

} // namespace
} // namespace thaw
