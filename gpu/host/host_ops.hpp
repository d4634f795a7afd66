#pragma once
/// CPU compute kernels for the host model runner (ARCHITECTURE.md section 6): matrix-vector
/// products over f32/bf16/f16 weights with f32 activations and f32 accumulation, RMSNorm, RoPE,
/// SwiGLU, residual add, embedding lookup and softmax. Each kernel with a SIMD body has an AVX-512
/// version, an AVX2 (+FMA, F16C) version and a scalar version, the best the CPU runs chosen at run
/// time; `set_kernel_path` forces one so that tests can compare them.

#include "runtime/checkpoint/model_config.hpp"
#include "gpu/host/thread_pool.hpp"
#include "runtime/common/dtype.hpp"

#include <cstdint>
#include <functional>
#include <new>
#include <span>
#include <string_view>
#include <vector>

namespace thaw::host {

/// Allocates on 64-byte boundaries. Activations the kernels read 8 floats at a time go in these:
/// from malloc's 16-byte alignment, half of the 32-byte loads of a token's row straddle a cache
/// line, and a batch-8 lm_head product took 1.66 ms instead of 1.34 ms (stories15m).
template <class T>
struct cache_aligned_allocator {
  using value_type = T;
  cache_aligned_allocator() noexcept = default;
  template <class U>
  cache_aligned_allocator(const cache_aligned_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64}));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{64}); }
  template <class U>
  bool operator==(const cache_aligned_allocator<U>&) const noexcept { return true; }
};

/// f32 activations on cache-line boundaries.
using activations = std::vector<float, cache_aligned_allocator<float>>;

/// The bodies the SIMD kernels run.
enum class kernel_path : std::uint8_t {
  scalar = 0,
  /// 8 lanes: AVX2, FMA, F16C.
  avx2 = 1,
  /// 16 lanes: AVX-512F (with FMA and F16C).
  avx512 = 2,
  /// A test path: the avx512 path's 16-lane code compiled for AVX2 (each 16-float vector held as
  /// two 8-float halves), so that a CPU without AVX-512 runs and checks that algorithm: its tiles,
  /// tails, summation order, exp and bf16/f16 loads. The same operations in the same order as the
  /// avx512 path, so the same results, at about AVX2 speed; never chosen by default.
  w16_emulated = 3,
};

/// "scalar", "avx2", "avx512" or "w16_emulated".
[[nodiscard]] std::string_view kernel_path_name(kernel_path p) noexcept;

/// True when this CPU has AVX2, FMA and F16C (and the build has the AVX2 file).
[[nodiscard]] bool avx2_available() noexcept;
/// True when this CPU (and its OS) has AVX-512F besides what avx2_available needs, and the build
/// has the AVX-512 file.
[[nodiscard]] bool avx512_available() noexcept;
/// The path kernels use now: by default avx512 when available, else avx2 when available, else
/// scalar.
[[nodiscard]] kernel_path active_kernel_path() noexcept;
/// Forces a path, process-wide; for tests and benchmarks. A path this CPU cannot run falls back:
/// avx512 to avx2, then scalar; avx2 and w16_emulated to scalar.
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

/// cos then sin of RoPE's angles at `pos` (2 * inv_freq.size() floats into `cos_sin`). A forward
/// computes them once per token and rotates every layer's q and k with them.
void rope_angles(std::int64_t pos, const std::vector<double>& inv_freq, float* cos_sin) noexcept;

/// Rotates `heads` heads of `head_dim` in place by the angles rope_angles gave (Hugging Face
/// rotate-half layout).
void rope(float* x, std::int64_t heads, std::int64_t head_dim, const float* cos_sin) noexcept;


/// gate[i] = silu(gate[i]) * up[i].
void silu_mul(float* gate, const float* up, std::int64_t n) noexcept;

/// x[i] += y[i].
void add(float* x, const float* y, std::int64_t n) noexcept;

/// out = row `token` of the [vocab][dim] table in `type`, as f32.
void embedding(const void* table, dtype type, std::int64_t dim, std::int64_t token,
               float* out) noexcept;

/// In-place softmax over n elements.
void softmax(float* x, std::int64_t n) noexcept;

/// Attention scores against a run of `n` cached keys stored back to back (one KV block of a head):
/// out[p] = scale * dot(q, rows + p * d), d elements each. Each score is summed in the same order
/// whatever n, so a token's attention does not depend on how its positions fall into blocks.
void dot_rows(const float* q, const float* rows, std::int64_t n, std::int64_t d, float scale,
              float* out) noexcept;
/// The values' half: out[i] += sum over p < n of w[p] * rows[p * d + i], p in order, one fused
/// multiply-add per term.
void axpy_rows(const float* w, const float* rows, std::int64_t n, std::int64_t d,
               float* out) noexcept;

/// Asks the cache for [p, p + bytes) ahead of use (a hint; no effect on results).
inline void prefetch(const void* p, std::size_t bytes) noexcept {
  const auto* c = static_cast<const char*>(p);
  for (std::size_t off = 0; off < bytes; off += 64)
    __builtin_prefetch(c + off);
}

namespace detail {
// The per-path bodies; rows [r0, r1) of a matmul.
void matmul_rows_scalar(const void* w, dtype wtype, std::int64_t rows, std::int64_t in,
                        const float* x, std::int64_t tokens, float* y, const float* bias,
                        std::int64_t r0, std::int64_t r1) noexcept;
void matmul_rows_avx2(const void* w, dtype wtype, std::int64_t rows, std::int64_t in,
                      const float* x, std::int64_t tokens, float* y, const float* bias,
                      std::int64_t r0, std::int64_t r1) noexcept;
void dot_rows_scalar(const float* q, const float* rows, std::int64_t n, std::int64_t d,
                     float scale, float* out) noexcept;
void axpy_rows_scalar(const float* w, const float* rows, std::int64_t n, std::int64_t d,
                      float* out) noexcept;
void silu_mul_scalar(float* gate, const float* up, std::int64_t n) noexcept;
void softmax_scalar(float* x, std::int64_t n) noexcept;
void exp_scalar(float* x, std::int64_t n) noexcept;
void silu_mul_avx2(float* gate, const float* up, std::int64_t n) noexcept;
void softmax_avx2(float* x, std::int64_t n) noexcept;
void dot_rows_avx2(const float* q, const float* rows, std::int64_t n, std::int64_t d, float scale,
                   float* out) noexcept;
void axpy_rows_avx2(const float* w, const float* rows, std::int64_t n, std::int64_t d,
                    float* out) noexcept;
void exp_avx2(float* x, std::int64_t n) noexcept;
// The 16-lane bodies (host_ops_w16.inc), compiled for AVX-512 and, as a test path, for AVX2.
void matmul_rows_avx512(const void* w, dtype wtype, std::int64_t rows, std::int64_t in,
                        const float* x, std::int64_t tokens, float* y, const float* bias,
                        std::int64_t r0, std::int64_t r1) noexcept;
void dot_rows_avx512(const float* q, const float* rows, std::int64_t n, std::int64_t d,
                     float scale, float* out) noexcept;
void axpy_rows_avx512(const float* w, const float* rows, std::int64_t n, std::int64_t d,
                      float* out) noexcept;
void silu_mul_avx512(float* gate, const float* up, std::int64_t n) noexcept;
void softmax_avx512(float* x, std::int64_t n) noexcept;
void exp_avx512(float* x, std::int64_t n) noexcept;
void matmul_rows_w16_avx2(const void* w, dtype wtype, std::int64_t rows, std::int64_t in,
                          const float* x, std::int64_t tokens, float* y, const float* bias,
                          std::int64_t r0, std::int64_t r1) noexcept;
void dot_rows_w16_avx2(const float* q, const float* rows, std::int64_t n, std::int64_t d,
                       float scale, float* out) noexcept;
void axpy_rows_w16_avx2(const float* w, const float* rows, std::int64_t n, std::int64_t d,
                        float* out) noexcept;
void silu_mul_w16_avx2(float* gate, const float* up, std::int64_t n) noexcept;
void softmax_w16_avx2(float* x, std::int64_t n) noexcept;
void exp_w16_avx2(float* x, std::int64_t n) noexcept;

/// x[i] = e^x[i] with the active path's exponential (the one under softmax and silu_mul), so that
/// tests can measure its error.
void exp_inplace(float* x, std::int64_t n) noexcept;
} // namespace detail

} // namespace thaw::host
