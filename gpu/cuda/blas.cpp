#include "gpu/cuda/blas.hpp"

#include "gpu/cuda/cuda_check.hpp"

#include <cublas_v2.h>

#include <algorithm>
#include <limits>
#include <string>

namespace thaw::cuda {

namespace {

error blas_error(cublasStatus_t s, const char* call, const char* file, int line) {
  const errc code = s == CUBLAS_STATUS_ALLOC_FAILED ? errc::resource_exhausted : errc::device_error;
  return make_error(code, std::string(call) + " at " + file + ":" + std::to_string(line) + ": " +
                              cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ")");
}

cudaDataType_t cuda_type(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return CUDA_R_32F;
    case dtype::f16: return CUDA_R_16F;
    case dtype::bf16: return CUDA_R_16BF;
  }
  return CUDA_R_32F;
}

} // namespace

#define THAW_CUBLAS_CHECK(call)                                                                    \
  do {                                                                                             \
    if (const cublasStatus_t thaw_s_ = (call); thaw_s_ != CUBLAS_STATUS_SUCCESS)                   \
      return ::thaw::unexpected(blas_error(thaw_s_, #call, __FILE__, __LINE__));                   \
  } while (false)

struct blas::impl {
  cublasHandle_t handle = nullptr;
  void* workspace = nullptr;
  ~impl() {
    if (handle != nullptr)
      cublasDestroy(handle);
    if (workspace != nullptr)
      cudaFree(workspace);
  }
};

blas::blas(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
blas::blas(blas&&) noexcept = default;
blas& blas::operator=(blas&&) noexcept = default;
blas::~blas() = default;

expected<blas> blas::create(cudaStream_t stream, std::size_t workspace_bytes) {
  auto p = std::make_unique<impl>();
  THAW_CUBLAS_CHECK(cublasCreate(&p->handle));
  THAW_CUBLAS_CHECK(cublasSetStream(p->handle, stream));
  if (workspace_bytes > 0) {
    THAW_CUDA_CHECK(cudaMalloc(&p->workspace, workspace_bytes));
    THAW_CUBLAS_CHECK(cublasSetWorkspace(p->handle, p->workspace, workspace_bytes));
  }
  // Host pointers for alpha and beta; results must not depend on atomics between runs.
  THAW_CUBLAS_CHECK(cublasSetPointerMode(p->handle, CUBLAS_POINTER_MODE_HOST));
  THAW_CUBLAS_CHECK(cublasSetAtomicsMode(p->handle, CUBLAS_ATOMICS_NOT_ALLOWED));
  return blas(std::move(p));
}

status blas::linear(const void* w, dtype type, std::int64_t rows, std::int64_t in,
                    std::int64_t ldw, const void* x, std::int64_t ldx, std::int64_t tokens,
                    float* y, std::int64_t ldy, float beta) {
  // cublasGemmEx takes int sizes: anything wider would be truncated, not refused.
  constexpr std::int64_t int_max = std::numeric_limits<int>::max();
  if (rows <= 0 || in <= 0 || tokens <= 0 || ldw < in || ldx < in || ldy < rows ||
      std::max({rows, in, tokens, ldw, ldx, ldy}) > int_max)
    return make_error(errc::invalid_argument,
                      "blas::linear: bad shape rows " + std::to_string(rows) + " in " +
                          std::to_string(in) + " tokens " + std::to_string(tokens));
  const float alpha = 1.0f;
  // Column-major view: W is [in x rows] (lda = ldw), x is [in x tokens] (ldb = ldx) and y is
  // [rows x tokens] (ldc = ldy); y = W^T x.
  THAW_CUBLAS_CHECK(cublasGemmEx(impl_->handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows),
                                 static_cast<int>(tokens), static_cast<int>(in), &alpha, w,
                                 cuda_type(type), static_cast<int>(ldw), x, cuda_type(type),
                                 static_cast<int>(ldx), &beta, y, CUDA_R_32F,
                                 static_cast<int>(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return {};
}

status blas::gemm(const void* a, const void* b, dtype type, std::int64_t m, std::int64_t n,
                  std::int64_t k, float* c) {
  return linear(a, type, m, k, k, b, k, n, c, m);
}

} // namespace thaw::cuda
