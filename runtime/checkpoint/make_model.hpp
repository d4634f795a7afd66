#pragma once
/// Deterministic random test models in Hugging Face layout: config.json, generation_config.json,
/// the tokenizer files, and model.safetensors (or shards plus model.safetensors.index.json,
/// exactly as transformers writes them). Presets have the real shapes of well-known models; the
/// weights are a pure function of (seed, tensor name, element index), so the same seed gives
/// the same bytes whatever the thread count.

#include "runtime/checkpoint/model_config.hpp"
#include "runtime/common/dtype.hpp"
#include "runtime/common/error.hpp"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace thaw {

struct make_model_options {
  std::string preset;                   ///< one of preset_names()
  std::filesystem::path tokenizer_json; ///< HF tokenizer.json; fixes vocab size, BOS and EOS
  std::uint64_t seed = 0;
  dtype type = dtype::bf16;
  /// A model whose weights exceed this is split into shards of at most this many bytes (a
  /// tensor larger than that gets a shard of its own), as transformers' `max_shard_size`.
  std::uint64_t max_shard_bytes = 5'000'000'000;
  /// Called with (tensor bytes written so far, total tensor bytes) before each tensor is
  /// generated and once, with done == total, when all are written.
  std::function<void(std::uint64_t, std::uint64_t)> on_progress;
  /// Threads that generate weights; 0: std::thread::hardware_concurrency(). Does not change
  /// the bytes written.
  unsigned threads = 0;
  /// When set and it becomes true, writing stops between tensors with errc::cancelled and the
  /// temporary directory is removed.
  const std::atomic<bool>* cancel = nullptr;
};

/// What a tokenizer.json (and the tokenizer_config.json beside it, if any) says about ids.
struct tokenizer_info {
  std::uint64_t vocab_size = 0; ///< max id over model.vocab and added_tokens, plus 1
  std::int64_t bos_token_id = -1; ///< -1: none found
  std::int64_t eos_token_id = -1; ///< -1: none found
};

/// Reads vocabulary size and BOS/EOS ids: BOS/EOS from tokenizer_config.json's bos_token /
/// eos_token when present, else by well-known contents ("<s>"/"</s>",
/// "<|begin_of_text|>"/"<|end_of_text|>", "<|endoftext|>", "<|im_end|>"). Errors name the file.
[[nodiscard]] expected<tokenizer_info> read_tokenizer_info(const std::filesystem::path& tokenizer_json);

/// Names of the presets: tiny, tiny-qwen2, tiny-mistral, stories15m, stories110m, qwen2.5-0.5b,
/// llama-3.2-1b, llama-3-8b.
[[nodiscard]] std::vector<std::string> preset_names();

/// The configuration of a preset with the given vocabulary size (torch_dtype f32, no BOS/EOS:
/// make_model fills those in). An unknown name is `invalid_argument`, listing the presets.
[[nodiscard]] expected<model_config> preset_config(std::string_view preset,
                                                   std::uint64_t vocab_size);

/// Writes the model to `out_dir` through a temporary directory that is renamed into place when
/// complete: a failure leaves nothing behind, and an existing `out_dir` is `already_exists`.
/// Tensors are written in expected_tensors() order, one tensor in memory at a time.
[[nodiscard]] status make_model(const std::filesystem::path& out_dir,
                                const make_model_options& options);

/// The f32 values make_model generates for elements [first, first + out.size()) of tensor
/// `tensor_name` (before conversion to the target dtype): matrices and embeddings
/// N(0, 0.02), biases N(0, 0.02), norm weights 1 + N(0, 0.02). Single-threaded.
void generate_weights(std::uint64_t seed, std::string_view tensor_name, std::uint64_t first,
                      std::span<float> out);

} // namespace thaw
