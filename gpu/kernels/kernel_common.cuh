#pragma once
/// Device helpers shared by gpu/kernels/*.cu: element types, rounding stores and the dtype
/// dispatch of the launchers. Included by .cu files only.

#include "gpu/kernels/kernels.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace thaw::cuda::kernels::detail {

/// Widens one stored element to f32 (exact for every type).
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

/// Narrows f32 to T, rounding to nearest even as thaw::convert_elements does.
template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

/// Blocks for a grid-stride loop over n elements: enough to fill an H100 several times over,
/// never more than the work needs.
inline unsigned grid_for(std::int64_t n, int threads) {
  const std::int64_t want = (n + threads - 1) / threads;
  const std::int64_t cap = 132 * 16;
  return static_cast<unsigned>(want < 1 ? 1 : (want > cap ? cap : want));
}

/// Calls f(T{}) with T the C++ type of `t` (float, __nv_bfloat16, __half).
template <class F>
cudaError_t dispatch(dtype t, F&& f) {
  switch (t) {
  case dtype::f32:
    return f(float{});
  case dtype::bf16:
    return f(__nv_bfloat16{});
  case dtype::f16:
    return f(__half{});
  }
  return cudaErrorInvalidValue;
}

} // namespace thaw::cuda::kernels::detail
