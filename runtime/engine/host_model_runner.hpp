#pragma once
/// The host model runner: the Llama-family forward pass (RMSNorm, RoPE with scaling, GQA,
/// optional QKV bias, SwiGLU, tied or separate lm_head, Mistral's sliding window) on the CPU over
/// gpu/host kernels, with an f32 paged KV cache laid out [layer][block][kv_head][16][head_dim] for
/// keys and again for values. Weights stay where the loader put them: a device buffer laid out
/// like the checkpoint's data files (tensor at file_base(file) + offset), f32, bf16 or f16.

#include "gpu/device.hpp"
#include "gpu/host/thread_pool.hpp"
#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/loader/loader.hpp"
#include "runtime/engine/model_runner.hpp"
#include "runtime/engine/model_weights.hpp"

#include <filesystem>
#include <memory>
#include <string_view>

namespace thaw {

struct host_runner_options {
  std::int32_t num_kv_blocks = 64; ///< KV cache blocks (16 tokens each)
  int threads = 1;                 ///< compute threads of the runner's own pool (no `pool` given)
  /// The compute threads to run on, shared with other runners (a node's CPU slot: forward passes
  /// take turns); null: the runner makes its own pool of `threads`.
  std::shared_ptr<host::thread_pool> pool;
  /// Where the KV cache lives: a host device's memory, where a finished instance's cache of the
  /// same size is handed to the next one already faulted in (a cold start then pays no page
  /// faults in its first prefill: 0.4-0.6 ms of stories15m's 11 ms). Null: the process heap.
  /// Must outlive the runner.
  device* kv_device = nullptr;
};

/// Builds a runner over `weights` (which must outlive it). Its forward passes run on the pool's
/// leader thread; the calling thread waits. `invalid_argument` when a tensor is
/// missing, has an unexpected shape, or lies outside its file, or the options are bad.
[[nodiscard]] expected<std::unique_ptr<model_runner>>
make_host_model_runner(const checkpoint& ckpt, const weight_files& weights,
                       const host_runner_options& opt);
/// The same over a device buffer laid out as the checkpoint's; `invalid_argument` when it is
/// smaller than the checkpoint.
[[nodiscard]] expected<std::unique_ptr<model_runner>>
make_host_model_runner(const checkpoint& ckpt, const device_buffer& weights,
                       const host_runner_options& opt);

/// A checkpoint loaded onto a device with its runner; members are destroyed runner first.
struct loaded_model {
  std::unique_ptr<device> dev;
  std::unique_ptr<checkpoint> ckpt;
  /// The loader of a load that may still be running when the model is handed over (CUDA: the
  /// runner waits per layer); null once nothing is loading.
  std::unique_ptr<loader> ld;
  std::unique_ptr<device_buffer> weights;
  std::unique_ptr<model_runner> runner;
};

/// Opens the checkpoint in `dir`, loads it through thaw::loader into a host_device buffer, and
/// builds a host runner over it.
[[nodiscard]] expected<loaded_model> load_host_model(const std::filesystem::path& dir,
                                                     const host_runner_options& opt);

/// load_host_model on "host", or, on "cuda" (GPU 0), the CUDA runner's load_cuda_model with
/// `opt.num_kv_blocks` blocks; `unsupported` for "cuda" in a build without the CUDA backend,
/// `invalid_argument` for another name.
[[nodiscard]] expected<loaded_model> load_model_on(std::string_view device,
                                                   const std::filesystem::path& dir,
                                                   const host_runner_options& opt);

} // namespace thaw
