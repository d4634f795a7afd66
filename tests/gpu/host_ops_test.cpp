// Host kernels against plain loops, and the AVX2 path against the scalar path.
#include "gpu/host/host_ops.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

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
    for (auto path : {kernel_path::scalar, kernel_path::avx2}) {
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

TEST(host_ops, matmul_token_result_independent_of_batch) {
  path_guard guard;
  // Short rows (72 floats) and long ones (700: 2800 bytes, with an 8-wide tail), against batches
  // that reach every tile shape: 1x1, 1x2, 1x4 and 1x8 (one row at a time), 2x1, 2x4, 4x1 and
  // 4x2.
  for (const int in : {72, 700}) {
    for (const int tokens : {3, 7, 8, 9, 17}) {
      const int rows = 41;
      auto w = random_floats(static_cast<std::size_t>(rows * in), 4);
      auto x = random_floats(static_cast<std::size_t>(tokens * in), 5);
      auto bias = random_floats(static_cast<std::size_t>(rows), 6);
      std::vector<float> all(static_cast<std::size_t>(rows * tokens));
      matmul(nullptr, w.data(), dtype::f32, rows, in, x.data(), tokens, all.data(), bias.data());
      for (int tk = 0; tk < tokens; ++tk) {
        std::vector<float> one(rows);
        matmul(nullptr, w.data(), dtype::f32, rows, in, x.data() + tk * in, 1, one.data(),
               bias.data());
        for (int r = 0; r < rows; ++r)
          ASSERT_EQ(one[r], all[tk * rows + r])
              << "in " << in << " tokens " << tokens << " token " << tk << " row " << r;
      }
    }
  }
}

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

TEST(host_ops, attention_rows_paths_agree) {
  path_guard guard;
  // Head sizes with and without an 8-wide tail, below and above the 64-element chunk; run
  // lengths around the 4-key blocks.
  for (const std::int64_t d : {8, 48, 77, 64, 136}) {
    for (const std::int64_t n : {1, 3, 4, 7, 9, 16}) {
      auto q = random_floats(static_cast<std::size_t>(d), 6);
      auto rows = random_floats(static_cast<std::size_t>(n * d), 7);
      auto w = random_floats(static_cast<std::size_t>(n), 8);
      auto base = random_floats(static_cast<std::size_t>(d), 9);
      std::vector<float> ss(static_cast<std::size_t>(n)), sv(ss.size());
      auto ys = base, yv = base;
      set_kernel_path(kernel_path::scalar);
      dot_rows(q.data(), rows.data(), n, d, 0.125f, ss.data());
      axpy_rows(w.data(), rows.data(), n, d, ys.data());
      set_kernel_path(kernel_path::avx2);
      dot_rows(q.data(), rows.data(), n, d, 0.125f, sv.data());
      axpy_rows(w.data(), rows.data(), n, d, yv.data());
      for (std::int64_t p = 0; p < n; ++p) {
        EXPECT_NEAR(sv[p], ss[p], 1e-5) << "d " << d << " n " << n << " key " << p;
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
        EXPECT_NEAR(yv[i], ys[i], 1e-5) << "d " << d << " n " << n << " element " << i;
        EXPECT_EQ(split[i], yv[i]) << "d " << d << " n " << n << " element " << i;
      }
    }
  }
}

TEST(host_ops, silu_and_softmax_paths_agree) {
  path_guard guard;
  // Ordinary values, the saturating ends of exp and an 8-wide tail.
  std::vector<float> g = random_floats(61, 10), up = random_floats(61, 11);
  for (std::size_t i = 0; i < g.size(); ++i)
    g[i] *= 12.0f;
  g[3] = -100.0f;
  g[4] = 100.0f;
  g[5] = 0.0f;
  auto gs = g, gv = g;
  set_kernel_path(kernel_path::scalar);
  silu_mul(gs.data(), up.data(), 61);
  set_kernel_path(kernel_path::avx2);
  silu_mul(gv.data(), up.data(), 61);
  for (int i = 0; i < 61; ++i)
    EXPECT_NEAR(gv[i], gs[i], 1e-6f * std::max(1.0f, std::abs(gs[i]))) << "element " << i;
  EXPECT_EQ(gv[3], 0.0f * up[3]);

  for (const int n : {1, 8, 13, 200}) {
    std::vector<float> x = random_floats(static_cast<std::size_t>(n), 12);
    for (auto& v : x)
      v *= 20.0f;
    if (n > 8)
      x[7] = -200.0f; // exp underflows to 0
    auto xs = x, xv = x;
    set_kernel_path(kernel_path::scalar);
    softmax(xs.data(), n);
    set_kernel_path(kernel_path::avx2);
    softmax(xv.data(), n);
    float sum = 0;
    for (int i = 0; i < n; ++i) {
      EXPECT_NEAR(xv[i], xs[i], 1e-6f) << "n " << n << " element " << i;
      sum += xv[i];
    }
    EXPECT_NEAR(sum, 1.0f, 1e-5f) << "n " << n;
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
