// Host kernels against plain loops, and each SIMD path (avx2, avx512, and w16_emulated: the
// avx512 path's code compiled for AVX2) against the scalar path.
#include "gpu/host/host_ops.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>

namespace thaw::host {
namespace {

struct path_guard {
  kernel_path saved = active_kernel_path();
  ~path_guard() { set_kernel_path(saved); }
};

std::vector<float> random_floats(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v)
    x = d(rng);
  return v;
}

std::vector<std::byte> as_dtype(const std::vector<float>& v, dtype t) {
  std::vector<std::byte> out(v.size() * dtype_size(t));
  convert_elements(dtype::f32, v.data(), t, out.data(), v.size());
  return out;
}

class matmul_test : public ::testing::TestWithParam<dtype> {};

TEST_P(matmul_test, matches_plain_loops_on_both_paths_and_threads) {
  path_guard guard;
  const dtype t = GetParam();
  for (auto [rows, in, tokens] :
       {std::tuple{37, 19, 1}, {64, 288, 5}, {43, 300, 8}, {257, 64, 9}}) {
    auto wf = random_floats(static_cast<std::size_t>(rows * in), 1);
    auto wb = as_dtype(wf, t);
    std::vector<float> wback(wf.size());
    convert_elements(t, wb.data(), dtype::f32, wback.data(), wf.size());
    auto x = random_floats(static_cast<std::size_t>(tokens * in), 2);
    auto bias = random_floats(static_cast<std::size_t>(rows), 3);
    std::vector<float> ref(static_cast<std::size_t>(rows * tokens));
    for (int tk = 0; tk < tokens; ++tk)
      for (int r = 0; r < rows; ++r) {
        double acc = bias[r];
        for (int i = 0; i < in; ++i)
          acc += static_cast<double>(wback[r * in + i]) * x[tk * in + i];
        ref[tk * rows + r] = static_cast<float>(acc);
      }
    thread_pool pool(3);
    for (auto path : {kernel_path::scalar, kernel_path::avx2, kernel_path::avx512,
                      kernel_path::w16_emulated}) {
      set_kernel_path(path);
      for (thread_pool* p : {static_cast<thread_pool*>(nullptr), &pool}) {
        std::vector<float> y(ref.size());
        matmul(p, wb.data(), t, rows, in, x.data(), tokens, y.data(), bias.data());
        for (std::size_t i = 0; i < y.size(); ++i)
          ASSERT_NEAR(y[i], ref[i], 1e-4 * std::max(1.0f, std::abs(ref[i])))
              << "path " << static_cast<int>(path) << " i " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(dtypes, matmul_test,
                         ::testing::Values(dtype::f32, dtype::bf16, dtype::f16));

TEST(host_ops, matmul_group_equals_separate_matmuls) {
  path_guard guard;
  thread_pool pool(2);
  // Sizes whose row split between threads falls inside the second product, with odd rows.
  const int in = 96, tokens = 3;
  const int rows[] = {37, 211, 13};
  std::vector<std::vector<float>> w, y, alone;
  auto x = random_floats(tokens * in, 9);
  auto bias = random_floats(211, 10);
  for (int j = 0; j < 3; ++j) {
    w.push_back(random_floats(static_cast<std::size_t>(rows[j] * in), 20 + j));
    y.emplace_back(static_cast<std::size_t>(rows[j] * tokens));
    alone.emplace_back(static_cast<std::size_t>(rows[j] * tokens));
  }
  for (int t : {1, tokens}) {
    std::vector<matmul_job> jobs;
    for (int j = 0; j < 3; ++j) {
      const float* b = j == 1 ? bias.data() : nullptr;
      jobs.push_back({w[j].data(), dtype::f32, rows[j], in, x.data(), t, y[j].data(), b});
      matmul(nullptr, w[j].data(), dtype::f32, rows[j], in, x.data(), t, alone[j].data(), b);
    }
    matmul_group(&pool, jobs);
    for (int j = 0; j < 3; ++j)
      for (int i = 0; i < rows[j] * t; ++i)
        ASSERT_EQ(y[j][i], alone[j][i]) << "job " << j << " element " << i << " tokens " << t;
  }
}

// ---- each path on its own, and each SIMD path against the scalar one ----

// Runs a test on the path it is given (restoring the one before), or skips it where this CPU
// cannot run that path: the avx512 tests report SKIPPED without AVX-512.
class path_test : public ::testing::TestWithParam<kernel_path> {
protected:
  void SetUp() override {
    const kernel_path p = GetParam();
    if (p == kernel_path::avx512 && !avx512_available())
      GTEST_SKIP() << "no AVX-512 on this CPU";
    if ((p == kernel_path::avx2 || p == kernel_path::w16_emulated) && !avx2_available())
      GTEST_SKIP() << "no AVX2 on this CPU";
    set_kernel_path(p);
    ASSERT_EQ(active_kernel_path(), p);
  }

private:
  path_guard guard_;
};

class every_path : public path_test {};
class simd_path : public path_test {};

std::string path_name(const ::testing::TestParamInfo<kernel_path>& info) {
  return std::string(kernel_path_name(info.param));
}

INSTANTIATE_TEST_SUITE_P(paths, every_path,
                         ::testing::Values(kernel_path::scalar, kernel_path::avx2,
                                           kernel_path::avx512, kernel_path::w16_emulated),
                         path_name);
INSTANTIATE_TEST_SUITE_P(paths, simd_path,
                         ::testing::Values(kernel_path::avx2, kernel_path::avx512,
                                           kernel_path::w16_emulated),
                         path_name);

const char* dtype_label(dtype t) {
  return t == dtype::f32 ? "f32" : t == dtype::bf16 ? "bf16" : "f16";
}

TEST_P(every_path, matmul_token_result_independent_of_batch) {
  thread_pool pool(3);
  // Short rows (72 floats), long ones (700: 2800 bytes, with an 8- and a 16-wide tail) and bf16
  // rows of 1100 (2200 bytes: the 4-row tiles at one to three tokens), against batches that reach
  // every tile shape: 1x1, 1x2, 1x4 and 1x8 (one row at a time), 2x1, 2x4, 4x1 and 4x2; with a
  // pool, rows split between threads at odd boundaries.
  for (const dtype t : {dtype::f32, dtype::bf16}) {
    for (const int in : {72, 700, 1100}) {
      for (const int tokens : {3, 7, 8, 9, 17, 37}) {
        const int rows = 41;
        const auto w = as_dtype(random_floats(static_cast<std::size_t>(rows * in), 4), t);
        auto x = random_floats(static_cast<std::size_t>(tokens * in), 5);
        auto bias = random_floats(static_cast<std::size_t>(rows), 6);
        std::vector<float> all(static_cast<std::size_t>(rows * tokens)), threaded(all.size());
        matmul(nullptr, w.data(), t, rows, in, x.data(), tokens, all.data(), bias.data());
        matmul(&pool, w.data(), t, rows, in, x.data(), tokens, threaded.data(), bias.data());
        ASSERT_EQ(threaded, all) << dtype_label(t) << " in " << in << " tokens " << tokens;
        for (int tk = 0; tk < tokens; ++tk) {
          std::vector<float> one(rows);
          matmul(nullptr, w.data(), t, rows, in, x.data() + tk * in, 1, one.data(), bias.data());
          for (int r = 0; r < rows; ++r)
            ASSERT_EQ(one[r], all[tk * rows + r]) << dtype_label(t) << " in " << in << " tokens "
                                                   << tokens << " token " << tk << " row " << r;
        }
      }
    }
  }
}

TEST_P(simd_path, matmul_matches_scalar_across_shapes) {
  thread_pool pool(3);
  // Row lengths around and far from multiples of 8 and 16 (tails only, a tail after full vectors,
  // rows past 2 KiB), odd row counts, and 1 to 37 tokens.
  const int max_rows = 131, max_tokens = 37;
  for (const dtype t : {dtype::f32, dtype::bf16, dtype::f16}) {
    for (const int in : {1, 7, 15, 16, 17, 33, 100, 288, 700, 1030}) {
      const auto w = as_dtype(random_floats(static_cast<std::size_t>(max_rows * in), 31), t);
      const auto x = random_floats(static_cast<std::size_t>(max_tokens * in), 32);
      const auto bias = random_floats(static_cast<std::size_t>(max_rows), 33);
      for (const int rows : {1, 3, 37, max_rows}) {
        for (const int tokens : {1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 31, max_tokens}) {
          const auto n = static_cast<std::size_t>(rows * tokens);
          std::vector<float> ref(n), y(n);
          detail::matmul_rows_scalar(w.data(), t, rows, in, x.data(), tokens, ref.data(),
                                     bias.data(), 0, rows);
          matmul(&pool, w.data(), t, rows, in, x.data(), tokens, y.data(), bias.data());
          for (std::size_t i = 0; i < n; ++i)
            ASSERT_NEAR(y[i], ref[i], 1e-4 * std::max(1.0f, std::abs(ref[i])))
                << dtype_label(t) << " in " << in << " rows " << rows << " tokens " << tokens
                << " i " << i;
        }
      }
    }
  }
}

TEST_P(simd_path, attention_rows_match_scalar) {
  // Head sizes with and without an 8- or 16-wide tail, below and above the 64-element chunks;
  // run lengths around the 8-key blocks.
  for (const std::int64_t d : {1, 8, 15, 16, 17, 48, 64, 77, 128, 136}) {
    for (const std::int64_t n : {1, 3, 4, 7, 8, 9, 16, 17, 37}) {
      auto q = random_floats(static_cast<std::size_t>(d), 6);
      auto rows = random_floats(static_cast<std::size_t>(n * d), 7);
      auto w = random_floats(static_cast<std::size_t>(n), 8);
      auto base = random_floats(static_cast<std::size_t>(d), 9);
      std::vector<float> ss(static_cast<std::size_t>(n)), sv(ss.size());
      auto ys = base, yv = base;
      detail::dot_rows_scalar(q.data(), rows.data(), n, d, 0.125f, ss.data());
      detail::axpy_rows_scalar(w.data(), rows.data(), n, d, ys.data());
      dot_rows(q.data(), rows.data(), n, d, 0.125f, sv.data());
      axpy_rows(w.data(), rows.data(), n, d, yv.data());
      for (std::int64_t p = 0; p < n; ++p) {
        EXPECT_NEAR(sv[p], ss[p], 1e-5 * std::max(1.0f, std::abs(ss[p])))
            << "d " << d << " n " << n << " key " << p;
        // One key at a time gives the same bits as the run: scores do not depend on where a
        // block boundary falls.
        float one = 0;
        dot_rows(q.data(), rows.data() + p * d, 1, d, 0.125f, &one);
        EXPECT_EQ(one, sv[p]) << "d " << d << " n " << n << " key " << p;
      }
      auto split = base;
      for (std::int64_t p = 0; p < n; ++p)
        axpy_rows(w.data() + p, rows.data() + p * d, 1, d, split.data());
      for (std::int64_t i = 0; i < d; ++i) {
        EXPECT_NEAR(yv[i], ys[i], 1e-5 * std::max(1.0f, std::abs(ys[i])))
            << "d " << d << " n " << n << " element " << i;
        EXPECT_EQ(split[i], yv[i]) << "d " << d << " n " << n << " element " << i;
      }
    }
  }
}

TEST_P(simd_path, silu_and_softmax_match_scalar) {
  // Ordinary values, the saturating ends of exp, and lengths with and without 8- and 16-wide
  // tails.
  for (const int n : {1, 7, 8, 15, 16, 17, 61, 200, 1000}) {
    std::vector<float> g = random_floats(static_cast<std::size_t>(n), 10);
    const std::vector<float> up = random_floats(static_cast<std::size_t>(n), 11);
    for (auto& v : g)
      v *= 12.0f;
    if (n > 5) {
      g[3] = -100.0f;
      g[4] = 100.0f;
      g[5] = 0.0f;
    }
    auto gs = g, gv = g;
    detail::silu_mul_scalar(gs.data(), up.data(), n);
    silu_mul(gv.data(), up.data(), n);
    for (int i = 0; i < n; ++i)
      EXPECT_NEAR(gv[i], gs[i], 1e-6f * std::max(1.0f, std::abs(gs[i])))
          << "n " << n << " element " << i;
    if (n > 5) {
      EXPECT_EQ(gv[3], 0.0f * up[3]) << "n " << n;
    }

    std::vector<float> x = random_floats(static_cast<std::size_t>(n), 12);
    for (auto& v : x)
      v *= 20.0f;
    if (n > 8)
      x[7] = -200.0f; // exp underflows to 0
    auto xs = x, xv = x;
    detail::softmax_scalar(xs.data(), n);
    softmax(xv.data(), n);
    float sum = 0;
    for (int i = 0; i < n; ++i) {
      EXPECT_NEAR(xv[i], xs[i], 1e-6f) << "n " << n << " element " << i;
      sum += xv[i];
    }
    EXPECT_NEAR(sum, 1.0f, 1e-5f) << "n " << n;
  }
}

TEST_P(simd_path, exp_within_2e7_of_std_exp) {
  // Every multiple of 2^-10 over the range where e^x is a normal float (an odd count, so that
  // the one-value tail runs too), and the ends.
  std::vector<float> x;
  for (float v = -87.0f; v <= 88.0f; v += 1.0f / 1024)
    x.push_back(v);
  x.push_back(1e-30f);
  x.push_back(-1e-30f);
  if (x.size() % 2 == 0)
    x.push_back(0.5f);
  auto e = x;
  detail::exp_inplace(e.data(), static_cast<std::int64_t>(e.size()));
  double worst = 0;
  float at = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(static_cast<double>(x[i]));
    const double rel = std::abs(e[i] - want) / want;
    if (rel > worst) {
      worst = rel;
      at = x[i];
    }
  }
  EXPECT_LT(worst, 2e-7) << "at x = " << at;
  std::printf("exp on %s: worst relative error %.3g at x = %.10g\n",
              std::string(kernel_path_name(GetParam())).c_str(), worst, static_cast<double>(at));
  std::vector<float> ends{-1000.0f, -100.0f, -87.5f, 0.0f, 88.8f, 100.0f, 1000.0f};
  detail::exp_inplace(ends.data(), static_cast<std::int64_t>(ends.size()));
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(ends, (std::vector<float>{0.0f, 0.0f, 0.0f, 1.0f, inf, inf, inf}));
}

// The premise of the w16_emulated path: where both run, it gives the avx512 path's bits.
TEST(host_ops, avx512_and_w16_emulated_give_the_same_bits) {
  if (!avx512_available())
    GTEST_SKIP() << "no AVX-512 on this CPU";
  path_guard guard;
  thread_pool pool(3);
  // Each kernel's outputs on the current path, concatenated.
  const auto run_all = [&] {
    std::vector<float> out;
    for (const dtype t : {dtype::f32, dtype::bf16, dtype::f16}) {
      for (auto [rows, in, tokens] : {std::tuple{37, 19, 1}, {41, 700, 3}, {43, 1100, 2},
                                      {64, 288, 5}, {131, 33, 37}}) {
        const auto w = as_dtype(random_floats(static_cast<std::size_t>(rows * in), 41), t);
        const auto x = random_floats(static_cast<std::size_t>(tokens * in), 42);
        const auto bias = random_floats(static_cast<std::size_t>(rows), 43);
        std::vector<float> y(static_cast<std::size_t>(rows * tokens));
        matmul(&pool, w.data(), t, rows, in, x.data(), tokens, y.data(), bias.data());
        out.insert(out.end(), y.begin(), y.end());
      }
    }
    for (const std::int64_t d : {17, 64, 136}) {
      const std::int64_t n = 19;
      const auto q = random_floats(static_cast<std::size_t>(d), 44);
      const auto kv = random_floats(static_cast<std::size_t>(n * d), 45);
      const auto wp = random_floats(static_cast<std::size_t>(n), 46);
      std::vector<float> scores(static_cast<std::size_t>(n));
      auto acc = random_floats(static_cast<std::size_t>(d), 47);
      dot_rows(q.data(), kv.data(), n, d, 0.125f, scores.data());
      axpy_rows(wp.data(), kv.data(), n, d, acc.data());
      out.insert(out.end(), scores.begin(), scores.end());
      out.insert(out.end(), acc.begin(), acc.end());
    }
    auto g = random_floats(1000, 48);
    const auto up = random_floats(1000, 49);
    for (auto& v : g)
      v *= 12.0f;
    auto sm = g;
    auto e = g;
    silu_mul(g.data(), up.data(), 1000);
    softmax(sm.data(), 1000);
    detail::exp_inplace(e.data(), 1000);
    for (const auto* v : {&g, &sm, &e})
      out.insert(out.end(), v->begin(), v->end());
    return out;
  };
  set_kernel_path(kernel_path::avx512);
  const auto native = run_all();
  set_kernel_path(kernel_path::w16_emulated);
  const auto emulated = run_all();
  ASSERT_EQ(native.size(), emulated.size());
  for (std::size_t i = 0; i < native.size(); ++i)
    ASSERT_EQ(std::memcmp(&native[i], &emulated[i], sizeof(float)), 0)
        << "output " << i << ": " << native[i] << " vs " << emulated[i];
}

TEST(host_ops, forced_paths_fall_back_where_the_cpu_lacks_them) {
  path_guard guard;
  set_kernel_path(kernel_path::avx512);
  EXPECT_EQ(active_kernel_path(), avx512_available() ? kernel_path::avx512
                                  : avx2_available() ? kernel_path::avx2
                                                     : kernel_path::scalar);
  set_kernel_path(kernel_path::w16_emulated);
  EXPECT_EQ(active_kernel_path(),
            avx2_available() ? kernel_path::w16_emulated : kernel_path::scalar);
  set_kernel_path(kernel_path::scalar);
  EXPECT_EQ(active_kernel_path(), kernel_path::scalar);
  if (avx512_available()) {
    EXPECT_TRUE(avx2_available());
  }
}

TEST(host_ops, rmsnorm_softmax_silu) {
  std::vector<float> x{1, 2, 3, 4}, w{1, 1, 2, 0.5f}, out(4);
  rmsnorm(x.data(), w.data(), 4, 0.0, out.data());
  const float s = 1.0f / std::sqrt(30.0f / 4);
  EXPECT_NEAR(out[2], 3 * s * 2, 1e-6);
  std::vector<float> p{1, 2, 3};
  softmax(p.data(), 3);
  EXPECT_NEAR(p[0] + p[1] + p[2], 1.0f, 1e-6);
  EXPECT_NEAR(p[2] / p[1], std::exp(1.0f), 1e-5);
  std::vector<float> g{1.0f}, u{2.0f};
  silu_mul(g.data(), u.data(), 1);
  EXPECT_NEAR(g[0], 2.0f / (1.0f + std::exp(-1.0f)), 1e-6);
}

TEST(host_ops, rope_rotate_half_and_llama3_scaling) {
  model_config cfg;
  cfg.head_dim = 4;
  cfg.rope_theta = 10000.0;
  auto f = rope_inv_freq(cfg);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_DOUBLE_EQ(f[0], 1.0);
  EXPECT_NEAR(f[1], 0.01, 1e-12);
  std::vector<float> v{1, 0, 0, 0};
  std::vector<float> cos_sin(2 * f.size());
  rope_angles(1, f, cos_sin.data());
  rope(v.data(), 1, 4, cos_sin.data());
  EXPECT_NEAR(v[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(v[2], std::sin(1.0), 1e-6);
  cfg.head_dim = 128;
  cfg.rope_theta = 500000.0;
  cfg.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
  auto s = rope_inv_freq(cfg);
  EXPECT_DOUBLE_EQ(s[0], 1.0); // high frequency: unchanged
  const double last = 1.0 / std::pow(500000.0, 126.0 / 128);
  EXPECT_NEAR(s[63], last / 8.0, 1e-15); // low frequency: divided by factor
}

TEST(host_ops, thread_pool_covers_range_once) {
  thread_pool pool(4);
  for (int n : {1, 3, 4, 100}) {
    std::vector<std::atomic<int>> hits(n);
    pool.parallel_for(n, [&](std::int64_t b, std::int64_t e) {
      for (auto i = b; i < e; ++i)
        hits[i]++;
    });
    for (auto& h : hits)
      EXPECT_EQ(h.load(), 1);
  }
}

} // namespace
} // namespace thaw::host
