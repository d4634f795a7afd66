// The sampler (kernels.hpp): one CTA per row of logits, thaw::sample's semantics without a sort.
//
// The candidates' order is (logit descending, id ascending). Every set the CPU sampler keeps
// (top_k, top_p's head, min_p's survivors) is a prefix of that order, so a set is named by its
// last element, a "boundary" (key, id), where key is the logit's bit pattern mapped to an
// unsigned integer that grows with the value. A boundary is found by bisection over the keys:
// each step one pass over the row (from L2) with a block reduction, in double, of the mass (or
// the count) of the elements at or above the middle key; the elements tied at the found key are
// then scanned in id order. The weights exp((l - max) / T) are recomputed in each pass in f32,
// as the CPU computes them, rather than stored: a 128k vocabulary does not fit in shared memory.
#include "gpu/kernels/kernel_common.cuh"
#include "gpu/kernels/sample_order.hpp"
#include "gpu/kernels/sample_rng.hpp"

#include <cfloat>
#include <cstdint>

namespace thaw::cuda::kernels {
namespace {

constexpr int sample_threads = 512;
constexpr int sample_warps = sample_threads / 32;
constexpr int64_t no_index = INT64_MAX;

struct sum_op {
  template <class T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct min_op {
  template <class T>
  __device__ T operator()(T a, T b) const { return b < a ? b : a; }
};
struct max_op {
  template <class T>
  __device__ T operator()(T a, T b) const { return b > a ? b : a; }
};

/// Reduces v over the CTA; every thread gets the result. The tree is fixed, so a double sum is
/// the same on every run.
template <class T, class Op>
__device__ T block_reduce(T v, Op op, T identity) {
  __shared__ T buf[sample_warps + 1];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (lane == 0)
    buf[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T x = lane < sample_warps ? buf[lane] : identity;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
      x = op(x, __shfl_xor_sync(0xffffffffu, x, o));
    if (lane == 0)
      buf[sample_warps] = x;
  }
  __syncthreads();
  const T r = buf[sample_warps];
  __syncthreads(); // buf is reused by the next call
  return r;
}

/// Exclusive prefix sum of v over the CTA in thread order; *total gets the sum of all.
__device__ double block_exclusive_scan(double v, double* total) {
  __shared__ double wsum[sample_warps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o)
      x += y;
  }
  double excl = __shfl_up_sync(0xffffffffu, x, 1);
  if (lane == 0)
    excl = 0.0;
  if (lane == 31)
    wsum[warp] = x;
  __syncthreads();
  double before = 0.0, all = 0.0;
  for (int w = 0; w < sample_warps; ++w) { // same order in every thread
    if (w < warp)
      before += wsum[w];
    all += wsum[w];
  }
  __syncthreads();
  *total = all;
  return before + excl;
}

using boundary = sample_boundary;
__device__ __forceinline__ uint32_t order_key(float v) { return sample_order_key(v); }
__device__ __forceinline__ bool in_prefix(uint32_t key, int64_t id, boundary b) {
  return sample_in_prefix(key, id, b);
}
__device__ __forceinline__ boundary earliest(boundary a, boundary b) {
  return sample_earliest(a, b);
}

/// One row and its temperature: the weight of element i as thaw::sample computes it.
struct row_view {
  const float* l;
  int64_t V;
  float max;
  float inv_t;
  __device__ float weight(float v) const {
    return expf(__fmul_rn(__fsub_rn(v, max), inv_t));
  }
};

/// Sum over elements with sel(key, id) of their weight (or 1 when !weighted).
template <class Sel>
__device__ double masked_sum(const row_view& r, bool weighted, Sel sel) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < r.V; i += sample_threads) {
    const float v = r.l[i];
    if (sel(order_key(v), i))
      s += weighted ? static_cast<double>(r.weight(v)) : 1.0;
  }
  return block_reduce(s, sum_op{}, 0.0);
}

/// In id order over the elements with sel(key, id): the first whose running sum (from `base`,
/// of weights, or counts when !weighted) is >= x (> x when strict); -1 when none.
template <class Sel>
__device__ int64_t scan_first(const row_view& r, bool weighted, Sel sel, double base, double x,
                              bool strict) {
  constexpr int per_thread = 4;
  constexpr int64_t tile = static_cast<int64_t>(sample_threads) * per_thread;
  double carry = base;
  for (int64_t t0 = 0; t0 < r.V; t0 += tile) {
    double a[per_thread];
    double local = 0.0;
#pragma unroll
    for (int k = 0; k < per_thread; ++k) {
      const int64_t i = t0 + threadIdx.x * per_thread + k;
      a[k] = -1.0; // not selected
      if (i < r.V) {
        const float v = r.l[i];
        if (sel(order_key(v), i)) {
          a[k] = weighted ? static_cast<double>(r.weight(v)) : 1.0;
          local += a[k];
        }
      }
    }
    double tile_total;
    double acc = carry + block_exclusive_scan(local, &tile_total);
    int64_t found = no_index;
#pragma unroll
    for (int k = 0; k < per_thread; ++k) {
      if (a[k] >= 0.0 && found == no_index) {
        acc += a[k];
        if (strict ? acc > x : acc >= x)
          found = t0 + threadIdx.x * per_thread + k;
      }
    }
    found = block_reduce(found, min_op{}, no_index);
    if (found != no_index)
      return found;
    carry += tile_total;
  }
  return -1;
}

/// The first element of the order (key descending, id ascending) at which the running sum of
/// weights (counts when !weighted) is >= x (> x when strict). found = false when the whole row
/// does not get there.
__device__ boundary select(const row_view& r, bool weighted, double x, bool strict,
                           bool* found) {
  const auto pass = [&](double m) { return strict ? m > x : m >= x; };
  // Bisection for the largest key t with mass(key >= t) passing: the mass is a non-increasing
  // step function of t (a double sum of non-negative terms over a shrinking set, in a fixed
  // tree, is monotone), so t is the key of the element where the sum crosses x.
  const uint64_t top = static_cast<uint64_t>(order_key(r.max)) + 1; // nothing at or above
  uint64_t lo = 0, hi = top;
  double mass_hi = 0.0; // mass(key >= hi)
  const double all = masked_sum(r, weighted, [](uint32_t, int64_t) { return true; });
  if (!pass(all)) {
    *found = false;
    return {0, 0};
  }
  while (hi - lo > 1) {
    const uint64_t mid = lo + (hi - lo) / 2;
    const auto t = static_cast<uint32_t>(mid);
    const double m = masked_sum(r, weighted, [t](uint32_t k, int64_t) { return k >= t; });
    if (pass(m)) {
      lo = mid;
    } else {
      hi = mid;
      mass_hi = m;
    }
  }
  const auto key = static_cast<uint32_t>(lo);
  const auto tie = [key](uint32_t k, int64_t) { return k == key; };
  int64_t id = scan_first(r, weighted, tie, mass_hi, x, strict);
  if (id < 0) { // rounding between the two sums: the last of the ties
    int64_t last = -1;
    for (int64_t i = threadIdx.x; i < r.V; i += sample_threads)
      if (order_key(r.l[i]) == key)
        last = i;
    id = block_reduce(last, max_op{}, int64_t{-1});
  }
  *found = true;
  return {key, id};
}

__global__ void __launch_bounds__(sample_threads)
    sample_kernel(const float* __restrict__ logits, int64_t V,
                  const sample_request* __restrict__ reqs, sample_output* __restrict__ outs) {
  const int64_t row = blockIdx.x;
  const float* l = logits + row * V;
  const sample_request req = reqs[row];
  sample_output res;

  // The maximum and the first NaN.
  float mx = -INFINITY;
  int64_t nan_at = no_index;
  for (int64_t i = threadIdx.x; i < V; i += sample_threads) {
    const float v = l[i];
    if (v != v)
      nan_at = min(nan_at, i);
    else
      mx = fmaxf(mx, v);
  }
  nan_at = block_reduce(nan_at, min_op{}, no_index);
  mx = block_reduce(mx, max_op{}, -INFINITY);
  if (nan_at != no_index) {
    res.status = sample_status::nan_logit;
    res.nan_index = static_cast<int32_t>(nan_at);
  } else if (mx == -INFINITY) {
    res.status = sample_status::all_neg_inf;
  }
  if (res.status != sample_status::ok) {
    if (threadIdx.x == 0)
      outs[row] = res;
    return;
  }
  int64_t best = no_index;
  for (int64_t i = threadIdx.x; i < V; i += sample_threads)
    if (l[i] == mx) {
      best = i;
      break;
    }
  best = block_reduce(best, min_op{}, no_index);

  int64_t pick = best;
  if (req.temperature != 0.0f) {
    const row_view r{l, V, mx, __fdiv_rn(1.0f, req.temperature)};
    const auto all = [](uint32_t, int64_t) { return true; };
    const double total = masked_sum(r, true, all);
    const bool top_k_on = req.top_k > 0 && static_cast<int64_t>(req.top_k) < V;
    const bool filtered = top_k_on || req.top_p < 1.0f || req.min_p > 0.0f;
    const double u = sample_uniform(req.seed, req.counter);
    if (!filtered) {
      // Inverse CDF over every id in id order, skipping zero weights, as the CPU does.
      const float max_v = mx, inv_t = r.inv_t;
      const auto nonzero = [l, max_v, inv_t](uint32_t, int64_t i) {
        return expf(__fmul_rn(__fsub_rn(l[i], max_v), inv_t)) != 0.0f;
      };
      pick = scan_first(r, true, nonzero, 0.0, u * total, true);
      if (pick < 0) { // rounding: the last id with a weight
        int64_t last = -1;
        for (int64_t i = threadIdx.x; i < V; i += sample_threads)
          if (r.weight(l[i]) != 0.0f)
            last = i;
        pick = block_reduce(last, max_op{}, int64_t{-1});
      }
    } else {
      bool capped = false, found = false;
      boundary cap{0, 0};
      double head_mass = total;
      if (top_k_on) {
        cap = select(r, false, static_cast<double>(req.top_k), false, &found);
        capped = found; // always: k < V elements
        head_mass = masked_sum(r, true, [cap](uint32_t k, int64_t i) { return in_prefix(k, i, cap); });
      }
      if (req.top_p < 1.0f) {
        // top_p of the renormalised top_k when on (vLLM's order), else of everything.
        const boundary b =
            select(r, true, static_cast<double>(req.top_p) * head_mass, false, &found);
        if (found) {
          cap = capped ? earliest(cap, b) : b;
          capped = true;
        }
      }
      if (req.min_p > 0.0f) {
        // The ids with weight >= min_p (p / p_max at temperature T) are a prefix of the order;
        // its last element: the smallest such key, then the largest id there.
        const float min_p = req.min_p;
        uint32_t kmin = UINT32_MAX;
        for (int64_t i = threadIdx.x; i < V; i += sample_threads) {
          const float v = l[i];
          if (r.weight(v) >= min_p)
            kmin = min(kmin, order_key(v));
        }
        kmin = block_reduce(kmin, min_op{}, UINT32_MAX);
        int64_t last = -1;
        for (int64_t i = threadIdx.x; i < V; i += sample_threads) {
          const float v = l[i];
          if (order_key(v) == kmin && r.weight(v) >= min_p)
            last = i;
        }
        last = block_reduce(last, max_op{}, int64_t{-1});
        const boundary b{kmin, last};
        cap = capped ? earliest(cap, b) : b;
        capped = true;
      }
      const double keep_mass =
          capped ? masked_sum(r, true, [cap](uint32_t k, int64_t i) { return in_prefix(k, i, cap); })
                 : total;
      const boundary e = select(r, true, u * keep_mass, true, &found);
      if (found)
        pick = capped ? earliest(e, cap).id : e.id;
      else
        pick = capped ? cap.id : best; // the CPU's last kept candidate
    }
  }

  if (req.want_logprob) {
    double z = 0.0;
    for (int64_t i = threadIdx.x; i < V; i += sample_threads)
      z += static_cast<double>(expf(__fsub_rn(l[i], mx)));
    z = block_reduce(z, sum_op{}, 0.0);
    const double log_z = log(z) + static_cast<double>(mx);
    res.logprob = static_cast<float>(static_cast<double>(l[pick]) - log_z);
  }
  res.token = static_cast<int32_t>(pick);
  if (threadIdx.x == 0)
    outs[row] = res;
}

} // namespace

cudaError_t sample(const float* logits, int64_t rows, int64_t V, const sample_request* req,
                   sample_output* out, cudaStream_t stream) {
  if (rows <= 0 || V <= 0)
    return cudaGetLastError();
  sample_kernel<<<static_cast<unsigned>(rows), sample_threads, 0, stream>>>(logits, V, req, out);
  return cudaGetLastError();
}

} // namespace thaw::cuda::kernels
