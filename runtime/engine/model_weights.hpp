#pragma once
/// Where a checkpoint's weights are for a model runner, on whichever device holds them, and the
/// checked lookup of one tensor there, shared by the host and CUDA runners.

#include "gpu/device.hpp"
#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/common/dtype.hpp"

#include <cstddef>
#include <string>
#include <vector>

namespace thaw {

/// Each data file's bytes, contiguous, in the device's address space (a host pointer for the
/// host device, a device pointer for CUDA): a tensor is at files[t.file] + t.offset. A loaded
/// model's files lie one after the other in its device buffer (weights_in); a model run in
/// place from the DRAM tier has a run of pool chunks per file (loader::map).
struct weight_files {
  std::vector<const std::byte*> files;
};

/// The files of a device buffer laid out as the checkpoint's (file f at file_base(f)).
[[nodiscard]] weight_files weights_in(const checkpoint& ckpt, const device_buffer& buffer);

/// A tensor found in weight_files.
struct weight {
  const std::byte* data = nullptr;
  dtype type = dtype::f32;
};

/// Tensor `name` with exactly `shape`: `invalid_argument` (prefixed by `who`) when it is
/// missing, has another shape, or lies outside its file.
[[nodiscard]] expected<weight> find_weight(const checkpoint& ckpt, const weight_files& files,
                                           const std::string& name,
                                           const std::vector<std::uint64_t>& shape,
                                           std::string_view who);

/// A Llama-family model's tensors in weight_files (Hugging Face names), each found with the
/// shape `cfg` implies. lm_head is the embedding table when the config ties them and the
/// checkpoint has no lm_head; the biases are found only with attention_bias (else null data).
struct model_tensors {
  struct layer {
    weight q, k, v, o, gate, up, down, attn_norm, mlp_norm, q_bias, k_bias, v_bias;
  };
  weight embed, lm_head, final_norm;
  std::vector<layer> layers;
};

/// Every tensor a runner reads, found with find_weight (its errors, prefixed by `who`).
[[nodiscard]] expected<model_tensors> find_model_tensors(const checkpoint& ckpt,
                                                         const weight_files& files,
                                                         std::string_view who);

} // namespace thaw
