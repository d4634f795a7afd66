// Element-wise kernels (kernels.hpp): embedding, add_bias, rope, kv_write, silu_mul, add,
// convert. All memory bound; grid-stride loops with int64 indices, since T * H and the cache
// offsets pass 2^31 on long prompts and large models.
#include "gpu/kernels/kernel_common.cuh"

namespace thaw::cuda::kernels {
namespace {

using detail::from_f32;
using detail::grid_for;
using detail::to_f32;

constexpr int ew_threads = 256;

__device__ __forceinline__ int64_t global_id() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

template <class T>
__global__ void embedding_kernel(const T* __restrict__ table, int64_t H,
                                 const int32_t* __restrict__ tokens, int64_t T_,
                                 float* __restrict__ out) {
  const int64_t n = T_ * H;
  for (int64_t i = global_id(); i < n; i += grid_stride()) {
    const int64_t t = i / H, c = i - t * H;
    out[i] = to_f32(table[static_cast<int64_t>(tokens[t]) * H + c]);
  }
}

__global__ void add_bias_kernel(float* __restrict__ y, const float* __restrict__ bias, int64_t T_,
                                int64_t n) {
  const int64_t total = T_ * n;
  for (int64_t i = global_id(); i < total; i += grid_stride())
    y[i] = __fadd_rn(y[i], bias[i % n]);
}

// One thread per (token, frequency): the angle in double and its cos / sin are computed once and
// applied to every head, as host::rope_angles does once per token.
__global__ void rope_kernel(float* __restrict__ x, int64_t T_, int64_t heads, int64_t D,
                            const int32_t* __restrict__ pos, const double* __restrict__ inv_freq) {
  const int64_t half = D / 2;
  const int64_t n = T_ * half;
  for (int64_t j = global_id(); j < n; j += grid_stride()) {
    const int64_t t = j / half, i = j - t * half;
    const double angle = static_cast<double>(pos[t]) * inv_freq[i];
    double s_d, c_d;
    sincos(angle, &s_d, &c_d);
    const float c = static_cast<float>(c_d), s = static_cast<float>(s_d);
    float* row = x + t * heads * D;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = row + h * D;
      const float a = v[i], b = v[i + half];
      // Explicit roundings: no fused multiply-add, so the result is the CPU's bit for bit.
      v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
      v[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    }
  }
}

// One CTA per token; its NKV * D keys and values are contiguous in k / v and, per KV head, in
// the cache ([block][kv_head][16][D]).
__global__ void kv_write_kernel(const float* __restrict__ k, const float* __restrict__ v,
                                int64_t NKV, int64_t D, const int32_t* __restrict__ slots,
                                float* __restrict__ k_cache, float* __restrict__ v_cache) {
  const int64_t t = blockIdx.x;
  const int32_t slot = slots[t];
  if (slot < 0)
    return;
  const int64_t block = slot / 16, in_block = slot % 16;
  const int64_t n = NKV * D;
  const float* kt = k + t * n;
  const float* vt = v + t * n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int64_t h = i / D, d = i - h * D;
    const int64_t at = ((block * NKV + h) * 16 + in_block) * D + d;
    k_cache[at] = kt[i];
    v_cache[at] = vt[i];
  }
}

template <class Out>
__global__ void silu_mul_kernel(const float* __restrict__ gate, const float* __restrict__ up,
                                int64_t n, Out* __restrict__ out) {
  for (int64_t i = global_id(); i < n; i += grid_stride()) {
    const float g = gate[i];
    // As host::silu_mul: g / (1 + exp(-g)) * up, each operation rounded on its own.
    const float s = __fdiv_rn(g, __fadd_rn(1.0f, expf(-g)));
    out[i] = from_f32<Out>(__fmul_rn(s, up[i]));
  }
}

__global__ void add_kernel(float* __restrict__ x, const float* __restrict__ y, int64_t n) {
  for (int64_t i = global_id(); i < n; i += grid_stride())
    x[i] = __fadd_rn(x[i], y[i]);
}

template <class In, class Out>
__global__ void convert_kernel(const In* __restrict__ in, Out* __restrict__ out, int64_t n) {
  for (int64_t i = global_id(); i < n; i += grid_stride())
    out[i] = from_f32<Out>(to_f32(in[i]));
}

} // namespace

cudaError_t embedding(const void* table, dtype type, int64_t H, const int32_t* tokens, int64_t T,
                      float* out, cudaStream_t stream) {
  if (T <= 0 || H <= 0)
    return cudaGetLastError();
  return detail::dispatch(type, [&](auto tag) {
    using In = decltype(tag);
    embedding_kernel<In><<<grid_for(T * H, ew_threads), ew_threads, 0, stream>>>(
        static_cast<const In*>(table), H, tokens, T, out);
    return cudaGetLastError();
  });
}

cudaError_t add_bias(float* y, const float* bias, int64_t T, int64_t n, cudaStream_t stream) {
  if (T <= 0 || n <= 0)
    return cudaGetLastError();
  add_bias_kernel<<<grid_for(T * n, ew_threads), ew_threads, 0, stream>>>(y, bias, T, n);
  return cudaGetLastError();
}

cudaError_t rope(float* x, int64_t T, int64_t heads, int64_t D, const int32_t* pos,
                 const double* inv_freq, cudaStream_t stream) {
  if (T <= 0 || heads <= 0 || D < 2)
    return cudaGetLastError();
  rope_kernel<<<grid_for(T * (D / 2), ew_threads), ew_threads, 0, stream>>>(x, T, heads, D, pos,
                                                                            inv_freq);
  return cudaGetLastError();
}

cudaError_t kv_write(const float* k, const float* v, int64_t T, int64_t NKV, int64_t D,
                     const int32_t* slots, float* k_cache, float* v_cache, cudaStream_t stream) {
  if (T <= 0 || NKV <= 0 || D <= 0)
    return cudaGetLastError();
  kv_write_kernel<<<static_cast<unsigned>(T), 128, 0, stream>>>(k, v, NKV, D, slots, k_cache,
                                                                v_cache);
  return cudaGetLastError();
}

cudaError_t silu_mul(const float* gate, const float* up, int64_t n, void* out, dtype out_type,
                     cudaStream_t stream) {
  if (n <= 0)
    return cudaGetLastError();
  return detail::dispatch(out_type, [&](auto tag) {
    using Out = decltype(tag);
    silu_mul_kernel<Out><<<grid_for(n, ew_threads), ew_threads, 0, stream>>>(
        gate, up, n, static_cast<Out*>(out));
    return cudaGetLastError();
  });
}

cudaError_t add(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0)
    return cudaGetLastError();
  add_kernel<<<grid_for(n, ew_threads), ew_threads, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t convert(const void* in, dtype from, void* out, dtype to, int64_t n,
                    cudaStream_t stream) {
  if (n <= 0)
    return cudaGetLastError();
  return detail::dispatch(from, [&](auto in_tag) {
    using In = decltype(in_tag);
    return detail::dispatch(to, [&](auto out_tag) {
      using Out = decltype(out_tag);
      convert_kernel<In, Out><<<grid_for(n, ew_threads), ew_threads, 0, stream>>>(
          static_cast<const In*>(in), static_cast<Out*>(out), n);
      return cudaGetLastError();
    });
  });
}

} // namespace thaw::cuda::kernels
