// Paged causal attention (kernels.hpp): prefill tiles and decode. Scores live in the log2
// domain (scale * log2(e) folded into the dot product) so every exponential is one exp2f;
// the softmax is online, in f32, as in flash attention.
//
// Positions outside a query's range [lo, pos] are masked by selection, never by arithmetic,
// and their values are never multiplied: the cache past the last written position (and before
// a sliding window) may hold anything, NaN included.
#include "gpu/kernels/attention_merge.hpp"
#include "gpu/kernels/kernel_common.cuh"

#include <algorithm>
#include <climits>

namespace thaw::cuda::kernels {
namespace {

using detail::from_f32;

constexpr int kv_block = 16;       // positions per KV block (runtime kv_block_tokens)
constexpr float log2e = 1.4426950408889634f;

__device__ __forceinline__ int32_t window_lo(int32_t pos, int32_t window) {
  return window > 0 ? max(0, pos - window + 1) : 0;
}

// ---- prefill ----------------------------------------------------------------------------
//
// One CTA per (tile, query head), 128 threads: thread (r, c) = (tid / 8, tid % 8) owns query
// row r of the tile; for the scores it computes keys c and c + 8 of the current KV block, for the
// output it owns columns c, c + 8, c + 16, ... (NJ of them, NJ * 8 >= D). The tile's queries,
// the block's keys and values and the probabilities go through shared memory; keys and queries
// with a row stride of D + 2 floats, so that the eight float2 reads of different keys fall in
// different banks.

constexpr int prefill_threads = 128;

inline std::size_t prefill_smem_bytes(int64_t D) {
  return static_cast<std::size_t>(2 * kv_block * (D + 2) + kv_block * D + kv_block * kv_block) *
         sizeof(float);
}

template <int NJ, class Out>
__global__ void __launch_bounds__(prefill_threads)
    attention_prefill_kernel(const float* __restrict__ q, const float* __restrict__ k_cache,
                             const float* __restrict__ v_cache,
                             const attention_tile* __restrict__ tiles,
                             const int32_t* __restrict__ pos,
                             const int32_t* __restrict__ block_tables, int32_t MB, int32_t NH,
                             int32_t NKV, int32_t D, int32_t window, float scale_log2,
                             Out* __restrict__ out) {
  extern __shared__ float4 smem_raw[];
  float* smem = reinterpret_cast<float*>(smem_raw);
  const int ldq = D + 2;
  float* s_q = smem;
  float* s_k = s_q + kv_block * ldq;
  float* s_v = s_k + kv_block * ldq;
  float* s_p = s_v + kv_block * D;

  const attention_tile tile = tiles[blockIdx.x];
  const int32_t h = static_cast<int32_t>(blockIdx.y);
  const int32_t kvh = h / (NH / NKV);
  const int tid = static_cast<int>(threadIdx.x);
  const int r = tid >> 3, c = tid & 7;
  const int32_t count = min(tile.count, prefill_tile_tokens);
  const int half_d = D / 2;

  // The tile's range of positions: the union of its rows' [lo, pos] (rows at pos < 0 are
  // padding and attend to nothing).
  int32_t tile_lo = INT_MAX, tile_hi = -1;
  for (int i = 0; i < count; ++i) {
    const int32_t p = pos[tile.first_token + i];
    if (p >= 0) {
      tile_lo = min(tile_lo, window_lo(p, window));
      tile_hi = max(tile_hi, p);
    }
  }
  const int32_t my_pos = r < count ? pos[tile.first_token + r] : -1;
  const int32_t my_lo = window_lo(my_pos, window);

  for (int i = tid; i < kv_block * half_d; i += prefill_threads) {
    const int row = i / half_d, col = 2 * (i - row * half_d);
    float2 v = make_float2(0.0f, 0.0f);
    if (row < count)
      v = *reinterpret_cast<const float2*>(
          q + (static_cast<int64_t>(tile.first_token + row) * NH + h) * D + col);
    *reinterpret_cast<float2*>(s_q + row * ldq + col) = v;
  }

  float acc[NJ];
#pragma unroll
  for (int j = 0; j < NJ; ++j)
    acc[j] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  const int32_t* table = block_tables + static_cast<int64_t>(tile.item) * MB;
  const int32_t b_first = tile_hi >= 0 ? tile_lo / kv_block : 0;
  const int32_t b_last = tile_hi >= 0 ? tile_hi / kv_block : -1;
  for (int32_t b = b_first; b <= b_last; ++b) {
    __syncthreads(); // the previous block's keys, values and the queries' load are done with
    const int64_t base = (static_cast<int64_t>(table[b]) * NKV + kvh) * kv_block * D;
    for (int i = tid; i < kv_block * half_d; i += prefill_threads) {
      const int row = i / half_d, col = 2 * (i - row * half_d);
      const int32_t p = b * kv_block + row;
      float2 kk = make_float2(0.0f, 0.0f), vv = kk;
      if (p >= tile_lo && p <= tile_hi) {
        kk = *reinterpret_cast<const float2*>(k_cache + base + row * D + col);
        vv = *reinterpret_cast<const float2*>(v_cache + base + row * D + col);
      }
      *reinterpret_cast<float2*>(s_k + row * ldq + col) = kk;
      *reinterpret_cast<float2*>(s_v + row * D + col) = vv;
    }
    __syncthreads();

    float s0 = 0.0f, s1 = 0.0f;
    const float* qr = s_q + r * ldq;
    const float* k0 = s_k + c * ldq;
    const float* k1 = s_k + (c + 8) * ldq;
#pragma unroll 4
    for (int d = 0; d < D; d += 2) {
      const float2 qq = *reinterpret_cast<const float2*>(qr + d);
      const float2 a = *reinterpret_cast<const float2*>(k0 + d);
      const float2 e = *reinterpret_cast<const float2*>(k1 + d);
      s0 = fmaf(qq.x, a.x, fmaf(qq.y, a.y, s0));
      s1 = fmaf(qq.x, e.x, fmaf(qq.y, e.y, s1));
    }
    const int32_t p0 = b * kv_block + c, p1 = p0 + 8;
    s0 = (my_pos >= 0 && p0 >= my_lo && p0 <= my_pos) ? s0 * scale_log2 : -INFINITY;
    s1 = (my_pos >= 0 && p1 >= my_lo && p1 <= my_pos) ? s1 * scale_log2 : -INFINITY;

    // The row's 16 scores are spread over its 8 threads (consecutive lanes of one warp).
    float mx = fmaxf(s0, s1);
#pragma unroll
    for (int o = 4; o > 0; o >>= 1)
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float m_new = fmaxf(m, mx);
    float e0 = 0.0f, e1 = 0.0f, alpha = 1.0f;
    if (m_new != -INFINITY) { // else nothing of this row so far: keep zeros
      e0 = exp2f(s0 - m_new);
      e1 = exp2f(s1 - m_new);
      alpha = exp2f(m - m_new);
    }
    float sum = e0 + e1;
#pragma unroll
    for (int o = 4; o > 0; o >>= 1)
      sum += __shfl_xor_sync(0xffffffffu, sum, o);
    l = l * alpha + sum;
    m = m_new;
    s_p[r * kv_block + c] = e0;
    s_p[r * kv_block + c + 8] = e1;
    __syncwarp();
#pragma unroll
    for (int j = 0; j < NJ; ++j)
      acc[j] *= alpha;
#pragma unroll 4
    for (int key = 0; key < kv_block; ++key) {
      const float pk = s_p[r * kv_block + key];
      const float* vr = s_v + key * D;
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        const int d = c + 8 * j;
        if (d < D)
          acc[j] = fmaf(pk, vr[d], acc[j]);
      }
    }
  }

  if (r < count) {
    Out* o = out + (static_cast<int64_t>(tile.first_token + r) * NH + h) * D;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const int d = c + 8 * j;
      if (d < D)
        o[d] = from_f32<Out>(acc[j] * inv);
    }
  }
}

template <int NJ, class Out>
cudaError_t launch_prefill(const float* q, const float* k_cache, const float* v_cache,
                           const attention_tile* tiles, int64_t n_tiles, const int32_t* pos,
                           const int32_t* block_tables, int32_t MB, int64_t NH, int64_t NKV,
                           int64_t D, int32_t window, float scale, Out* out, cudaStream_t stream) {
  const std::size_t smem = prefill_smem_bytes(D);
  auto* kernel = attention_prefill_kernel<NJ, Out>;
  if (smem > 48 * 1024) {
    // Only D >= 250 needs more than the default 48 KiB (48 D + 320 floats; H100: up to
    // 227 KiB per CTA). Prefill is never captured in a CUDA graph, so setting it here is safe.
    if (const cudaError_t e = cudaFuncSetAttribute(
            kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
        e != cudaSuccess)
      return e;
  }
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(NH));
  kernel<<<grid, prefill_threads, smem, stream>>>(
      q, k_cache, v_cache, tiles, pos, block_tables, MB, static_cast<int32_t>(NH),
      static_cast<int32_t>(NKV), static_cast<int32_t>(D), window, scale * log2e, out);
  return cudaGetLastError();
}

// ---- decode -----------------------------------------------------------------------------
//
// Flash decoding: an item's KV blocks are cut into P partitions of part_blocks blocks
// (decode_split_for), one CTA per (query head, item, partition), so that one long sequence is
// read by many SMs. P comes from the launch's shape alone, never from the positions, so a CUDA
// graph captured for a shape stays right for every batch of it. A CTA's warps take its blocks in
// turn (warp w: blocks w, w + warps, ...), each with its own online softmax, merged through
// shared memory at the end (attention_merge.hpp). With P = 1 the CTA writes the output itself;
// otherwise it writes its partial (m, l, unnormalised accumulator) to the scratch and
// attention_decode_merge_kernel merges each (item, head)'s P partials. Inside a warp, lane L
// owns the float2 columns 2L + 64j (NJ of them, NJ * 64 >= D), so every key and value row is
// one coalesced read; the 16 partial dot products of a block are summed across the warp by a
// reduce-scatter butterfly (16 shuffles instead of 16 x 5), which leaves position L / 2's score
// in lane L.

__device__ __forceinline__ float block_scores(float (&v)[16], int lane) {
  const unsigned full = 0xffffffffu;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const bool up = lane & 16;
    const float send = up ? v[i] : v[i + 8];
    const float keep = up ? v[i + 8] : v[i];
    v[i] = keep + __shfl_xor_sync(full, send, 16);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const bool up = lane & 8;
    const float send = up ? v[i] : v[i + 4];
    const float keep = up ? v[i + 4] : v[i];
    v[i] = keep + __shfl_xor_sync(full, send, 8);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const bool up = lane & 4;
    const float send = up ? v[i] : v[i + 2];
    const float keep = up ? v[i + 2] : v[i];
    v[i] = keep + __shfl_xor_sync(full, send, 4);
  }
  {
    const bool up = lane & 2;
    const float send = up ? v[0] : v[1];
    const float keep = up ? v[1] : v[0];
    v[0] = keep + __shfl_xor_sync(full, send, 2);
  }
  return v[0] + __shfl_xor_sync(full, v[0], 1);
}

constexpr int decode_max_threads = 512;

// Two CTAs of 16 warps per SM for D <= 192, which caps the registers at 64 (ptxas otherwise
// picks anywhere from 64 to over 100 as the code changes, halving the warps an SM holds, and
// the loads in flight with them, for a few spilled bytes). D > 192 keeps one CTA: 64 registers
// would spill its NJ = 4 accumulators.
template <int NJ>
constexpr int decode_min_ctas = NJ <= 3 ? 2 : 1;

// part_ml / part_acc: null for P = 1, else the partials, (m, l) pairs [S][NH][P][2] and
// accumulators [S][NH][P][D].
template <int NJ, class Out>
__global__ void __launch_bounds__(decode_max_threads, decode_min_ctas<NJ>)
    attention_decode_kernel(const float* __restrict__ q, const float* __restrict__ k_cache,
                            const float* __restrict__ v_cache, const int32_t* __restrict__ pos,
                            const int32_t* __restrict__ block_tables, int32_t MB, int32_t NH,
                            int32_t NKV, int32_t D, int32_t window, float scale_log2,
                            int32_t part_blocks, Out* __restrict__ out,
                            float* __restrict__ part_ml, float* __restrict__ part_acc) {
  extern __shared__ float4 smem_raw[];
  float* smem = reinterpret_cast<float*>(smem_raw);
  const int32_t h = static_cast<int32_t>(blockIdx.x);
  const int64_t s = blockIdx.y;
  const int32_t part = static_cast<int32_t>(blockIdx.z);
  const int64_t row = s * NH + h;                 // (item, head)
  const int64_t partial = row * gridDim.z + part; // (item, head, partition)
  const bool split = part_ml != nullptr;
  const int32_t kvh = h / (NH / NKV);
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31, warp = tid >> 5;
  const int warps = static_cast<int>(blockDim.x >> 5);

  const int32_t p_end = pos[s];
  const int32_t lo = window_lo(p_end, window);
  // This CTA's blocks: its partition's that hold a position of [lo, p_end].
  const int32_t b_first = max(lo / kv_block, part * part_blocks);
  const int32_t b_last = min(p_end / kv_block, part * part_blocks + part_blocks - 1);
  if (p_end < 0 || b_first > b_last) { // a padding item, or a partition outside [lo, p_end]
    if (split) {
      if (tid == 0) { // an empty partial: the merge skips it (its accumulator is not written)
        part_ml[2 * partial] = -INFINITY;
        part_ml[2 * partial + 1] = 0.0f;
      }
    } else {
      for (int d = tid; d < D; d += blockDim.x)
        out[row * D + d] = from_f32<Out>(0.0f);
    }
    return;
  }

  float2 qv[NJ];
  const float* qs = q + (s * NH + h) * D;
#pragma unroll
  for (int j = 0; j < NJ; ++j) {
    const int d = 2 * lane + 64 * j;
    qv[j] = make_float2(0.0f, 0.0f);
    if (d < D) {
      const float2 t = *reinterpret_cast<const float2*>(qs + d);
      qv[j] = make_float2(t.x * scale_log2, t.y * scale_log2);
    }
  }

  float2 acc[NJ];
#pragma unroll
  for (int j = 0; j < NJ; ++j)
    acc[j] = make_float2(0.0f, 0.0f);
  float m = -INFINITY, l = 0.0f;

  const int32_t* table = block_tables + s * MB;
  for (int32_t b = b_first + warp; b <= b_last; b += warps) {
    const int64_t base = (static_cast<int64_t>(table[b]) * NKV + kvh) * kv_block * D;
    const float* kb = k_cache + base;
    const float* vb = v_cache + base;
    float part[16];
#pragma unroll
    for (int c = 0; c < 16; ++c) {
      const int32_t p = b * kv_block + c;
      float t = 0.0f;
      if (p >= lo && p <= p_end) { // warp-uniform
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
          const int d = 2 * lane + 64 * j;
          if (d < D) {
            const float2 k2 = *reinterpret_cast<const float2*>(kb + c * D + d);
            t = fmaf(qv[j].x, k2.x, fmaf(qv[j].y, k2.y, t));
          }
        }
      }
      part[c] = t;
    }
    float sc = block_scores(part, lane);
    const int32_t my_p = b * kv_block + (lane >> 1);
    if (my_p < lo || my_p > p_end)
      sc = -INFINITY;
    float mx = sc;
#pragma unroll
    for (int o2 = 16; o2 > 0; o2 >>= 1)
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o2));
    // Every block visited holds at least one position of [lo, p_end]: mx is finite.
    const float m_new = fmaxf(m, mx);
    const float alpha = exp2f(m - m_new);
    const float e = exp2f(sc - m_new);
    float sum = (lane & 1) ? 0.0f : e; // each score sits in two lanes
#pragma unroll
    for (int o2 = 16; o2 > 0; o2 >>= 1)
      sum += __shfl_xor_sync(0xffffffffu, sum, o2);
    l = l * alpha + sum;
    m = m_new;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      acc[j].x *= alpha;
      acc[j].y *= alpha;
    }
#pragma unroll
    for (int c = 0; c < 16; ++c) {
      const float w = __shfl_sync(0xffffffffu, e, 2 * c);
      const int32_t p = b * kv_block + c;
      if (p >= lo && p <= p_end) { // warp-uniform; masked values are never read
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
          const int d = 2 * lane + 64 * j;
          if (d < D) {
            const float2 v2 = *reinterpret_cast<const float2*>(vb + c * D + d);
            acc[j].x = fmaf(w, v2.x, acc[j].x);
            acc[j].y = fmaf(w, v2.y, acc[j].y);
          }
        }
      }
    }
  }

  // Merge the warps (one that had no block holds m = -inf): smem holds per warp m, l, then D
  // accumulators.
  float* s_ml = smem;              // [warps][2]
  float* s_acc = smem + 2 * warps; // [warps][D]
  if (lane == 0) {
    s_ml[2 * warp] = m;
    s_ml[2 * warp + 1] = l;
  }
#pragma unroll
  for (int j = 0; j < NJ; ++j) {
    const int d = 2 * lane + 64 * j;
    if (d < D) {
      s_acc[warp * D + d] = acc[j].x;
      s_acc[warp * D + d + 1] = acc[j].y;
    }
  }
  __syncthreads();
  // At least one warp had a block (the CTA would have returned above): big is finite.
  const float big = merge_max(s_ml, warps);
  const float den = merge_den(s_ml, warps, big);
  if (split) {
    if (tid == 0) {
      part_ml[2 * partial] = big;
      part_ml[2 * partial + 1] = den;
    }
    float* a = part_acc + partial * D;
    for (int d = tid; d < D; d += blockDim.x)
      a[d] = merge_column(s_ml, s_acc + d, warps, D, big);
  } else {
    const float inv = den > 0.0f ? 1.0f / den : 0.0f;
    for (int d = tid; d < D; d += blockDim.x)
      out[row * D + d] = from_f32<Out>(merge_column(s_ml, s_acc + d, warps, D, big) * inv);
  }
}

// One CTA per (query head, item): merges the item's P partials into the output, thread d
// (and d + blockDim.x) owning column d. The (m, l) pairs go through shared memory ([P][2]).
template <class Out>
__global__ void attention_decode_merge_kernel(const float* __restrict__ part_ml,
                                              const float* __restrict__ part_acc,
                                              const int32_t* __restrict__ pos, int32_t parts,
                                              int32_t NH, int32_t D, Out* __restrict__ out) {
  extern __shared__ float4 smem_raw[];
  float* s_ml = reinterpret_cast<float*>(smem_raw);
  const int64_t s = blockIdx.y;
  const int64_t row = s * NH + static_cast<int64_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  Out* o = out + row * D;
  if (pos[s] < 0) { // padding item (every partial is empty): zeros, nothing read
    for (int d = tid; d < D; d += blockDim.x)
      o[d] = from_f32<Out>(0.0f);
    return;
  }
  for (int i = tid; i < 2 * parts; i += blockDim.x)
    s_ml[i] = part_ml[row * 2 * parts + i];
  __syncthreads();
  // A partition outside [lo, pos] is empty (m = -inf) and skipped; at least one is not.
  const float big = merge_max(s_ml, parts);
  const float den = merge_den(s_ml, parts, big);
  const float inv = den > 0.0f ? 1.0f / den : 0.0f;
  const float* acc = part_acc + row * parts * D;
  for (int d = tid; d < D; d += blockDim.x)
    o[d] = from_f32<Out>(merge_column(s_ml, acc + d, parts, D, big) * inv);
}

// How a launch splits the positions: partitions of decode_partition_blocks KV blocks (512
// positions: enough work per CTA that its fixed costs, the query load and the merges, stay
// small), as many as the table width MB asks for, but at most decode_max_partitions (the merge
// keeps their (m, l) in shared memory) and S * NH * P <= decode_max_partials (the scratch stays
// within (D + 2) * 2^14 floats, and a batch that fills the GPU with CTAs already is not split
// further); when capped, the partitions grow instead. MB, not the positions: P is fixed for a
// graph's shape.
constexpr int64_t decode_partition_blocks = 32;
constexpr int64_t decode_max_partitions = 256;
constexpr int64_t decode_max_partials = int64_t{1} << 14;

struct decode_split {
  int64_t parts = 1;       // P
  int32_t part_blocks = 0; // KV blocks per partition
};

decode_split decode_split_for(int64_t S, int64_t NH, int32_t MB) {
  const int64_t want = (MB + decode_partition_blocks - 1) / decode_partition_blocks;
  const int64_t fit = decode_max_partials / std::max<int64_t>(1, S * NH);
  const int64_t parts = std::max<int64_t>(1, std::min({want, decode_max_partitions, fit}));
  return {parts, static_cast<int32_t>((MB + parts - 1) / parts)};
}

template <int NJ, class Out>
cudaError_t launch_decode(const float* q, const float* k_cache, const float* v_cache, int64_t S,
                          const int32_t* pos, const int32_t* block_tables, int32_t MB, int64_t NH,
                          int64_t NKV, int64_t D, int32_t window, float scale, Out* out,
                          float* scratch, cudaStream_t stream) {
  const decode_split split = decode_split_for(S, NH, MB);
  float* part_ml = nullptr;
  float* part_acc = nullptr;
  if (split.parts > 1) {
    if (scratch == nullptr)
      return cudaErrorInvalidValue;
    part_ml = scratch;
    part_acc = scratch + 2 * S * NH * split.parts;
  }
  // Few CTAs (a small batch, a short context): more warps each, so that the loads in flight
  // still cover the bandwidth; many CTAs fill the GPU by themselves.
  const int warps = S * NH * split.parts < 2 * 132 ? 16 : 8;
  const std::size_t smem = static_cast<std::size_t>(warps) * (D + 2) * sizeof(float);
  const dim3 grid(static_cast<unsigned>(NH), static_cast<unsigned>(S),
                  static_cast<unsigned>(split.parts));
  attention_decode_kernel<NJ, Out><<<grid, warps * 32, smem, stream>>>(
      q, k_cache, v_cache, pos, block_tables, MB, static_cast<int32_t>(NH),
      static_cast<int32_t>(NKV), static_cast<int32_t>(D), window, scale * log2e,
      split.part_blocks, out, part_ml, part_acc);
  if (split.parts == 1)
    return cudaGetLastError();
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess)
    return e;
  const int threads = static_cast<int>(std::min<int64_t>(256, (D + 31) / 32 * 32));
  attention_decode_merge_kernel<Out>
      <<<dim3(static_cast<unsigned>(NH), static_cast<unsigned>(S)), threads,
         static_cast<std::size_t>(2 * split.parts) * sizeof(float), stream>>>(
          part_ml, part_acc, pos, static_cast<int32_t>(split.parts), static_cast<int32_t>(NH),
          static_cast<int32_t>(D), out);
  return cudaGetLastError();
}

bool bad_shape(int64_t NH, int64_t NKV, int64_t D) {
  return NH <= 0 || NKV <= 0 || NH % NKV != 0 || D <= 0 || D % 2 != 0 || D > 256;
}

} // namespace

cudaError_t attention_prefill(const float* q, const float* k_cache, const float* v_cache,
                              const attention_tile* tiles, int64_t n_tiles, const int32_t* pos,
                              const int32_t* block_tables, int32_t MB, int64_t NH, int64_t NKV,
                              int64_t D, int32_t window, float scale, void* out, dtype out_type,
                              cudaStream_t stream) {
  if (bad_shape(NH, NKV, D))
    return cudaErrorInvalidValue;
  if (n_tiles <= 0)
    return cudaGetLastError();
  return detail::dispatch(out_type, [&](auto tag) {
    using Out = decltype(tag);
    auto* o = static_cast<Out*>(out);
    if (D <= 64)
      return launch_prefill<8>(q, k_cache, v_cache, tiles, n_tiles, pos, block_tables, MB, NH,
                               NKV, D, window, scale, o, stream);
    if (D <= 128)
      return launch_prefill<16>(q, k_cache, v_cache, tiles, n_tiles, pos, block_tables, MB, NH,
                                NKV, D, window, scale, o, stream);
    return launch_prefill<32>(q, k_cache, v_cache, tiles, n_tiles, pos, block_tables, MB, NH,
                              NKV, D, window, scale, o, stream);
  });
}

int64_t attention_decode_scratch_floats(int64_t S, int64_t NH, int64_t D, int32_t MB) {
  if (S <= 0 || NH <= 0 || D <= 0 || MB <= 0)
    return 0;
  const int64_t parts = decode_split_for(S, NH, MB).parts;
  return parts > 1 ? S * NH * parts * (D + 2) : 0;
}

cudaError_t attention_decode(const float* q, const float* k_cache, const float* v_cache,
                             int64_t S, const int32_t* pos, const int32_t* block_tables,
                             int32_t MB, int64_t NH, int64_t NKV, int64_t D, int32_t window,
                             float scale, void* out, dtype out_type, float* scratch,
                             cudaStream_t stream) {
  if (bad_shape(NH, NKV, D) || MB <= 0)
    return cudaErrorInvalidValue;
  if (S <= 0)
    return cudaGetLastError();
  return detail::dispatch(out_type, [&](auto tag) {
    using Out = decltype(tag);
    auto* o = static_cast<Out*>(out);
    if (D <= 64)
      return launch_decode<1>(q, k_cache, v_cache, S, pos, block_tables, MB, NH, NKV, D, window,
                              scale, o, scratch, stream);
    if (D <= 128)
      return launch_decode<2>(q, k_cache, v_cache, S, pos, block_tables, MB, NH, NKV, D, window,
                              scale, o, scratch, stream);
    if (D <= 192)
      return launch_decode<3>(q, k_cache, v_cache, S, pos, block_tables, MB, NH, NKV, D, window,
                              scale, o, scratch, stream);
    return launch_decode<4>(q, k_cache, v_cache, S, pos, block_tables, MB, NH, NKV, D, window,
                            scale, o, scratch, stream);
  });
}

} // namespace thaw::cuda::kernels
