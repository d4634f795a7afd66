// The CUDA kernels (gpu/kernels) against their CPU references (gpu/host, and a plain
// double-precision attention here) for every shape class and output type.
//
// Shapes, named once (kernels.hpp): T tokens, S items, H hidden, NH / NKV query / KV heads,
// D head dimension, B KV blocks of 16 positions, MB block-table width.
//
// Tolerances: f32 outputs of element-wise kernels that round each operation as the CPU does are
// compared to 1e-6 relative (the device's expf / double sin / double sums may differ from
// glibc's in the last bit); attention, whose f32 sums run in another order than the double
// reference, to 1e-4 absolute (outputs are averages of values in [-1, 1]); a bf16 output to
// 2^-8 relative (its rounding is at most 2^-9) and f16 to 2^-10, plus the f32 tolerance.
#include "gpu/host/host_ops.hpp"
#include "gpu/kernels/attention_merge.hpp"
#include "gpu/kernels/kernels.hpp"
#include "runtime/common/dtype.hpp"
#include "tests/support/cuda_buffer.hpp"
#include "tests/support/cuda_test.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace k = thaw::cuda::kernels;
using thaw::dtype;
using thaw::testing::cuda_sync;
using thaw::testing::device_buffer;

namespace {

struct shape_class {
  const char* name;
  std::int64_t H, NH, NKV, D;
};
constexpr shape_class shapes[] = {
    {"tiny", 64, 4, 2, 16},          {"stories15m", 288, 6, 6, 48},
    {"llama1b", 2048, 32, 8, 64},    {"d128", 4096, 32, 8, 128},
    {"d256_gqa4", 2048, 8, 2, 256}, {"odd_d50", 150, 3, 1, 50},
};
constexpr std::int64_t token_counts[] = {1, 7, 33, 100};
constexpr dtype out_types[] = {dtype::f32, dtype::bf16, dtype::f16};

double rel_tol(dtype t) {
  return t == dtype::bf16 ? 1.0 / 256 : t == dtype::f16 ? 1.0 / 1024 : 0.0;
}

std::vector<float> random_floats(std::size_t n, std::mt19937& rng, float lo = -1.0f,
                                 float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v)
    x = d(rng);
  return v;
}

/// n elements of type t on the device, read back as f32.
std::vector<float> download_f32(const device_buffer<std::uint8_t>& buf, dtype t, std::size_t n) {
  const auto bytes = buf.download();
  std::vector<float> out(n);
  thaw::convert_elements(t, bytes.data(), dtype::f32, out.data(), n);
  return out;
}

/// Element-wise comparison: |got - want| <= abs + rel * |want|; reports the first few misses.
void expect_near_all(const std::vector<float>& got, const std::vector<float>& want, double abs,
                     double rel, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int misses = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    const bool ok = (std::isnan(g) && std::isnan(w)) || (std::isinf(w) && g == w) ||
                    std::fabs(g - w) <= abs + rel * std::fabs(w);
    if (!ok && ++misses <= 5)
      ADD_FAILURE() << what << ": [" << i << "] got " << g << ", want " << w;
  }
  EXPECT_EQ(misses, 0) << what;
}

std::string label(const shape_class& s, std::int64_t T, dtype t) {
  return std::string(s.name) + " T=" + std::to_string(T) + " " + std::string(thaw::to_string(t));
}

} // namespace

TEST(cuda_kernels, embedding_matches_host) {
  THAW_SKIP_WITHOUT_GPU();
  std::mt19937 rng(1);
  for (const auto& s : shapes)
    for (const dtype type : out_types)
      for (const std::int64_t T : token_counts) {
        const std::int64_t V = 97;
        const auto f = random_floats(static_cast<std::size_t>(V * s.H), rng);
        std::vector<std::uint8_t> table(f.size() * thaw::dtype_size(type));
        thaw::convert_elements(dtype::f32, f.data(), type, table.data(), f.size());
        std::vector<std::int32_t> tokens(static_cast<std::size_t>(T));
        for (auto& t : tokens)
          t = static_cast<std::int32_t>(rng() % V);
        std::vector<float> want(static_cast<std::size_t>(T * s.H));
        for (std::int64_t t = 0; t < T; ++t)
          thaw::host::embedding(table.data(), type, s.H, tokens[static_cast<std::size_t>(t)],
                                want.data() + t * s.H);
        device_buffer<std::uint8_t> d_table(table);
        device_buffer<std::int32_t> d_tokens(tokens);
        device_buffer<float> d_out(want.size());
        ASSERT_EQ(k::embedding(d_table.get(), type, s.H, d_tokens.get(), T, d_out.get(), nullptr),
                  cudaSuccess);
        cuda_sync();
        EXPECT_EQ(d_out.download(), want) << label(s, T, type);
      }
}

TEST(cuda_kernels, rmsnorm_matches_host) {
  THAW_SKIP_WITHOUT_GPU();
  std::mt19937 rng(2);
  const double eps = 1e-5;
  for (const auto& s : shapes)
    for (const dtype type : out_types)
      for (const std::int64_t T : token_counts)
        for (const bool gather : {false, true}) {
          const auto x = random_floats(static_cast<std::size_t>(T * s.H), rng, -4.0f, 4.0f);
          const auto w = random_floats(static_cast<std::size_t>(s.H), rng, 0.5f, 1.5f);
          // With rows: every other source row, last first (the runner's "last token of each
          // item" gather before the lm_head).
          std::vector<std::int32_t> rows;
          for (std::int64_t r = T - 1; r >= 0; r -= 2)
            rows.push_back(static_cast<std::int32_t>(r));
          const std::int64_t n_rows = gather ? static_cast<std::int64_t>(rows.size()) : T;
          std::vector<float> want(static_cast<std::size_t>(n_rows * s.H));
          for (std::int64_t r = 0; r < n_rows; ++r) {
            const std::int64_t src = gather ? rows[static_cast<std::size_t>(r)] : r;
            thaw::host::rmsnorm(x.data() + src * s.H, w.data(), s.H, eps, want.data() + r * s.H);
          }
          device_buffer<float> d_x(x), d_w(w);
          device_buffer<std::int32_t> d_rows(rows);
          device_buffer<std::uint8_t> d_out(want.size() * thaw::dtype_size(type));
          ASSERT_EQ(k::rmsnorm(d_x.get(), gather ? d_rows.get() : nullptr, n_rows, d_w.get(), s.H,
                               eps, d_out.get(), type, nullptr),
                    cudaSuccess);
          cuda_sync();
          expect_near_all(download_f32(d_out, type, want.size()), want, 1e-6,
                          1e-6 + rel_tol(type),
                          label(s, T, type) + (gather ? " gather" : ""));
        }
}

TEST(cuda_kernels, add_bias_and_add_are_exact) {
  THAW_SKIP_WITHOUT_GPU();
  std::mt19937 rng(3);
  for (const auto& s : shapes)
    for (const std::int64_t T : token_counts) {
      const std::int64_t n = s.NH * s.D + 2 * s.NKV * s.D; // a fused qkv row
      auto y = random_floats(static_cast<std::size_t>(T * n), rng);
      const auto b = random_floats(static_cast<std::size_t>(n), rng);
      const auto z = random_floats(y.size(), rng);
      device_buffer<float> d_y(y), d_b(b), d_z(z);
      ASSERT_EQ(k::add_bias(d_y.get(), d_b.get(), T, n, nullptr), cudaSuccess);
      ASSERT_EQ(k::add(d_y.get(), d_z.get(), T * n, nullptr), cudaSuccess);
      cuda_sync();
      for (std::int64_t t = 0; t < T; ++t)
        for (std::int64_t i = 0; i < n; ++i)
          y[static_cast<std::size_t>(t * n + i)] += b[static_cast<std::size_t>(i)];
      thaw::host::add(y.data(), z.data(), T * n);
      EXPECT_EQ(d_y.download(), y) << s.name << " T=" << T;
    }
}

TEST(cuda_kernels, rope_matches_host) {
  THAW_SKIP_WITHOUT_GPU();
  std::mt19937 rng(4);
  for (const auto& s : shapes)
    for (const std::int64_t T : token_counts) {
      std::vector<double> inv_freq(static_cast<std::size_t>(s.D / 2));
      for (std::size_t i = 0; i < inv_freq.size(); ++i)
        inv_freq[i] = 1.0 / std::pow(500000.0, static_cast<double>(2 * i) / static_cast<double>(s.D));
      std::vector<std::int32_t> pos(static_cast<std::size_t>(T));
      for (auto& p : pos)
        p = static_cast<std::int32_t>(rng() % 131072); // large angles too
      auto x = random_floats(static_cast<std::size_t>(T * s.NH * s.D), rng);
      device_buffer<float> d_x(x);
      device_buffer<std::int32_t> d_pos(pos);
      device_buffer<double> d_f(inv_freq);
      ASSERT_EQ(k::rope(d_x.get(), T, s.NH, s.D, d_pos.get(), d_f.get(), nullptr), cudaSuccess);
      cuda_sync();
      std::vector<float> cs(static_cast<std::size_t>(s.D));
      for (std::int64_t t = 0; t < T; ++t) {
        thaw::host::rope_angles(pos[static_cast<std::size_t>(t)], inv_freq, cs.data());
        thaw::host::rope(x.data() + t * s.NH * s.D, s.NH, s.D, cs.data());
      }
      // The angle's cos / sin in double may differ from glibc's in the last double bit, which
      // reaches the float only when it rounds across a boundary: 1 ulp at most.
      expect_near_all(d_x.download(), x, 1e-7, 3e-7, std::string(s.name) + " T=" + std::to_string(T));
    }
}

TEST(cuda_kernels, kv_write_fills_slots_and_skips_padding) {
  THAW_SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  for (const auto& s : shapes)
    for (const std::int64_t T : token_counts) {
      const std::int64_t B = (T + 15) / 16 * 2 + 3;
      const auto cache_n = static_cast<std::size_t>(B * s.NKV * 16 * s.D);
      std::vector<std::int32_t> slots(static_cast<std::size_t>(B * 16));
      std::iota(slots.begin(), slots.end(), 0);
      std::shuffle(slots.begin(), slots.end(), rng);
      slots.resize(static_cast<std::size_t>(T));
      if (T > 1)
        slots[1] = -1; // padding
      const auto kk = random_floats(static_cast<std::size_t>(T * s.NKV * s.D), rng);
      const auto vv = random_floats(kk.size(), rng);
      std::vector<float> kc(cache_n, 7.0f), vc(cache_n, 9.0f);
      device_buffer<float> d_k(kk), d_v(vv), d_kc(kc), d_vc(vc);
      device_buffer<std::int32_t> d_slots(slots);
      ASSERT_EQ(k::kv_write(d_k.get(), d_v.get(), T, s.NKV, s.D, d_slots.get(), d_kc.get(),
                            d_vc.get(), nullptr),
                cudaSuccess);
      cuda_sync();
      for (std::int64_t t = 0; t < T; ++t) {
        const std::int32_t slot = slots[static_cast<std::size_t>(t)];
        if (slot < 0)
          continue;
        for (std::int64_t h = 0; h < s.NKV; ++h)
          for (std::int64_t d = 0; d < s.D; ++d) {
            const auto at = static_cast<std::size_t>(((slot / 16 * s.NKV + h) * 16 + slot % 16) * s.D + d);
            const auto from = static_cast<std::size_t>((t * s.NKV + h) * s.D + d);
            kc[at] = kk[from];
            vc[at] = vv[from];
          }
      }
      EXPECT_EQ(d_kc.download(), kc) << s.name << " T=" << T;
      EXPECT_EQ(d_vc.download(), vc) << s.name << " T=" << T;
    }
}

TEST(cuda_kernels, silu_mul_matches_host) {
  THAW_SKIP_WITHOUT_GPU();
  std::mt19937 rng(6);
  for (const auto& s : shapes)
    for (const dtype type : out_types)
      for (const std::int64_t T : token_counts) {
        const std::int64_t n = T * (s.H * 8 / 3 + 1); // odd intermediate sizes
        const auto g = random_floats(static_cast<std::size_t>(n), rng, -8.0f, 8.0f);
        const auto u = random_floats(g.size(), rng, -2.0f, 2.0f);
        auto want = g;
        thaw::host::silu_mul(want.data(), u.data(), n);
        device_buffer<float> d_g(g), d_u(u);
        device_buffer<std::uint8_t> d_out(g.size() * thaw::dtype_size(type));
        ASSERT_EQ(k::silu_mul(d_g.get(), d_u.get(), n, d_out.get(), type, nullptr), cudaSuccess);
        cuda_sync();
        expect_near_all(download_f32(d_out, type, want.size()), want, 1e-7, 1e-6 + rel_tol(type),
                        label(s, T, type));
      }
}

TEST(cuda_kernels, convert_matches_convert_elements_bit_for_bit) {
  THAW_SKIP_WITHOUT_GPU();
  std::mt19937 rng(7);
  const std::int64_t n = 100003;
  auto f = random_floats(static_cast<std::size_t>(n), rng, -3.0f, 3.0f);
  // Overflow to inf in f16, subnormals, ties, infinities.
  f[0] = 70000.0f;
  f[1] = -1e-6f;
  f[2] = 1.0f + 1.0f / 256;
  f[3] = std::numeric_limits<float>::infinity();
  f[4] = 3e38f;
  // NaNs of both signs and with payloads: the hardware's conversions make them canonical
  // (0x7fff); thaw::convert_elements keeps the sign (and bf16 the payload's top).
  f[5] = std::bit_cast<float>(0x7fc00000u);
  f[6] = std::bit_cast<float>(0xffc00000u);
  f[7] = std::bit_cast<float>(0x7fa5a000u); // signalling, payload in the bf16 half
  f[8] = std::bit_cast<float>(0xff812000u);
  f[9] = -std::numeric_limits<float>::infinity();
  f[10] = -0.0f;
  f[11] = 65520.0f; // the f16 rounding boundary to inf
  f[12] = 3.0e-8f;  // f16 subnormal range, rounds to the smallest subnormal
  for (const dtype from : out_types) {
    std::vector<std::uint8_t> in(f.size() * thaw::dtype_size(from));
    thaw::convert_elements(dtype::f32, f.data(), from, in.data(), f.size());
    device_buffer<std::uint8_t> d_in(in);
    for (const dtype to : out_types) {
      std::vector<std::uint8_t> want(f.size() * thaw::dtype_size(to));
      thaw::convert_elements(from, in.data(), to, want.data(), f.size());
      device_buffer<std::uint8_t> d_out(want.size());
      ASSERT_EQ(k::convert(d_in.get(), from, d_out.get(), to, n, nullptr), cudaSuccess);
      cuda_sync();
      EXPECT_EQ(d_out.download(), want) << thaw::to_string(from) << " -> " << thaw::to_string(to);
    }
  }
}

// ---- attention ----------------------------------------------------------------------------

namespace {

/// A paged cache of one layer and the block tables of S items: blocks handed out in a shuffled
/// order, every position an item has written filled with random keys / values, everything else
/// NaN, so that a kernel reading a position it must not attend to fails loudly.
struct paged_cache {
  std::int64_t NKV = 0, D = 0, B = 0;
  std::int32_t MB = 0;
  std::vector<float> k, v;
  std::vector<std::int32_t> tables; // [S][MB]

  paged_cache(const shape_class& s, const std::vector<std::int32_t>& written, std::mt19937& rng)
      : NKV(s.NKV), D(s.D) {
    std::int64_t need = 0;
    for (const auto n : written) {
      need += (n + 15) / 16;
      MB = std::max<std::int32_t>(MB, (n + 15) / 16);
    }
    MB += 1;      // wider than any item needs
    B = need + 5; // and some blocks nobody uses
    std::vector<std::int32_t> ids(static_cast<std::size_t>(B));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    const auto n = static_cast<std::size_t>(B * NKV * 16 * D);
    k.assign(n, std::numeric_limits<float>::quiet_NaN());
    v = k;
    tables.assign(written.size() * static_cast<std::size_t>(MB), -1);
    std::size_t next = 0;
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (std::size_t i = 0; i < written.size(); ++i) {
      for (std::int32_t b = 0; b < (written[i] + 15) / 16; ++b)
        tables[i * static_cast<std::size_t>(MB) + static_cast<std::size_t>(b)] = ids[next++];
      for (std::int32_t p = 0; p < written[i]; ++p)
        for (std::int64_t h = 0; h < NKV; ++h)
          for (std::int64_t d = 0; d < D; ++d) {
            const auto at = index(static_cast<std::int64_t>(i), p, h, d);
            k[at] = u(rng);
            v[at] = u(rng);
          }
    }
  }

  [[nodiscard]] std::size_t index(std::int64_t item, std::int64_t p, std::int64_t h,
                                  std::int64_t d) const {
    const std::int64_t block = tables[static_cast<std::size_t>(item * MB + p / 16)];
    return static_cast<std::size_t>(((block * NKV + h) * 16 + p % 16) * D + d);
  }
};

/// Plain attention in double: query row q ([NH][D]) of `item` at `pos`, into out ([NH][D]).
void reference_attention(const paged_cache& c, const float* q, std::int64_t item, std::int32_t pos,
                         std::int64_t NH, std::int32_t window, float scale, float* out) {
  const std::int64_t D = c.D, group = NH / c.NKV;
  const std::int32_t lo = window > 0 ? std::max(0, pos - window + 1) : 0;
  for (std::int64_t h = 0; h < NH; ++h) {
    const std::int64_t kh = h / group;
    std::vector<double> s;
    for (std::int32_t p = lo; p <= pos; ++p) {
      double dot = 0.0;
      for (std::int64_t d = 0; d < D; ++d)
        dot += static_cast<double>(q[h * D + d]) * c.k[c.index(item, p, kh, d)];
      s.push_back(dot * scale);
    }
    const double mx = *std::max_element(s.begin(), s.end());
    double z = 0.0;
    for (auto& x : s)
      z += (x = std::exp(x - mx));
    for (std::int64_t d = 0; d < D; ++d) {
      double o = 0.0;
      for (std::int32_t p = lo; p <= pos; ++p)
        o += s[static_cast<std::size_t>(p - lo)] * c.v[c.index(item, p, kh, d)];
      out[h * D + d] = static_cast<float>(o / z);
    }
  }
}

constexpr double attention_abs_tol = 1e-4;

/// Runs attention_decode for items whose contexts are `lengths` (0: a padding item) and compares
/// with the reference. The output and the scratch start as NaN: a value not written, or a
/// partial read that should have been skipped, fails.
void check_decode(const shape_class& s, const std::vector<std::int32_t>& lengths,
                  std::int32_t window, dtype type, std::mt19937& rng) {
  const paged_cache c(s, lengths, rng);
  const auto S = static_cast<std::int64_t>(lengths.size());
  std::vector<std::int32_t> pos;
  for (const auto n : lengths)
    pos.push_back(n - 1);
  const auto q = random_floats(static_cast<std::size_t>(S * s.NH * s.D), rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.D));
  std::vector<float> want(q.size(), 0.0f);
  for (std::int64_t i = 0; i < S; ++i)
    if (pos[static_cast<std::size_t>(i)] >= 0)
      reference_attention(c, q.data() + i * s.NH * s.D, i, pos[static_cast<std::size_t>(i)], s.NH,
                          window, scale, want.data() + i * s.NH * s.D);
  device_buffer<float> d_q(q), d_k(c.k), d_v(c.v);
  device_buffer<std::int32_t> d_pos(pos), d_tables(c.tables);
  std::vector<std::uint8_t> poison(q.size() * thaw::dtype_size(type), 0xff); // NaN
  device_buffer<std::uint8_t> d_out(poison);
  const auto scratch_floats = k::attention_decode_scratch_floats(S, s.NH, s.D, c.MB);
  device_buffer<float> d_scratch(std::vector<float>(static_cast<std::size_t>(scratch_floats),
                                                    std::numeric_limits<float>::quiet_NaN()));
  ASSERT_EQ(k::attention_decode(d_q.get(), d_k.get(), d_v.get(), S, d_pos.get(), d_tables.get(),
                                c.MB, s.NH, s.NKV, s.D, window, scale, d_out.get(), type,
                                scratch_floats > 0 ? d_scratch.get() : nullptr, nullptr),
            cudaSuccess);
  cuda_sync();
  expect_near_all(download_f32(d_out, type, want.size()), want, attention_abs_tol, rel_tol(type),
                  label(s, S, type) + " MB=" + std::to_string(c.MB) +
                      " window=" + std::to_string(window));
}

} // namespace

TEST(cuda_kernels, attention_prefill_matches_reference) {
  THAW_SKIP_WITHOUT_GPU();
  std::mt19937 rng(8);
  // (cached prefix, chunk length) per item: a fresh prompt, a chunk after a cached prefix that
  // ends mid-block, one token, and a long chunk spanning many tiles.
  const std::vector<std::pair<std::int32_t, std::int32_t>> items = {
      {0, 7}, {21, 33}, {5, 1}, {100, 100}, {0, 16}};
  for (const auto& s : shapes)
    // Windows shorter than a tile (1, 5): rows of one tile start at different blocks, so a row
    // meets whole blocks it must skip before its first score (the online softmax's -inf start).
    for (const std::int32_t window : {0, 1, 5, 24})
      for (const dtype type : out_types) {
        std::vector<std::int32_t> written, pos, tok_item;
        std::vector<k::attention_tile> tiles;
        for (std::size_t i = 0; i < items.size(); ++i) {
          const auto [start, len] = items[i];
          written.push_back(start + len);
          for (std::int32_t j = 0; j < len; j += k::prefill_tile_tokens)
            tiles.push_back({static_cast<std::int32_t>(pos.size()) + j,
                             std::min(k::prefill_tile_tokens, len - j),
                             static_cast<std::int32_t>(i)});
          for (std::int32_t j = 0; j < len; ++j) {
            pos.push_back(start + j);
            tok_item.push_back(static_cast<std::int32_t>(i));
          }
        }
        std::shuffle(tiles.begin(), tiles.end(), rng); // tiles are independent
        const paged_cache c(s, written, rng);
        const auto T = static_cast<std::int64_t>(pos.size());
        const auto q = random_floats(static_cast<std::size_t>(T * s.NH * s.D), rng);
        const float scale = 1.0f / std::sqrt(static_cast<float>(s.D));
        std::vector<float> want(q.size());
        for (std::int64_t t = 0; t < T; ++t)
          reference_attention(c, q.data() + t * s.NH * s.D, tok_item[static_cast<std::size_t>(t)],
                              pos[static_cast<std::size_t>(t)], s.NH, window, scale,
                              want.data() + t * s.NH * s.D);
        device_buffer<float> d_q(q), d_k(c.k), d_v(c.v);
        device_buffer<std::int32_t> d_pos(pos), d_tables(c.tables);
        device_buffer<k::attention_tile> d_tiles(tiles);
        device_buffer<std::uint8_t> d_out(q.size() * thaw::dtype_size(type));
        ASSERT_EQ(k::attention_prefill(d_q.get(), d_k.get(), d_v.get(), d_tiles.get(),
                                       static_cast<std::int64_t>(tiles.size()), d_pos.get(),
                                       d_tables.get(), c.MB, s.NH, s.NKV, s.D, window, scale,
                                       d_out.get(), type, nullptr),
                  cudaSuccess);
        cuda_sync();
        expect_near_all(download_f32(d_out, type, want.size()), want, attention_abs_tol,
                        rel_tol(type), label(s, T, type) + " window=" + std::to_string(window));
      }
}

TEST(cuda_kernels, attention_decode_matches_reference) {
  THAW_SKIP_WITHOUT_GPU();
  std::mt19937 rng(9);
  // Context lengths (pos + 1) per item; 0 is a padding item (pos = -1: zero output). The wide
  // batch has S * NH >= 264 (S = 96) for every shape, so it takes the 8-warp launch
  // that the narrow one (16 warps) never reaches. The narrow batch's table (MB = 126) is split
  // into 4 partitions; the wide one's (MB = 26) is not.
  const std::vector<std::int32_t> narrow = {1, 17, 2000, 0, 300, 16, 33};
  std::vector<std::int32_t> wide;
  for (std::int32_t i = 0; i < 96; ++i)
    wide.push_back(i % 11 == 3 ? 0 : 1 + (i * 37) % 400);
  for (const auto& lengths : {narrow, wide})
    for (const auto& s : shapes)
      for (const std::int32_t window : {0, 100})
        for (const dtype type : out_types)
          check_decode(s, lengths, window, type, rng);
}

TEST(cuda_kernels, attention_decode_splits_long_contexts) {
  THAW_SKIP_WITHOUT_GPU();
  std::mt19937 rng(10);
  // Tables of 258 to 314 blocks: 9 or 10 partitions of 512 positions. Short items and windows
  // leave whole partitions without a position (empty partials the merge must skip); 5000 with
  // window 600 starts mid-partition and ends in the next.
  const std::vector<std::vector<std::int32_t>> batches = {
      {5000}, {3000, 17, 4500}, {0, 4097, 513}};
  const shape_class picked[] = {shapes[2], shapes[3], shapes[4]}; // D = 64, 128, 256
  for (const auto& lengths : batches)
    for (const auto& s : picked)
      for (const std::int32_t window : {0, 1, 600})
        for (const dtype type : {dtype::f32, dtype::bf16})
          check_decode(s, lengths, window, type, rng);
  // S * NH * P over the bound on partials: fewer, wider partitions (8 of 40 blocks here).
  std::vector<std::int32_t> many(64, 40);
  many[5] = 5000;
  many[9] = 0;
  check_decode(shapes[2], many, 0, dtype::f32, rng);
  check_decode(shapes[2], many, 700, dtype::f16, rng);
}

TEST(cuda_kernels, attention_decode_scratch_follows_the_table_width) {
  // A host function: runs without a GPU.
  // One partition (no scratch) up to 32 blocks (512 positions), then one per 32 blocks.
  EXPECT_EQ(k::attention_decode_scratch_floats(1, 32, 64, 1), 0);
  EXPECT_EQ(k::attention_decode_scratch_floats(1, 32, 64, 32), 0);
  EXPECT_EQ(k::attention_decode_scratch_floats(1, 32, 64, 33), 1 * 32 * 2 * 66);
  EXPECT_EQ(k::attention_decode_scratch_floats(3, 32, 128, 256), 3 * 32 * 8 * 130);
  // Bounded: S * NH * P <= 2^14 partials, a batch of 2^14 (item, head) rows or more not split.
  std::int64_t last = 0;
  for (std::int32_t MB = 1; MB <= 1 << 16; MB *= 2) {
    const auto n = k::attention_decode_scratch_floats(1, 32, 128, MB);
    EXPECT_GE(n, last) << MB;
    EXPECT_LE(n, (128 + 2) << 14) << MB;
    last = n;
  }
  EXPECT_EQ(k::attention_decode_scratch_floats(64, 32, 64, 320), 64 * 32 * 8 * 66);
  EXPECT_EQ(k::attention_decode_scratch_floats(512, 32, 64, 1 << 12), 0);
  EXPECT_EQ(k::attention_decode_scratch_floats(0, 32, 64, 64), 0);
}

TEST(cuda_kernels, attention_merge_matches_one_softmax) {
  // The merge arithmetic of decode attention (attention_merge.hpp), on the host: scores cut
  // into partials and merged must give the softmax of all of them, empty partials (m = -inf,
  // their accumulators NaN) skipped rather than weighted by exp2(-inf - -inf).
  std::mt19937 rng(11);
  constexpr int D = 3;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Partial sizes; 0 is an empty partial. A partial far below the rest (its exp2 underflows to
  // 0) and one far above.
  const std::vector<std::vector<int>> cuts = {{5}, {3, 0, 4}, {0, 7, 0, 0}, {1, 1, 1, 1, 1}};
  for (const auto& cut : cuts)
    for (const float shift : {0.0f, -300.0f, 40.0f}) {
      const int n = static_cast<int>(cut.size());
      std::vector<float> ml(2 * static_cast<std::size_t>(n)), acc(static_cast<std::size_t>(n * D));
      std::vector<double> num(D, 0.0);
      double den = 0.0, big = -INFINITY;
      std::vector<std::pair<float, std::vector<float>>> all; // (score, value) of every position
      for (int i = 0; i < n; ++i) {
        auto scores = random_floats(static_cast<std::size_t>(cut[static_cast<std::size_t>(i)]), rng,
                                    -8.0f, 8.0f);
        if (i == 1)
          for (auto& x : scores)
            x += shift;
        float m = -INFINITY, l = 0.0f;
        for (const float x : scores)
          m = std::max(m, x);
        for (int d = 0; d < D; ++d)
          acc[static_cast<std::size_t>(i * D + d)] = scores.empty() ? nan : 0.0f;
        for (const float x : scores) {
          const auto v = random_floats(D, rng);
          l += exp2f(x - m);
          for (int d = 0; d < D; ++d)
            acc[static_cast<std::size_t>(i * D + d)] +=
              exp2f(x - m) * v[static_cast<std::size_t>(d)];
          all.emplace_back(x, v);
          big = std::max(big, static_cast<double>(x));
        }
        ml[2 * static_cast<std::size_t>(i)] = m;
        ml[2 * static_cast<std::size_t>(i) + 1] = l;
      }
      for (const auto& [x, v] : all) {
        const double e = std::exp2(static_cast<double>(x) - big);
        den += e;
        for (int d = 0; d < D; ++d)
          num[static_cast<std::size_t>(d)] += e * v[static_cast<std::size_t>(d)];
      }
      const float m = k::merge_max(ml.data(), n);
      EXPECT_EQ(m, static_cast<float>(big));
      const float l = k::merge_den(ml.data(), n, m);
      const std::string what = "cut of " + std::to_string(n) + " shift " + std::to_string(shift);
      for (int d = 0; d < D; ++d) {
        const float got = k::merge_column(ml.data(), acc.data() + d, n, D, m) / l;
        EXPECT_NEAR(got, num[static_cast<std::size_t>(d)] / den, 1e-5) << what << " d=" << d;
      }
    }
  // Every partial empty (a padding item, a table wider than any position): nothing, no NaN.
  const float ml[] = {-INFINITY, 0.0f, -INFINITY, 0.0f};
  const float acc[] = {nan, nan};
  const float m = k::merge_max(ml, 2);
  EXPECT_EQ(m, -INFINITY);
  EXPECT_EQ(k::merge_den(ml, 2, m), 0.0f);
  EXPECT_EQ(k::merge_column(ml, acc, 2, 1, m), 0.0f);
  EXPECT_EQ(k::merge_scale(-INFINITY, -INFINITY), 0.0f);
}

TEST(cuda_kernels, attention_rejects_unsupported_head_dim) {
  THAW_SKIP_WITHOUT_GPU();
  EXPECT_EQ(k::attention_decode(nullptr, nullptr, nullptr, 1, nullptr, nullptr, 1, 4, 2, 258, 0,
                                1.0f, nullptr, dtype::f32, nullptr, nullptr),
            cudaErrorInvalidValue);
  // A launch that splits (MB = 64: two partitions) needs its scratch.
  ASSERT_GT(k::attention_decode_scratch_floats(1, 4, 64, 64), 0);
  EXPECT_EQ(k::attention_decode(nullptr, nullptr, nullptr, 1, nullptr, nullptr, 64, 4, 2, 64, 0,
                                1.0f, nullptr, dtype::f32, nullptr, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(k::attention_prefill(nullptr, nullptr, nullptr, nullptr, 1, nullptr, nullptr, 1, 4, 3,
                                 64, 0, 1.0f, nullptr, dtype::f32, nullptr),
            cudaErrorInvalidValue);
}
