#pragma once
/// CPU compute kernels for the host model runner (ARCHITECTURE.md section 6): matrix-vector
/// products over f32/bf16/f16 weights with f32 activations and f32 accumulation, RMSNorm, RoPE,
/// SwiGLU, residual add, embedding lookup and softmax. Each kernel with a SIMD body has an AVX2
/// (+FMA, F16C) version chosen at run time and a scalar version; `set_kernel_path` forces one so
/// that tests can compare them.

#include "runtime/checkpoint/model_config.hpp"
#include "gpu/host/thread_pool.hpp"
#include "runtime/common/dtype.hpp"

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace thaw::host {

enum class kernel_path : std::uint8_t { scalar = 0, avx2 = 1 };

/// True when this CPU has AVX2, FMA and F16C (and the build has the AVX2 file).
[[nodiscard]] bool avx2_available() noexcept;
/// The path kernels use now; avx2 when available unless forced.
[[nodiscard]] kernel_path active_kernel_path() noexcept;
/// Forces a path (avx2 falls back to scalar when unavailable). Process-wide; for tests/benchmarks.
void set_kernel_path(kernel_path p) noexcept;

/// y[t][r] = sum_i W[r][i] * x[t][i] (+ bias[r]) for t < tokens, r < rows; W is [rows][in]
/// row-major in `wtype`, x is [tokens][in], y is [tokens][rows]. Each row of W is read once for
/// all tokens. The result for one (t, r) does not depend on the other tokens or on threads.
void matmul(thread_pool* pool, const void* w, dtype wtype, std::int64_t rows, std::int64_t in,
            const float* x, std::int64_t tokens, float* y, const float* bias = nullptr);

/// One product of a matmul_group, with matmul's arguments.
struct matmul_job {
  const void* w = nullptr;
  dtype wtype = dtype::f32;
  std::int64_t rows = 0;
  std::int64_t in = 0;
  const float* x = nullptr;
  std::int64_t tokens = 0;
  float* y = nullptr;
  const float* bias = nullptr;
};

/// Several independent matmuls (q, k and v of a layer; gate and up) split over the pool as one
/// parallel_for, so that a decode step waits for its threads once instead of once per product.
/// Each result is bit for bit what matmul would give.
void matmul_group(thread_pool* pool, std::span<const matmul_job> jobs);

/// out = x / sqrt(mean(x^2) + eps) * weight, n elements.
void rmsnorm(const float* x, const float* weight, std::int64_t n, double eps, float* out) noexcept;

/// Inverse frequencies (head_dim / 2) of RoPE for `cfg`: theta, and "linear" or "llama3" scaling.
[[nodiscard]] std::vector<double> rope_inv_freq(const model_config& cfg);

/// Rotates `heads` heads of `head_dim` in place at `pos` (Hugging Face rotate-half layout).
void rope(float* x, std::int64_t heads, std::int64_t head_dim, std::int64_t pos,
          const std::vector<double>& inv_freq) noexcept;

/// gate[i] = silu(gate[i]) * up[i].
void silu_mul(float* gate, const float* up, std::int64_t n) noexcept;

/// x[i] += y[i].
void add(float* x, const float* y, std::int64_t n) noexcept;

/// out = row `token` of the [vocab][dim] table in `type`, as f32.
void embedding(const void* table, dtype type, std::int64_t dim, std::int64_t token,
               float* out) noexcept;

/// In-place softmax over n elements.
void softmax(float* x, std::int64_t n) noexcept;

/// Dot product of f32 vectors (the attention kernel's inner loop).
[[nodiscard]] float dot(const float* a, const float* b, std::int64_t n) noexcept;
/// y[i] += a * x[i].
void axpy(float a, const float* x, float* y, std::int64_t n) noexcept;

namespace detail {
// The per-path bodies; rows [r0, r1) of a matmul.
void matmul_rows_scalar(const void* w, dtype wtype, std::int64_t rows, std::int64_t in,
                        const float* x, std::int64_t tokens, float* y, const float* bias,
                        std::int64_t r0, std::int64_t r1) noexcept;
void matmul_rows_avx2(const void* w, dtype wtype, std::int64_t rows, std::int64_t in,
                      const float* x, std::int64_t tokens, float* y, const float* bias,
                      std::int64_t r0, std::int64_t r1) noexcept;
float dot_avx2(const float* a, const float* b, std::int64_t n) noexcept;
void axpy_avx2(float a, const float* x, float* y, std::int64_t n) noexcept;
} // namespace detail

} // namespace thaw::host
