// RMSNorm (kernels.hpp): one CTA per row.
#include "gpu/kernels/kernel_common.cuh"

namespace thaw::cuda::kernels {
namespace {

constexpr int norm_threads = 256;

template <class Out>
__global__ void __launch_bounds__(norm_threads)
    rmsnorm_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows,
                   const float* __restrict__ weight, int64_t H, double eps, Out* __restrict__ out) {
  const int64_t r = blockIdx.x;
  const int64_t src = rows ? rows[r] : r;
  const float* xr = x + src * H;
  // The sum of squares in double, as host::rmsnorm: a long row of large activations keeps its
  // precision, and the scale matches the CPU's to the last bit almost always.
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < H; i += norm_threads) {
    const double v = xr[i];
    ss += v * v;
  }
  __shared__ double partial[norm_threads / 32];
  for (int o = 16; o > 0; o >>= 1)
    ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0)
    partial[threadIdx.x / 32] = ss;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < norm_threads / 32; ++w) // every thread, same order: the same scale
    total += partial[w];
  const float scale = static_cast<float>(1.0 / sqrt(total / static_cast<double>(H) + eps));
  Out* o = out + r * H;
  for (int64_t i = threadIdx.x; i < H; i += norm_threads)
    o[i] = detail::from_f32<Out>(__fmul_rn(__fmul_rn(xr[i], scale), weight[i]));
}

} // namespace

cudaError_t rmsnorm(const float* x, const int32_t* rows, int64_t n_rows, const float* weight,
                    int64_t H, double eps, void* out, dtype out_type, cudaStream_t stream) {
  if (n_rows <= 0 || H <= 0)
    return cudaGetLastError();
  return detail::dispatch(out_type, [&](auto tag) {
    using Out = decltype(tag);
    rmsnorm_kernel<Out><<<static_cast<unsigned>(n_rows), norm_threads, 0, stream>>>(
        x, rows, weight, H, eps, static_cast<Out*>(out));
    return cudaGetLastError();
  });
}

} // namespace thaw::cuda::kernels
