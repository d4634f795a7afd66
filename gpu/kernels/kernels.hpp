#pragma once
/// CUDA kernels of the Llama-family forward pass and of the sampler (ARCHITECTURE.md section 6),
/// one launcher each, grouped by family in gpu/kernels/<family>.cu. Each has a CPU reference
/// (gpu/host/host_ops.hpp; the sampler in runtime/engine/sampler.hpp) that
/// tests/gpu/cuda_kernels_test.cpp compares it against for every shape class.
///
/// Shapes, named once:
///   T    tokens of a forward, every item's tokens back to back
///   S    items (sequences) of a forward
///   H    hidden size, F intermediate size, V vocabulary
///   NH   query heads, NKV key/value heads (NH % NKV == 0), D head dimension (even, <= 256)
///   B    KV blocks of kv_block_tokens (16) positions. One layer's cache is two f32 arrays,
///        keys and values, each [B][NKV][16][D], as the host runner lays them out
///   MB   width of the block-table matrix [S][MB] (int32 block ids; row s is item s's table)
///
/// Activations are f32, except the inputs of GEMMs, which are in the weights' type `act` (f32,
/// bf16 or f16), so that cuBLAS multiplies like types with f32 accumulation. Launchers enqueue
/// on `stream` and return cudaGetLastError(); they never synchronise. Pointers are device
/// pointers unless said otherwise.

#include "runtime/common/dtype.hpp"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace thaw::cuda::kernels {

using std::int32_t;
using std::int64_t;

/// Query tokens per prefill attention tile.
inline constexpr int32_t prefill_tile_tokens = 16;

/// out[t] = row tokens[t] of the [V][H] table (type `type`) as f32; out is [T][H].
cudaError_t embedding(const void* table, dtype type, int64_t H, const int32_t* tokens, int64_t T,
                      float* out, cudaStream_t stream);

/// out[r] = x[i] / sqrt(mean(x[i]^2) + eps) * weight, i = rows ? rows[r] : r, for r < n_rows;
/// x is [*][H] f32, weight [H] f32, out [n_rows][H] in `out_type`, as
/// host::rmsnorm: the sum of squares in double.
cudaError_t rmsnorm(const float* x, const int32_t* rows, int64_t n_rows, const float* weight,
                    int64_t H, double eps, void* out, dtype out_type, cudaStream_t stream);

/// y[t][i] += bias[i] for t < T, i < n.
cudaError_t add_bias(float* y, const float* bias, int64_t T, int64_t n, cudaStream_t stream);

/// Rotates x ([T][heads][D] f32) in place, token t by position pos[t]: Hugging Face's
/// rotate-half layout, angle pos * inv_freq[i] computed in double as host::rope_angles does;
/// inv_freq holds D / 2 doubles (host::rope_inv_freq).
cudaError_t rope(float* x, int64_t T, int64_t heads, int64_t D, const int32_t* pos,
                 const double* inv_freq, cudaStream_t stream);

/// Stores token t's keys and values (k, v: [T][NKV][D] f32) in one layer's cache at slot
/// slots[t] = block * 16 + position % 16; tokens with slots[t] < 0 (padding) are skipped.
cudaError_t kv_write(const float* k, const float* v, int64_t T, int64_t NKV, int64_t D,
                     const int32_t* slots, float* k_cache, float* v_cache, cudaStream_t stream);

/// A run of up to prefill_tile_tokens consecutive query tokens of one item: tokens
/// [first_token, first_token + count) of the forward, at consecutive positions.
struct attention_tile {
  int32_t first_token = 0;
  int32_t count = 0;
  int32_t item = 0;
};

/// Causal attention for prefill (flash-attention style: a tile of queries against the item's
/// KV blocks in turn, online softmax, nothing of size T x T materialised). Query token t
/// (q: [T][NH][D] f32) attends to positions [lo, pos[t]] of its item's cache, lo = 0, or
/// pos[t] - window + 1 when window > 0 (Mistral's sliding window); head h reads KV head
/// h / (NH / NKV). The cache must already hold every attended position (kv_write first).
/// out: [T][NH][D] in `out_type`. Scores are scaled by `scale`.
cudaError_t attention_prefill(const float* q, const float* k_cache, const float* v_cache,
                              const attention_tile* tiles, int64_t n_tiles, const int32_t* pos,
                              const int32_t* block_tables, int32_t MB, int64_t NH, int64_t NKV,
                              int64_t D, int32_t window, float scale, void* out, dtype out_type,
                              cudaStream_t stream);

/// Attention for decode: one query token per item (q: [S][NH][D] f32; token s is item s's, at
/// position pos[s]) over the paged cache, split across the positions so that one long
/// sequence still fills the GPU. pos[s] < 0 marks a padding item: its output is zero. Otherwise
/// as attention_prefill.
///
/// Flash decoding: when the block table is wide, each item's positions are cut into P
/// partitions, run by different CTAs, whose partial softmaxes go to `scratch` and are merged by
/// a second kernel. P depends on S, NH and MB only, never on pos, so a captured graph stays
/// valid for any positions. scratch holds attention_decode_scratch_floats(S, NH, D, MB) f32
/// (null allowed when that is 0), is not read before it is written, and must not be shared
/// with another launch in flight.
cudaError_t attention_decode(const float* q, const float* k_cache, const float* v_cache,
                             int64_t S, const int32_t* pos, const int32_t* block_tables,
                             int32_t MB, int64_t NH, int64_t NKV, int64_t D, int32_t window,
                             float scale, void* out, dtype out_type, float* scratch,
                             cudaStream_t stream);

/// The f32 scratch that attention_decode needs for this shape: 0 when it splits nothing (one
/// partition per item); at most (D + 2) * 2^14 otherwise. Grows with MB; not monotone in S (a
/// batch that fills the GPU by itself is not split). A host function: no GPU needed.
int64_t attention_decode_scratch_floats(int64_t S, int64_t NH, int64_t D, int32_t MB);

/// out[i] = silu(gate[i]) * up[i] in `out_type`, i < n (gate, up f32).
cudaError_t silu_mul(const float* gate, const float* up, int64_t n, void* out, dtype out_type,
                     cudaStream_t stream);

/// x[i] += y[i], i < n.
cudaError_t add(float* x, const float* y, int64_t n, cudaStream_t stream);

/// Converts n elements (round to nearest even, as thaw::convert_elements).
cudaError_t convert(const void* in, dtype from, void* out, dtype to, int64_t n,
                    cudaStream_t stream);

/// One row's sampling parameters, as thaw::sampling_params and the rng_state before the draw.
struct sample_request {
  float temperature = 1.0f; ///< 0: greedy
  int32_t top_k = 0;        ///< <= 0: off
  float top_p = 1.0f;
  float min_p = 0.0f;
  std::uint64_t seed = 0;
  std::uint64_t counter = 0; ///< the draw's counter (rng_state::counter before it)
  int32_t want_logprob = 0;  ///< 1: compute the chosen token's raw log-softmax
};

enum class sample_status : int32_t { ok = 0, nan_logit = 1, all_neg_inf = 2 };

struct sample_output {
  int32_t token = -1;
  float logprob = 0.0f;
  sample_status status = sample_status::ok;
  int32_t nan_index = -1; ///< the first NaN logit when status is nan_logit
};

/// Samples one token per row of logits ([rows][V] f32) as thaw::sample does: greedy takes the
/// lowest id of the maximum; otherwise weights exp((l - max) / T), the candidates top_k /
/// top_p / min_p ordered by (logit descending, id ascending), one uniform from the same
/// counter-based stream (rng_state::next_uniform of (seed, counter)) and the inverse CDF over
/// the kept candidates in that order (over all ids in id order when nothing is filtered). The
/// order is found by bisection over the values instead of a sort; sums are in double. req and
/// out are [rows] device arrays.
cudaError_t sample(const float* logits, int64_t rows, int64_t V, const sample_request* req,
                   sample_output* out, cudaStream_t stream);

} // namespace thaw::cuda::kernels
