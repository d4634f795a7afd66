#pragma once
/// GPU tests skip, visibly, where there is no GPU (CI): THAW_SKIP_WITHOUT_GPU() at the start of
/// a test reports it as skipped with the reason, never as passed.

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <string>

namespace thaw::testing {

/// "" when a CUDA device can be used, else why not.
inline std::string gpu_missing_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess)
    return std::string("no CUDA device: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
           ")";
  return n > 0 ? std::string() : std::string("no CUDA device: 0 devices");
}

} // namespace thaw::testing

#define THAW_SKIP_WITHOUT_GPU()                                                                    \
  do {                                                                                             \
    if (const std::string thaw_why_ = ::thaw::testing::gpu_missing_reason(); !thaw_why_.empty())   \
      GTEST_SKIP() << thaw_why_;                                                                   \
  } while (false)
