#pragma once
/// The CUDA model runner: the same Llama-family forward pass as the host runner (RMSNorm, RoPE
/// with scaling, GQA, optional QKV bias, SwiGLU, tied or separate lm_head, sliding window) on
/// one GPU, behind the same model_runner interface, so the step loop, prefix cache, sampler and
/// export/import run unchanged on it.
///
///   GEMMs: cuBLAS in the weights' type (bf16, f16 or f32) with f32 accumulation (gpu/cuda/blas)
///   everything else: gpu/kernels (f32 residual stream, f32 paged KV cache laid out as the host
///   runner's, [layer][block][kv_head][16][head_dim])
///   attention: the tiled prefill kernel for any forward with a prompt chunk in it; the paged
///   decode kernel when every item brings one token
///   decode steps: replayed from CUDA graphs, one per (padded batch, block-table width); the
///   batch is padded to a bucket (1, 2, 4, 8, 16, 24, 32, 48, 64, ... 512) whether or not graphs
///   are on, so a graph and an eager step give the same logits bit for bit
///   tensor parallelism: with a communicator, this runner computes its rank's heads and
///   intermediate columns and all-reduces the o and down projections (communicator.hpp)
///
/// A runner may be built while its weights are still loading: `layer_ready` (the loader's
/// wait_for_layer) is called before a layer's weights are first used, so the first prefill
/// starts on the embeddings and first layers while later ones are still being copied.

#include "runtime/engine/host_model_runner.hpp"
#include "runtime/engine/model_runner.hpp"
#include "runtime/engine/model_weights.hpp"

#include <filesystem>
#include <functional>
#include <memory>

namespace thaw {

namespace cuda {
class communicator;
class cuda_device;
} // namespace cuda

struct cuda_runner_options {
  std::int32_t num_kv_blocks = 64; ///< KV cache blocks (16 tokens each)
  bool cuda_graphs = true;         ///< replay decode steps from CUDA graphs
  /// A member of a tensor-parallel group (its GPU must be the runner's); null: the whole model
  /// on this GPU.
  cuda::communicator* comm = nullptr;
  /// Called with a layer (-1: embeddings, num_layers: final norm and lm_head) before its
  /// weights are first read; an error fails that forward. Null: the weights are all there.
  std::function<status(std::int32_t)> layer_ready;
};

/// Builds a runner over `weights` (device pointers into `dev`'s memory, which must outlive the
/// runner). `invalid_argument` for a missing or misshapen tensor, an unsupported head layout or
/// RoPE scaling, or heads / intermediate size that the tensor-parallel group cannot split.
[[nodiscard]] expected<std::unique_ptr<model_runner>>
make_cuda_model_runner(const checkpoint& ckpt, const weight_files& weights,
                       cuda::cuda_device& dev, const cuda_runner_options& opt);

/// Opens the checkpoint in `dir`, makes GPU `ordinal`'s device, and loads the checkpoint onto
/// it through thaw::loader (chunks copied on two streams while the SSD is read); the runner is
/// built at once and its first forward waits per layer for the copies.
[[nodiscard]] expected<loaded_model> load_cuda_model(const std::filesystem::path& dir,
                                                     const cuda_runner_options& opt,
                                                     int ordinal = 0);

} // namespace thaw
