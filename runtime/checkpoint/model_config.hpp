#pragma once
/// The model configuration thaw understands (Llama-family decoders: Llama 2/3, Qwen2/2.5,
/// Mistral), read from and written to Hugging Face `config.json`, and the list of tensors such a
/// model must have, in thaw's load order.

#include "runtime/common/dtype.hpp"
#include "runtime/common/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace thaw {

/// Supported architectures (HF `architectures[0]`: LlamaForCausalLM, Qwen2ForCausalLM,
/// MistralForCausalLM).
enum class architecture : std::uint8_t { llama = 0, qwen2 = 1, mistral = 2 };

[[nodiscard]] std::string_view to_string(architecture a) noexcept;          ///< "llama"
[[nodiscard]] std::string_view hf_class_name(architecture a) noexcept;      ///< "LlamaForCausalLM"
[[nodiscard]] std::string_view hf_model_type(architecture a) noexcept;      ///< "llama"
/// Accepts a HF class name or a model_type; anything else is `unsupported`, naming it.
[[nodiscard]] expected<architecture> parse_architecture(std::string_view name);

/// HF `rope_scaling`. `type` empty means none; supported: "linear", "dynamic", "llama3", "yarn"
/// (the engine decides what it implements; the store keeps all fields).
struct rope_scaling_config {
  std::string type;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  std::uint64_t original_max_position_embeddings = 0;

  bool operator==(const rope_scaling_config&) const = default;
};

struct model_config {
  architecture arch = architecture::llama;
  std::uint64_t vocab_size = 0;
  std::uint64_t hidden_size = 0;
  std::uint64_t intermediate_size = 0;
  std::uint64_t num_layers = 0;
  std::uint64_t num_heads = 0;
  std::uint64_t num_kv_heads = 0;
  std::uint64_t head_dim = 0; ///< hidden_size / num_heads unless the config says otherwise
  std::uint64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  bool tie_word_embeddings = false;
  bool attention_bias = false;      ///< q/k/v projections have biases (Qwen2: always)
  std::uint64_t sliding_window = 0; ///< 0: none (Mistral may set one)
  std::int64_t bos_token_id = -1;   ///< -1: none
  std::vector<std::int64_t> eos_token_ids;
  rope_scaling_config rope_scaling;
  dtype torch_dtype = dtype::f32; ///< the dtype the weights are stored in

  bool operator==(const model_config&) const = default;

  /// Checks the numbers make a model: all sizes positive, heads divide evenly, kv heads divide
  /// heads, head_dim even (RoPE). The message names the offending field.
  [[nodiscard]] status validate() const;
};

/// Parses HF config.json text; `source` names the file in errors. Missing required fields,
/// wrong types and unsupported architectures are errors naming the field.
[[nodiscard]] expected<model_config> parse_hf_config(std::string_view json_text,
                                                     std::string_view source = "config.json");

/// Writes HF config.json text (pretty-printed) for `cfg`.
[[nodiscard]] std::string to_hf_config_json(const model_config& cfg);

/// Where a tensor sits in load order: embeddings first (layer = -1), then each decoder layer
/// (0..num_layers-1), then the final norm and lm_head (layer = num_layers).
struct tensor_spec {
  std::string name; ///< Hugging Face name, e.g. "model.layers.3.self_attn.q_proj.weight"
  std::vector<std::uint64_t> shape;
  std::int32_t layer = -1;
};

/// "[4096, 128256]": a shape as messages print it.
[[nodiscard]] std::string shape_to_string(const std::vector<std::uint64_t>& shape);

/// Every tensor a model of this config must have, in thaw's load order (embed_tokens; per layer:
/// input_layernorm, q/k/v proj (+bias), o_proj, post_attention_layernorm, gate/up/down proj;
/// model.norm; lm_head unless tied).
[[nodiscard]] std::vector<tensor_spec> expected_tensors(const model_config& cfg);

/// Number of weights (elements) over expected_tensors(cfg).
[[nodiscard]] std::uint64_t parameter_count(const model_config& cfg);

/// Tensors that HF checkpoints sometimes carry but that are derived, not weights (e.g.
/// "model.layers.0.self_attn.rotary_emb.inv_freq"); importers skip them.
[[nodiscard]] bool is_ignorable_tensor(std::string_view name) noexcept;

} // namespace thaw
