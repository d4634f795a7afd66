#pragma once
/// The GEMMs of the forward pass through cuBLAS (ARCHITECTURE.md section 6): a linear layer
/// y = x W^T with W [rows][in] row-major as stored in the checkpoint, x and W of one element type
/// (f32, bf16 or f16) and y in f32, accumulated in f32 (CUBLAS_COMPUTE_32F: no TF32 shortcut for
/// f32 weights). One handle per stream, with a workspace of its own so that cuBLAS never
/// allocates while a CUDA graph is being captured.

#include "runtime/common/dtype.hpp"
#include "runtime/common/error.hpp"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

namespace thaw::cuda {

class blas {
public:
  /// A handle bound to `stream` (not owned) with `workspace_bytes` of workspace.
  [[nodiscard]] static expected<blas> create(cudaStream_t stream,
                                             std::size_t workspace_bytes = 32u << 20);
  blas(blas&&) noexcept;
  blas& operator=(blas&&) noexcept;
  ~blas();

  /// y[t][r] = beta * y[t][r] + sum_i x[t][i] * W[r][i] for t < tokens, r < rows. W's rows are
  /// `ldw` elements apart (ldw >= in: a column slice of a wider matrix, as a row-parallel shard
  /// is), x's rows `ldx` apart (>= in), y's rows `ldy` apart (>= rows). `type` is W's and x's
  /// element type. `invalid_argument` for bad sizes; cuBLAS errors as device_error.
  [[nodiscard]] status linear(const void* w, dtype type, std::int64_t rows, std::int64_t in,
                              std::int64_t ldw, const void* x, std::int64_t ldx,
                              std::int64_t tokens, float* y, std::int64_t ldy, float beta = 0.0f);

  /// A plain GEMM c[j][i] = sum over l of a[i][l] * b[j][l] (a [m][k], b [n][k], c [n][m]) in
  /// `type` with f32 output: 2 m n k flops, the reference a benchmark's prefill TFLOP/s is
  /// compared with.
  [[nodiscard]] status gemm(const void* a, const void* b, dtype type, std::int64_t m,
                            std::int64_t n, std::int64_t k, float* c);

private:
  struct impl;
  explicit blas(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace thaw::cuda
