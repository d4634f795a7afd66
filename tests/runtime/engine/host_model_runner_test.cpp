// The host model runner against the scalar reference (tests/support/reference_model.hpp), and its
// own consistency: chunked prefill, decode, batching, shared prefix blocks, validation, kernel paths.
#include "runtime/engine/host_model_runner.hpp"

#include "gpu/host/host_device.hpp"
#include "gpu/host/host_ops.hpp"
#include "tests/support/reference_model.hpp"
#include "tests/support/runner_checks.hpp"
#include "tests/support/test_models.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <cmath>
#include <numeric>
#include <tuple>

namespace thaw {
namespace {

using testing::temp_dir;

struct model_fixture {
  temp_dir dir;
  loaded_model m;
  model_runner& r() { return *m.runner; }
  const std::byte* weights() { return static_cast<const std::byte*>(m.weights->data()); }
};

// `rope_scaling`: JSON text replacing the config's "rope_scaling": null, or empty.
std::unique_ptr<model_fixture> make(const std::string& preset, dtype t, int threads = 2,
                                    std::int32_t blocks = 32, const std::string& rope_scaling = "") {
  auto f = std::make_unique<model_fixture>();
  testing::make_hf(f->dir.path() / "hf", preset, dtype::f32);
  if (!rope_scaling.empty()) {
    const auto cfg_path = f->dir.path() / "hf" / "config.json";
    std::ifstream in(cfg_path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto key = text.find("\"rope_scaling\"");
    const auto null = text.find("null", key);
    EXPECT_NE(key, std::string::npos);
    text.replace(null, 4, rope_scaling);
    std::ofstream(cfg_path) << text;
  }
  testing::import(f->dir.path() / "hf", f->dir.path() / "ck", t);
  auto m = load_host_model(f->dir.path() / "ck", {blocks, threads});
  EXPECT_TRUE(m) << m.err().to_string();
  if (!m)
    return nullptr;
  f->m = std::move(*m);
  return f;
}

using testing::decode_all;
using testing::iota_blocks;
using testing::max_rel_diff;
using testing::prefill_chunks;
using testing::some_tokens;

class runner_vs_reference : public ::testing::TestWithParam<std::tuple<std::string, dtype>> {};

TEST_P(runner_vs_reference, every_position_matches_and_prefill_modes_agree) {
  const auto& [preset, type] = GetParam();
  auto f = make(preset, type);
  ASSERT_TRUE(f);
  auto& r = f->r();
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  if (preset == "tiny-mistral") {
    ASSERT_EQ(r.config().sliding_window, 64u); // so that 70 positions exercise the window
  }
  // 70 positions: past one 64-token sliding window (tiny-mistral) and over 5 blocks.
  const auto tokens = some_tokens(70, static_cast<std::int32_t>(V));
  const auto ref = testing::reference_logits(*f->m.ckpt, f->weights(), tokens);
  const auto blocks = iota_blocks(0, 5);
  const auto dec = decode_all(r, tokens, blocks);
  // Tolerance: f32 compute against a double-accumulating reference on the same (converted) weights.
  for (std::size_t p = 0; p < tokens.size(); ++p)
    ASSERT_LE(max_rel_diff({dec.data() + p * V, V}, {ref.data() + p * V, V}), 1e-3f)
        << "position " << p;
  const std::span<const float> last{dec.data() + (tokens.size() - 1) * V, V};
  const auto blocks2 = iota_blocks(5, 5);
  const auto one = prefill_chunks(r, tokens, blocks2, tokens.size());
  EXPECT_LE(max_rel_diff(one, last), 1e-4f);
  const auto blocks3 = iota_blocks(10, 5);
  const auto chunked = prefill_chunks(r, tokens, blocks3, 9);
  EXPECT_LE(max_rel_diff(chunked, last), 1e-4f);
}

INSTANTIATE_TEST_SUITE_P(
    presets, runner_vs_reference,
    ::testing::Combine(::testing::Values("tiny", "tiny-qwen2", "tiny-mistral"),
                       ::testing::Values(dtype::f32, dtype::bf16, dtype::f16)),
    [](const auto& info) {
      std::string n = std::get<0>(info.param) + "_" + std::string(to_string(std::get<1>(info.param)));
      for (auto& ch : n)
        if (ch == '-')
          ch = '_';
      return n;
    });

TEST(host_model_runner, rope_scaling_matches_reference) {
  // original_max_position_embeddings 16 puts tiny's frequencies in all three llama3 bands.
  for (const std::string scaling :
       {R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16})",
        R"({"type": "linear", "factor": 2.0})"}) {
    auto f = make("tiny", dtype::f32, 2, 32, scaling);
    ASSERT_TRUE(f);
    auto& r = f->r();
    ASSERT_FALSE(r.config().rope_scaling.type.empty());
    const auto V = static_cast<std::size_t>(r.config().vocab_size);
    const auto tokens = some_tokens(40, static_cast<std::int32_t>(V));
    const auto ref = testing::reference_logits(*f->m.ckpt, f->weights(), tokens);
    const auto dec = decode_all(r, tokens, iota_blocks(0, 3));
    for (std::size_t p = 0; p < tokens.size(); ++p)
      ASSERT_LE(max_rel_diff({dec.data() + p * V, V}, {ref.data() + p * V, V}), 1e-3f)
          << scaling << " position " << p;
  }
}

TEST(host_model_runner, unsupported_rope_scaling_is_rejected) {
  temp_dir dir;
  testing::make_hf(dir.path() / "hf", "tiny", dtype::f32);
  const auto cfg_path = dir.path() / "hf" / "config.json";
  std::ifstream in(cfg_path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto null = text.find("null", text.find("\"rope_scaling\""));
  text.replace(null, 4, R"({"rope_type": "dynamic", "factor": 2.0})");
  std::ofstream(cfg_path) << text;
  testing::import(dir.path() / "hf", dir.path() / "ck");
  auto m = load_host_model(dir.path() / "ck", {});
  ASSERT_FALSE(m);
  EXPECT_EQ(m.err().code, errc::invalid_argument) << m.err().to_string();
}

TEST(host_model_runner, batched_sequences_match_each_alone) {
  auto f = make("tiny-qwen2", dtype::f32);
  ASSERT_TRUE(f);
  auto& r = f->r();
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  const auto a = some_tokens(20, static_cast<std::int32_t>(V), 1);
  const auto b = some_tokens(33, static_cast<std::int32_t>(V), 2);
  const auto ba = iota_blocks(0, 3), bb = iota_blocks(3, 3);
  std::vector<float> alone_a(V), alone_b(V), both(2 * V);
  forward_item ia{a, 0, ba, true}, ib{b, 0, bb, true};
  ASSERT_TRUE(r.forward({&ia, 1}, alone_a));
  ASSERT_TRUE(r.forward({&ib, 1}, alone_b));
  const auto ta = iota_blocks(6, 3), tb = iota_blocks(9, 3);
  const forward_item pair2[] = {{a, 0, ta, true}, {b, 0, tb, true}};
  ASSERT_TRUE(r.forward(pair2, both));
  for (std::size_t i = 0; i < V; ++i) {
    EXPECT_EQ(both[i], alone_a[i]) << i;
    EXPECT_EQ(both[V + i], alone_b[i]) << i;
  }
  // Decode step for both together vs each alone.
  const std::int32_t na[] = {5}, nb[] = {9};
  const forward_item dec2[] = {{na, 20, ta, true}, {nb, 33, tb, true}};
  ASSERT_TRUE(r.forward(dec2, both));
  forward_item da{na, 20, ba, true}, db{nb, 33, bb, true};
  ASSERT_TRUE(r.forward({&da, 1}, alone_a));
  ASSERT_TRUE(r.forward({&db, 1}, alone_b));
  for (std::size_t i = 0; i < V; ++i) {
    EXPECT_EQ(both[i], alone_a[i]) << i;
    EXPECT_EQ(both[V + i], alone_b[i]) << i;
  }
}

TEST(host_model_runner, shared_prefix_block_gives_same_logits) {
  auto f = make("tiny", dtype::f32);
  ASSERT_TRUE(f);
  auto& r = f->r();
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  auto a = some_tokens(24, static_cast<std::int32_t>(V), 3);
  auto b = a;
  for (std::size_t i = 16; i < b.size(); ++i)
    b[i] = (b[i] + 5) % static_cast<std::int32_t>(V); // same first block, different tail
  std::vector<float> la(V), lb_shared(V), lb_scratch(V);
  const std::vector<std::int32_t> ta{0, 1};
  forward_item ia{a, 0, ta, true};
  ASSERT_TRUE(r.forward({&ia, 1}, la));
  // B reuses A's block 0 and writes its own block 2 from position 16.
  const std::vector<std::int32_t> tb{0, 2};
  forward_item ib{std::span<const std::int32_t>(b).subspan(16), 16, tb, true};
  ASSERT_TRUE(r.forward({&ib, 1}, lb_shared));
  const std::vector<std::int32_t> tc{3, 4};
  forward_item ic{b, 0, tc, true};
  ASSERT_TRUE(r.forward({&ic, 1}, lb_scratch));
  EXPECT_LE(max_rel_diff(lb_shared, lb_scratch), 1e-5f);
  const auto ref = testing::reference_logits(*f->m.ckpt, f->weights(), b);
  EXPECT_LE(max_rel_diff(lb_shared, {ref.data() + (b.size() - 1) * V, V}), 1e-3f);
}

// Two runners on one shared pool, their KV caches from a host device: a node's instances. The
// second cache is the first's retained mapping, full of the first's keys and values, and the
// logits must still be exactly those of a runner with a pool and a cache of its own (a read of
// a position no forward wrote would show).
TEST(host_model_runner, shared_pool_and_reused_device_kv_give_the_same_logits) {
  auto f = make("tiny", dtype::f32);
  ASSERT_TRUE(f);
  const auto V = static_cast<std::size_t>(f->r().config().vocab_size);
  const auto a = some_tokens(40, static_cast<std::int32_t>(V), 4);
  const auto b = some_tokens(37, static_cast<std::int32_t>(V), 9);
  const auto blocks = iota_blocks(0, 3);
  std::vector<float> own_b(V), shared_b(V), first_a(V);
  forward_item ib{b, 0, blocks, true}, ia{a, 0, blocks, true};
  ASSERT_TRUE(f->r().forward({&ib, 1}, own_b)); // the fixture's runner: own pool, heap cache

  host_device dev;
  auto pool = std::make_shared<host::thread_pool>(2);
  const host_runner_options opt{.num_kv_blocks = 32, .threads = 0, .pool = pool,
                                .kv_device = &dev};
  {
    auto first = make_host_model_runner(*f->m.ckpt, *f->m.weights, opt);
    ASSERT_TRUE(first) << first.err().to_string();
    ASSERT_TRUE((*first)->forward({&ia, 1}, first_a)); // sequence a's KV in blocks 0..2
    EXPECT_GT(dev.allocated_bytes(), 0u);
  }
  const auto retained = dev.retained_bytes();
  EXPECT_GT(retained, 0u); // the first cache's mapping, kept for the next runner
  auto second = make_host_model_runner(*f->m.ckpt, *f->m.weights, opt);
  ASSERT_TRUE(second) << second.err().to_string();
  EXPECT_EQ(dev.retained_bytes(), 0u); // ...which took it
  auto other = make_host_model_runner(*f->m.ckpt, *f->m.weights, {.num_kv_blocks = 8, .pool = pool});
  ASSERT_TRUE(other); // a second runner on the same pool
  ASSERT_TRUE((*second)->forward({&ib, 1}, shared_b));
  for (std::size_t i = 0; i < V; ++i)
    ASSERT_EQ(shared_b[i], own_b[i]) << i;
  std::vector<float> other_b(V);
  ASSERT_TRUE((*other)->forward({&ib, 1}, other_b));
  for (std::size_t i = 0; i < V; ++i)
    ASSERT_EQ(other_b[i], own_b[i]) << i;
}

TEST(host_model_runner, a_kv_device_that_is_not_host_memory_is_refused) {
  auto f = make("tiny", dtype::f32);
  ASSERT_TRUE(f);
  struct fake_gpu final : device {
    device_kind kind() const noexcept override { return device_kind::cuda; }
    std::string name() const override { return "fake-gpu"; }
    std::uint64_t memory_bytes() const noexcept override { return 1 << 30; }
    expected<std::unique_ptr<device_buffer>> allocate(std::size_t) override {
      return make_error(errc::internal, "never called");
    }
    std::unique_ptr<copy_engine> make_copy_engine(int) override { return nullptr; }
  } gpu;
  auto r = make_host_model_runner(*f->m.ckpt, *f->m.weights,
                                  {.num_kv_blocks = 4, .threads = 1, .kv_device = &gpu});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::invalid_argument);
  EXPECT_NE(r.err().to_string().find("fake-gpu"), std::string::npos) << r.err().to_string();
}

TEST(host_model_runner, invalid_batches_are_rejected) {
  auto f = make("tiny", dtype::f32, 1, 4);
  ASSERT_TRUE(f);
  auto& r = f->r();
  const auto V = static_cast<std::int32_t>(r.config().vocab_size);
  std::vector<float> logits(static_cast<std::size_t>(V));
  const std::vector<std::int32_t> ok_tokens{1, 2, 3}, bad_token{1, V, 3}, neg_token{-1};
  const std::vector<std::int32_t> blocks{0}, bad_block{4}, neg_block{-1};
  const std::vector<std::int32_t> empty;
  const auto expect_invalid = [&](forward_item it, std::span<float> out) {
    auto s = r.forward({&it, 1}, out);
    ASSERT_FALSE(s);
    EXPECT_EQ(s.err().code, errc::invalid_argument) << s.err().to_string();
  };
  expect_invalid({empty, 0, blocks, true}, logits);
  expect_invalid({bad_token, 0, blocks, true}, logits);
  expect_invalid({neg_token, 0, blocks, true}, logits);
  expect_invalid({ok_tokens, 0, bad_block, true}, logits);
  expect_invalid({ok_tokens, 0, neg_block, true}, logits);
  expect_invalid({ok_tokens, 14, blocks, true}, logits); // needs 2 blocks
  expect_invalid({ok_tokens, 0, blocks, true}, std::span<float>(logits).first(logits.size() - 1));
  forward_item good{ok_tokens, 0, blocks, true};
  EXPECT_TRUE(r.forward({&good, 1}, logits));
  std::vector<float> none;
  forward_item no_logits{ok_tokens, 0, blocks, false};
  EXPECT_TRUE(r.forward({&no_logits, 1}, none));
}

// The last chunk's logits of a 30-token prompt in chunks on kernel path `p` against the scalar
// path (tiny-qwen2: bf16 weights, biases).
void expect_path_agrees_with_scalar(host::kernel_path p) {
  auto f = make("tiny-qwen2", dtype::bf16);
  ASSERT_TRUE(f);
  auto& r = f->r();
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  const auto tokens = some_tokens(30, static_cast<std::int32_t>(V));
  const auto blocks = iota_blocks(0, 2);
  const auto saved = host::active_kernel_path();
  host::set_kernel_path(host::kernel_path::scalar);
  const auto s = prefill_chunks(r, tokens, blocks, 30);
  host::set_kernel_path(p);
  ASSERT_EQ(host::active_kernel_path(), p);
  const auto v = prefill_chunks(r, tokens, blocks, 30);
  host::set_kernel_path(saved);
  EXPECT_LE(max_rel_diff(v, s), 1e-4f);
}

TEST(host_model_runner, avx2_and_scalar_paths_agree) {
  if (!host::avx2_available())
    GTEST_SKIP() << "no AVX2 on this CPU";
  expect_path_agrees_with_scalar(host::kernel_path::avx2);
}

TEST(host_model_runner, avx512_and_scalar_paths_agree) {
  if (!host::avx512_available())
    GTEST_SKIP() << "no AVX-512 on this CPU";
  expect_path_agrees_with_scalar(host::kernel_path::avx512);
}

// The avx512 path's 16-lane code, compiled for AVX2: runs where AVX-512 does not.
TEST(host_model_runner, w16_emulated_and_scalar_paths_agree) {
  if (!host::avx2_available())
    GTEST_SKIP() << "no AVX2 on this CPU (the w16_emulated path runs on AVX2)";
  expect_path_agrees_with_scalar(host::kernel_path::w16_emulated);
}

TEST(host_model_runner, stories15m_matches_reference_and_reports_speed) {
  auto f = make("stories15m", dtype::f32, 2, 8);
  ASSERT_TRUE(f);
  auto& r = f->r();
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  const auto tokens = some_tokens(6, static_cast<std::int32_t>(V));
  const auto ref = testing::reference_logits(*f->m.ckpt, f->weights(), tokens);
  const auto blocks = iota_blocks(0, 8);
  const auto last = prefill_chunks(r, tokens, blocks, tokens.size());
  EXPECT_LE(max_rel_diff(last, {ref.data() + (tokens.size() - 1) * V, V}), 1e-3f);
  // Decode speed, batch 1 (informational, not asserted).
  const auto start = std::chrono::steady_clock::now();
  std::vector<float> out(V);
  int n = 0;
  for (std::int32_t p = static_cast<std::int32_t>(tokens.size()); p < 120; ++p, ++n) {
    const std::int32_t t[] = {p % static_cast<std::int32_t>(V)};
    forward_item it{t, p, blocks, true};
    ASSERT_TRUE(r.forward({&it, 1}, out));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto many = some_tokens(112, static_cast<std::int32_t>(V));
  const auto pstart = std::chrono::steady_clock::now();
  forward_item pf{many, 0, blocks, true};
  ASSERT_TRUE(r.forward({&pf, 1}, out));
  const double ps = std::chrono::duration<double>(std::chrono::steady_clock::now() - pstart).count();
  std::printf("stories15m f32, 2 threads: decode %.0f tok/s, prefill(112) %.0f tok/s\n", n / s,
              112 / ps);
}

} // namespace
} // namespace thaw
