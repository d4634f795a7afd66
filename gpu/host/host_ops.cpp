#include "gpu/host/host_ops.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numbers>

namespace thaw::host {

namespace {

bool detect_avx2() noexcept {
#if defined(THAW_HOST_OPS_X86)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

// libgcc's check of avx512f includes the OS saving the zmm state (XCR0).
bool detect_avx512() noexcept {
#if defined(THAW_HOST_OPS_X86)
  __builtin_cpu_init();
  return detect_avx2() && __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

const bool have_avx2 = detect_avx2();
const bool have_avx512 = detect_avx512();

// The path set_kernel_path(p) gives on this CPU.
kernel_path runnable(kernel_path p) noexcept {
  switch (p) {
  case kernel_path::avx512:
    if (have_avx512)
      return p;
    [[fallthrough]];
  case kernel_path::avx2:
    return have_avx2 ? kernel_path::avx2 : kernel_path::scalar;
  case kernel_path::w16_emulated:
    return have_avx2 ? p : kernel_path::scalar;
  case kernel_path::scalar:
    break;
  }
  return kernel_path::scalar;
}

std::atomic<kernel_path> current{runnable(kernel_path::avx512)};

} // namespace

std::string_view kernel_path_name(kernel_path p) noexcept {
  switch (p) {
  case kernel_path::scalar: return "scalar";
  case kernel_path::avx2: return "avx2";
  case kernel_path::avx512: return "avx512";
  case kernel_path::w16_emulated: return "w16_emulated";
  }
  return "unknown";
}

bool avx2_available() noexcept { return have_avx2; }

bool avx512_available() noexcept { return have_avx512; }

kernel_path active_kernel_path() noexcept { return current.load(std::memory_order_relaxed); }

void set_kernel_path(kernel_path p) noexcept {
  current.store(runnable(p), std::memory_order_relaxed);
}

// ---- matmul ----

namespace detail {

void matmul_rows_scalar(const void* w, dtype wtype, std::int64_t rows, std::int64_t in,
                        const float* x, std::int64_t tokens, float* y, const float* bias,
                        std::int64_t r0, std::int64_t r1) noexcept {
  const std::size_t es = dtype_size(wtype);
  std::vector<float> row(static_cast<std::size_t>(in));
  for (std::int64_t r = r0; r < r1; ++r) {
    const auto* wr = static_cast<const std::byte*>(w) + static_cast<std::size_t>(r * in) * es;
    for (std::int64_t i = 0; i < in; ++i)
      row[static_cast<std::size_t>(i)] = load_element(wtype, wr, static_cast<std::size_t>(i));
    const float b = bias != nullptr ? bias[r] : 0.0f;
    for (std::int64_t t = 0; t < tokens; ++t) {
      const float* xt = x + t * in;
      float acc = 0.0f;
      for (std::int64_t i = 0; i < in; ++i)
        acc += row[static_cast<std::size_t>(i)] * xt[i];
      y[t * rows + r] = acc + b;
    }
  }
}

void dot_rows_scalar(const float* q, const float* rows, std::int64_t n, std::int64_t d,
                     float scale, float* out) noexcept {
  for (std::int64_t p = 0; p < n; ++p) {
    float acc = 0.0f;
    for (std::int64_t i = 0; i < d; ++i)
      acc += q[i] * rows[p * d + i];
    out[p] = acc * scale;
  }
}

void axpy_rows_scalar(const float* w, const float* rows, std::int64_t n, std::int64_t d,
                      float* out) noexcept {
  for (std::int64_t p = 0; p < n; ++p)
    for (std::int64_t i = 0; i < d; ++i)
      out[i] += w[p] * rows[p * d + i];
}

void silu_mul_scalar(float* gate, const float* up, std::int64_t n) noexcept {
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void softmax_scalar(float* x, std::int64_t n) noexcept {
  const float m = *std::max_element(x, x + n);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (std::int64_t i = 0; i < n; ++i)
    x[i] *= inv;
}

void exp_scalar(float* x, std::int64_t n) noexcept {
  for (std::int64_t i = 0; i < n; ++i)
    x[i] = std::exp(x[i]);
}

} // namespace detail

namespace {

// One path's bodies, indexed by kernel_path.
struct kernel_set {
  decltype(&detail::matmul_rows_scalar) matmul_rows;
  decltype(&detail::dot_rows_scalar) dot_rows;
  decltype(&detail::axpy_rows_scalar) axpy_rows;
  decltype(&detail::silu_mul_scalar) silu_mul;
  decltype(&detail::softmax_scalar) softmax;
  decltype(&detail::exp_scalar) exp;
};

constexpr kernel_set scalar_set{detail::matmul_rows_scalar, detail::dot_rows_scalar,
                                detail::axpy_rows_scalar,   detail::silu_mul_scalar,
                                detail::softmax_scalar,     detail::exp_scalar};
#if defined(THAW_HOST_OPS_X86)
constexpr kernel_set kernel_sets[] = {
    scalar_set,
    {detail::matmul_rows_avx2, detail::dot_rows_avx2, detail::axpy_rows_avx2,
     detail::silu_mul_avx2, detail::softmax_avx2, detail::exp_avx2},
    {detail::matmul_rows_avx512, detail::dot_rows_avx512, detail::axpy_rows_avx512,
     detail::silu_mul_avx512, detail::softmax_avx512, detail::exp_avx512},
    {detail::matmul_rows_w16_avx2, detail::dot_rows_w16_avx2, detail::axpy_rows_w16_avx2,
     detail::silu_mul_w16_avx2, detail::softmax_w16_avx2, detail::exp_w16_avx2},
};
#else
// No SIMD files in this build: set_kernel_path never leaves scalar.
constexpr kernel_set kernel_sets[] = {scalar_set, scalar_set, scalar_set, scalar_set};
#endif

const kernel_set& active_set() noexcept {
  return kernel_sets[static_cast<std::size_t>(current.load(std::memory_order_relaxed))];
}

} // namespace

namespace detail {

void exp_inplace(float* x, std::int64_t n) noexcept { active_set().exp(x, n); }

} // namespace detail

void matmul(thread_pool* pool, const void* w, dtype wtype, std::int64_t rows, std::int64_t in,
            const float* x, std::int64_t tokens, float* y, const float* bias) {
  const matmul_job job{w, wtype, rows, in, x, tokens, y, bias};
  matmul_group(pool, {&job, 1});
}

void matmul_group(thread_pool* pool, std::span<const matmul_job> jobs) {
  const auto rows_body = active_set().matmul_rows;
  std::int64_t total = 0, work = 0;
  for (const auto& j : jobs) {
    total += j.rows;
    work += j.rows * j.in * j.tokens;
  }
  // Rows [b, e) of the jobs laid end to end.
  auto body = [&](std::int64_t b, std::int64_t e) {
    std::int64_t base = 0;
    for (const auto& j : jobs) {
      const std::int64_t r0 = std::max<std::int64_t>(b - base, 0);
      const std::int64_t r1 = std::min<std::int64_t>(e - base, j.rows);
      if (r0 < r1)
        rows_body(j.w, j.wtype, j.rows, j.in, j.x, j.tokens, j.y, j.bias, r0, r1);
      base += j.rows;
    }
  };
  // Small products are not worth waking the pool.
  if (pool == nullptr || work < (1 << 15))
    body(0, total);
  else
    pool->parallel_for(total, body);
}

void dot_rows(const float* q, const float* rows, std::int64_t n, std::int64_t d, float scale,
              float* out) noexcept {
  active_set().dot_rows(q, rows, n, d, scale, out);
}

void axpy_rows(const float* w, const float* rows, std::int64_t n, std::int64_t d,
               float* out) noexcept {
  active_set().axpy_rows(w, rows, n, d, out);
}

// ---- element-wise ----

void rmsnorm(const float* x, const float* weight, std::int64_t n, double eps, float* out) noexcept {
  double ss = 0.0;
  for (std::int64_t i = 0; i < n; ++i)
    ss += static_cast<double>(x[i]) * x[i];
  const auto scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (std::int64_t i = 0; i < n; ++i)
    out[i] = x[i] * scale * weight[i];
}

std::vector<double> rope_inv_freq(const model_config& cfg) {
  const auto d = static_cast<std::int64_t>(cfg.head_dim);
  std::vector<double> f(static_cast<std::size_t>(d / 2));
  const auto& s = cfg.rope_scaling;
  for (std::int64_t i = 0; i < d / 2; ++i) {
    double freq = 1.0 / std::pow(cfg.rope_theta, static_cast<double>(2 * i) / static_cast<double>(d));
    if (s.type == "linear" && s.factor > 0) {
      freq /= s.factor;
    } else if (s.type == "llama3" && s.factor > 0) {
      const auto old_ctx = static_cast<double>(s.original_max_position_embeddings);
      const double low_wavelen = old_ctx / s.low_freq_factor;
      const double high_wavelen = old_ctx / s.high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / freq;
      if (wavelen < high_wavelen) {
        // unchanged
      } else if (wavelen > low_wavelen) {
        freq /= s.factor;
      } else {
        const double smooth =
            (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        freq = (1.0 - smooth) * freq / s.factor + smooth * freq;
      }
    }
    f[static_cast<std::size_t>(i)] = freq;
  }
  return f;
}

void rope_angles(std::int64_t pos, const std::vector<double>& inv_freq, float* cos_sin) noexcept {
  const auto half = static_cast<std::int64_t>(inv_freq.size());
  for (std::int64_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(pos) * inv_freq[static_cast<std::size_t>(i)];
    cos_sin[i] = static_cast<float>(std::cos(angle));
    cos_sin[half + i] = static_cast<float>(std::sin(angle));
  }
}

void rope(float* x, std::int64_t heads, std::int64_t head_dim, const float* cos_sin) noexcept {
  const std::int64_t half = head_dim / 2;
  for (std::int64_t h = 0; h < heads; ++h) {
    float* v = x + h * head_dim;
    for (std::int64_t i = 0; i < half; ++i) {
      const float c = cos_sin[i], s = cos_sin[half + i];
      const float a = v[i];
      const float b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

void silu_mul(float* gate, const float* up, std::int64_t n) noexcept {
  active_set().silu_mul(gate, up, n);
}

void add(float* x, const float* y, std::int64_t n) noexcept {
  for (std::int64_t i = 0; i < n; ++i)
    x[i] += y[i];
}

void embedding(const void* table, dtype type, std::int64_t dim, std::int64_t token,
               float* out) noexcept {
  const auto* row = static_cast<const std::byte*>(table) +
                    static_cast<std::size_t>(token * dim) * dtype_size(type);
  convert_elements(type, row, dtype::f32, out, static_cast<std::size_t>(dim));
}

void softmax(float* x, std::int64_t n) noexcept {
  if (n <= 0)
    return;
  active_set().softmax(x, n);
}

} // namespace thaw::host
