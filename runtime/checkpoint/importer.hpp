#pragma once
/// Imports a Hugging Face model directory (config.json + model.safetensors or sharded
/// safetensors with model.safetensors.index.json; Llama, Qwen2 and Mistral; fp32, fp16, bf16)
/// into a thaw checkpoint, optionally converting the weights' dtype.

#include "runtime/checkpoint/writer.hpp"
#include "runtime/common/dtype.hpp"

#include <filesystem>
#include <optional>

namespace thaw {

struct import_options {
  /// Target dtype; nullopt keeps each tensor's source dtype.
  std::optional<dtype> target_dtype;
  writer_options writer;
};

/// Converts `hf_dir` into a checkpoint at `out_dir` (see write_checkpoint for atomicity).
/// Errors name the file and tensor: missing config.json or weights, an unsupported
/// architecture or dtype, tensors missing or unexpected for the architecture, shapes that
/// disagree with config.json, safetensors headers that lie about sizes.
[[nodiscard]] status import_hf(const std::filesystem::path& hf_dir,
                               const std::filesystem::path& out_dir,
                               const import_options& options);

} // namespace thaw
