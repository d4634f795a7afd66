#pragma once
/// Device helpers shared by gpu/kernels/*.cu: element types, rounding stores and the dtype
/// dispatch of the launchers. Included by .cu files only.

#include "gpu/kernels/kernels.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace thaw::cuda::kernels::detail {

/// Widens one stored element to f32 (exact for every type). A NaN keeps its sign and payload,
/// as thaw::f16_to_f32 does (the hardware conversion may return a canonical NaN instead).
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) {
  const unsigned short b = __half_as_ushort(v);
  if ((b & 0x7fffu) > 0x7c00u) // NaN
    return __uint_as_float((static_cast<unsigned>(b & 0x8000u) << 16) | 0x7f800000u |
                           (static_cast<unsigned>(b & 0x3ffu) << 13));
  return __half2float(v);
}

/// Narrows f32 to T, rounding to nearest even as thaw::convert_elements does, NaN included:
/// cvt.rn.{bf16,f16}.f32 turns every NaN into the canonical 0x7fff, while the CPU keeps the
/// sign (and, for bf16, the top of the payload), so NaNs are narrowed by hand.
template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  const unsigned u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) // as thaw::f32_to_bf16: quiet, sign and payload kept
    return __ushort_as_bfloat16(static_cast<unsigned short>((u >> 16) | 0x0040u));
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
  const unsigned u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) // as thaw::f32_to_f16: sign | 0x7e00
    return __ushort_as_half(static_cast<unsigned short>(((u >> 16) & 0x8000u) | 0x7e00u));
  return __float2half_rn(v);
}

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
