#pragma once
/// The one check macro for the CUDA runtime, cuBLAS and NCCL (CONVENTIONS.md rule 10): a failed
/// call becomes a `device_error` that records the call, file, line and the library's own error
/// name and text, and is returned from the enclosing function instead of exiting.
///
/// Headers of the CUDA toolkit only: no CAF, no actors.

#include "runtime/common/error.hpp"

#include <cuda_runtime_api.h>

#include <string_view>

namespace thaw::cuda {

/// "cudaMalloc(&p, n) at gpu/cuda/cuda_device.cpp:42: cudaErrorMemoryAllocation (out of
/// memory)"; errc::resource_exhausted for cudaErrorMemoryAllocation, else device_error.
[[nodiscard]] error runtime_error(cudaError_t e, std::string_view call, const char* file,
                                  int line);

} // namespace thaw::cuda

/// Checks a CUDA runtime call returning cudaError_t; on failure returns the error from the
/// enclosing function (which returns `status` or `expected<T>`).
#define THAW_CUDA_CHECK(call)                                                                      \
  do {                                                                                             \
    if (const cudaError_t thaw_cuda_e_ = (call); thaw_cuda_e_ != cudaSuccess)                      \
      return ::thaw::unexpected(                                                                   \
          ::thaw::cuda::runtime_error(thaw_cuda_e_, #call, __FILE__, __LINE__));                   \
  } while (false)
