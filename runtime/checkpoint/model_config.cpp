#include "runtime/checkpoint/model_config.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <optional>

namespace thaw {

namespace {

using json = nlohmann::json;

struct arch_names {
  architecture arch;
  std::string_view class_name;
  std::string_view model_type;
};

constexpr std::array<arch_names, 3> known_archs{{
    {architecture::llama, "LlamaForCausalLM", "llama"},
    {architecture::qwen2, "Qwen2ForCausalLM", "qwen2"},
    {architecture::mistral, "MistralForCausalLM", "mistral"},
}};

constexpr std::array<std::string_view, 4> known_rope_types{"linear", "dynamic", "llama3", "yarn"};

/// Reads fields of one JSON object, turning absent or mistyped values into errors that name
/// the file and the field.
class field_reader {
public:
  field_reader(const json& obj, std::string_view source, std::string prefix = {})
      : obj_(obj), source_(source), prefix_(std::move(prefix)) {}

  [[nodiscard]] bool has(const char* key) const {
    auto it = obj_.find(key);
    return it != obj_.end() && !it->is_null();
  }

  [[nodiscard]] error bad(const char* key, std::string_view why) const {
    return make_error(errc::parse_error, std::string{source_} + ": field '" + prefix_ + key +
                                             "': " + std::string{why});
  }

  [[nodiscard]] expected<std::uint64_t> uint(const char* key) const {
    if (!has(key))
      return bad(key, "missing");
    const auto& v = obj_.at(key);
    if (!v.is_number_unsigned())
      return bad(key, "expected a non-negative integer, got " + v.dump());
    return v.get<std::uint64_t>();
  }

  [[nodiscard]] expected<std::uint64_t> uint_or(const char* key, std::uint64_t fallback) const {
    return has(key) ? uint(key) : expected<std::uint64_t>{fallback};
  }

  [[nodiscard]] expected<double> number_or(const char* key, double fallback) const {
    if (!has(key))
      return fallback;
    const auto& v = obj_.at(key);
    if (!v.is_number())
      return bad(key, "expected a number, got " + v.dump());
    return v.get<double>();
  }

  [[nodiscard]] expected<bool> boolean_or(const char* key, bool fallback) const {
    if (!has(key))
      return fallback;
    const auto& v = obj_.at(key);
    if (!v.is_boolean())
      return bad(key, "expected true or false, got " + v.dump());
    return v.get<bool>();
  }

  [[nodiscard]] expected<std::string> string_or(const char* key, std::string fallback) const {
    if (!has(key))
      return fallback;
    const auto& v = obj_.at(key);
    if (!v.is_string())
      return bad(key, "expected a string, got " + v.dump());
    return v.get<std::string>();
  }

  /// An integer token id or a list of them (eos_token_id may be either); null gives none.
  [[nodiscard]] expected<std::vector<std::int64_t>> token_ids(const char* key) const {
    std::vector<std::int64_t> ids;
    if (!has(key))
      return ids;
    const auto& v = obj_.at(key);
    auto one = [&](const json& e) -> status {
      if (!e.is_number_integer())
        return bad(key, "expected a token id or a list of them, got " + v.dump());
      ids.push_back(e.get<std::int64_t>());
      return {};
    };
    if (v.is_array()) {
      for (const auto& e : v)
        THAW_TRY(one(e));
    } else {
      THAW_TRY(one(v));
    }
    return ids;
  }

private:
  const json& obj_;
  std::string_view source_;
  std::string prefix_;
};

expected<rope_scaling_config> parse_rope_scaling(const json& obj, std::string_view source,
                                                 const char* field) {
  rope_scaling_config rs;
  if (!obj.is_object())
    return make_error(errc::parse_error, std::string{source} + ": field '" + field +
                                             "': expected an object or null, got " + obj.dump());
  field_reader r{obj, source, std::string{field} + "."};
  // transformers renamed "type" to "rope_type"; configs in the wild carry either.
  THAW_ASSIGN(auto type, r.string_or("rope_type", ""));
  if (type.empty()) {
    THAW_ASSIGN(type, r.string_or("type", ""));
  }
  if (type.empty() || type == "default")
    return rs; // no scaling
  bool known = false;
  for (auto t : known_rope_types)
    known = known || t == type;
  if (!known)
    return make_error(errc::unsupported, std::string{source} + ": field '" + field +
                                             ".rope_type': unsupported RoPE scaling '" + type +
                                             "' (thaw supports linear, dynamic, llama3, yarn)");
  rs.type = type;
  THAW_ASSIGN(rs.factor, r.number_or("factor", 1.0));
  THAW_ASSIGN(rs.low_freq_factor, r.number_or("low_freq_factor", 1.0));
  THAW_ASSIGN(rs.high_freq_factor, r.number_or("high_freq_factor", 4.0));
  THAW_ASSIGN(rs.original_max_position_embeddings,
              r.uint_or("original_max_position_embeddings", 0));
  return rs;
}

expected<architecture> read_architecture(const json& doc, std::string_view source) {
  auto it = doc.find("architectures");
  if (it != doc.end() && !it->is_null()) {
    if (!it->is_array() || it->empty() || !(*it)[0].is_string())
      return make_error(errc::parse_error, std::string{source} +
                                               ": field 'architectures': expected a non-empty "
                                               "list of class names, got " + it->dump());
    auto arch = parse_architecture((*it)[0].get<std::string>());
    if (!arch)
      return with_context(std::move(arch).err(), std::string{source} + ": field 'architectures[0]'");
    return arch;
  }
  auto mt = doc.find("model_type");
  if (mt == doc.end() || !mt->is_string())
    return make_error(errc::parse_error,
                      std::string{source} + ": field 'architectures': missing (and no model_type)");
  auto arch = parse_architecture(mt->get<std::string>());
  if (!arch)
    return with_context(std::move(arch).err(), std::string{source} + ": field 'model_type'");
  return arch;
}

expected<model_config> parse_config_object(const json& doc, std::string_view source) {
  if (!doc.is_object())
    return make_error(errc::parse_error, std::string{source} + ": expected a JSON object");
  field_reader r{doc, source};
  model_config c;
  THAW_ASSIGN(c.arch, read_architecture(doc, source));
  THAW_ASSIGN(c.vocab_size, r.uint("vocab_size"));
  THAW_ASSIGN(c.hidden_size, r.uint("hidden_size"));
  THAW_ASSIGN(c.intermediate_size, r.uint("intermediate_size"));
  THAW_ASSIGN(c.num_layers, r.uint("num_hidden_layers"));
  THAW_ASSIGN(c.num_heads, r.uint("num_attention_heads"));
  THAW_ASSIGN(c.num_kv_heads, r.uint_or("num_key_value_heads", c.num_heads));
  THAW_ASSIGN(c.head_dim, r.uint_or("head_dim", c.num_heads == 0 ? 0 : c.hidden_size / c.num_heads));
  THAW_ASSIGN(c.max_position_embeddings, r.uint("max_position_embeddings"));

  // transformers 5 folds rope_theta and the scaling into "rope_parameters".
  const json* rope_params = nullptr;
  if (auto it = doc.find("rope_parameters"); it != doc.end() && it->is_object())
    rope_params = &*it;
  double theta_fallback = 10000.0;
  if (rope_params != nullptr) {
    THAW_ASSIGN(theta_fallback,
                (field_reader{*rope_params, source, "rope_parameters."}.number_or("rope_theta",
                                                                                  10000.0)));
  }
  THAW_ASSIGN(c.rope_theta, r.number_or("rope_theta", theta_fallback));
  // The HF classes default to 1e-6 when a config omits it.
  THAW_ASSIGN(c.rms_norm_eps, r.number_or("rms_norm_eps", 1e-6));
  THAW_ASSIGN(c.tie_word_embeddings, r.boolean_or("tie_word_embeddings", false));
  THAW_ASSIGN(c.attention_bias, r.boolean_or("attention_bias", false));
  if (c.arch == architecture::qwen2)
    c.attention_bias = true; // Qwen2's q/k/v projections always carry biases

  THAW_ASSIGN(c.sliding_window, r.uint_or("sliding_window", 0));
  if (c.arch == architecture::qwen2) {
    // Qwen2 configs state a window but only use it when use_sliding_window is set.
    THAW_ASSIGN(bool use, r.boolean_or("use_sliding_window", false));
    if (!use)
      c.sliding_window = 0;
  }

  THAW_ASSIGN(auto bos, r.token_ids("bos_token_id"));
  if (bos.size() > 1)
    return r.bad("bos_token_id", "expected one token id");
  c.bos_token_id = bos.empty() ? -1 : bos[0];
  THAW_ASSIGN(c.eos_token_ids, r.token_ids("eos_token_id"));

  if (r.has("rope_scaling")) {
    THAW_ASSIGN(c.rope_scaling, parse_rope_scaling(doc.at("rope_scaling"), source, "rope_scaling"));
  } else if (rope_params != nullptr) {
    THAW_ASSIGN(c.rope_scaling, parse_rope_scaling(*rope_params, source, "rope_parameters"));
  }

  // transformers 4.56 renamed torch_dtype to dtype.
  const char* dtype_key = r.has("torch_dtype") ? "torch_dtype" : "dtype";
  THAW_ASSIGN(auto dtype_name, r.string_or(dtype_key, "float32"));
  auto dt = parse_dtype(dtype_name);
  if (!dt)
    return with_context(std::move(dt).err(),
                        std::string{source} + ": field '" + dtype_key + "'");
  c.torch_dtype = *dt;

  if (auto ok = c.validate(); !ok)
    return with_context(std::move(ok).err(), source);
  return c;
}

} // namespace

std::string_view to_string(architecture a) noexcept { return hf_model_type(a); }

std::string_view hf_class_name(architecture a) noexcept {
  for (const auto& k : known_archs)
    if (k.arch == a)
      return k.class_name;
  return "unknown";
}

std::string_view hf_model_type(architecture a) noexcept {
  for (const auto& k : known_archs)
    if (k.arch == a)
      return k.model_type;
  return "unknown";
}

expected<architecture> parse_architecture(std::string_view name) {
  for (const auto& k : known_archs)
    if (name == k.class_name || name == k.model_type)
      return k.arch;
  return make_error(errc::unsupported,
                    "unsupported architecture '" + std::string{name} +
                        "' (thaw supports LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM)");
}

status model_config::validate() const {
  auto positive = [](const char* field, std::uint64_t v) -> status {
    if (v == 0)
      return make_error(errc::invalid_argument, std::string{field} + " must be positive");
    return {};
  };
  THAW_TRY(positive("vocab_size", vocab_size));
  THAW_TRY(positive("hidden_size", hidden_size));
  THAW_TRY(positive("intermediate_size", intermediate_size));
  THAW_TRY(positive("num_hidden_layers", num_layers));
  THAW_TRY(positive("num_attention_heads", num_heads));
  THAW_TRY(positive("num_key_value_heads", num_kv_heads));
  THAW_TRY(positive("head_dim", head_dim));
  THAW_TRY(positive("max_position_embeddings", max_position_embeddings));
  if (num_heads % num_kv_heads != 0)
    return make_error(errc::invalid_argument,
                      "num_key_value_heads (" + std::to_string(num_kv_heads) +
                          ") must divide num_attention_heads (" + std::to_string(num_heads) + ")");
  if (head_dim % 2 != 0)
    return make_error(errc::invalid_argument,
                      "head_dim (" + std::to_string(head_dim) + ") must be even for RoPE");
  if (!(rope_theta > 0.0))
    return make_error(errc::invalid_argument, "rope_theta must be positive");
  if (!(rms_norm_eps > 0.0))
    return make_error(errc::invalid_argument, "rms_norm_eps must be positive");
  if (!rope_scaling.type.empty() && !(rope_scaling.factor > 0.0))
    return make_error(errc::invalid_argument, "rope_scaling.factor must be positive");
  return {};
}

expected<model_config> parse_hf_config(std::string_view json_text, std::string_view source) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::exception& e) {
    return make_error(errc::parse_error, std::string{source} + ": invalid JSON: " + e.what());
  }
  try {
    return parse_config_object(doc, source);
  } catch (const json::exception& e) {
    // The readers check types first; this is a last line of defence, not a code path.
    return make_error(errc::parse_error, std::string{source} + ": " + e.what());
  }
}

std::string to_hf_config_json(const model_config& cfg) {
  // Keys sorted, two-space indent: what PretrainedConfig.to_json_string() writes.
  json j;
  j["architectures"] = json::array({std::string{hf_class_name(cfg.arch)}});
  j["model_type"] = std::string{hf_model_type(cfg.arch)};
  j["vocab_size"] = cfg.vocab_size;
  j["hidden_size"] = cfg.hidden_size;
  j["intermediate_size"] = cfg.intermediate_size;
  j["num_hidden_layers"] = cfg.num_layers;
  j["num_attention_heads"] = cfg.num_heads;
  j["num_key_value_heads"] = cfg.num_kv_heads;
  j["head_dim"] = cfg.head_dim;
  j["max_position_embeddings"] = cfg.max_position_embeddings;
  j["rope_theta"] = cfg.rope_theta;
  j["rms_norm_eps"] = cfg.rms_norm_eps;
  j["tie_word_embeddings"] = cfg.tie_word_embeddings;
  j["hidden_act"] = "silu";
  j["initializer_range"] = 0.02;
  j["attention_dropout"] = 0.0;
  j["use_cache"] = true;
  switch (cfg.arch) {
    case architecture::llama:
      j["attention_bias"] = cfg.attention_bias;
      j["mlp_bias"] = false;
      j["pretraining_tp"] = 1;
      if (cfg.sliding_window != 0)
        j["sliding_window"] = cfg.sliding_window;
      break;
    case architecture::qwen2:
      j["use_sliding_window"] = cfg.sliding_window != 0;
      j["sliding_window"] = cfg.sliding_window != 0 ? json(cfg.sliding_window) : json(nullptr);
      j["max_window_layers"] = cfg.num_layers;
      break;
    case architecture::mistral:
      if (cfg.attention_bias)
        j["attention_bias"] = true;
      j["sliding_window"] = cfg.sliding_window != 0 ? json(cfg.sliding_window) : json(nullptr);
      break;
  }
  j["bos_token_id"] = cfg.bos_token_id >= 0 ? json(cfg.bos_token_id) : json(nullptr);
  if (cfg.eos_token_ids.empty())
    j["eos_token_id"] = nullptr;
  else if (cfg.eos_token_ids.size() == 1)
    j["eos_token_id"] = cfg.eos_token_ids[0];
  else
    j["eos_token_id"] = cfg.eos_token_ids;
  if (cfg.rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    const auto& rs = cfg.rope_scaling;
    json s;
    s["rope_type"] = rs.type;
    s["factor"] = rs.factor;
    // Only the keys transformers expects for each type, so that it does not warn.
    if (rs.type == "llama3") {
      s["low_freq_factor"] = rs.low_freq_factor;
      s["high_freq_factor"] = rs.high_freq_factor;
    }
    if (rs.type == "llama3" || rs.original_max_position_embeddings != 0)
      s["original_max_position_embeddings"] = rs.original_max_position_embeddings;
    j["rope_scaling"] = std::move(s);
  }
  switch (cfg.torch_dtype) {
    case dtype::f32: j["torch_dtype"] = "float32"; break;
    case dtype::f16: j["torch_dtype"] = "float16"; break;
    case dtype::bf16: j["torch_dtype"] = "bfloat16"; break;
  }
  return j.dump(2) + "\n";
}

std::vector<tensor_spec> expected_tensors(const model_config& cfg) {
  const auto hidden = cfg.hidden_size;
  const auto q_dim = cfg.num_heads * cfg.head_dim;
  const auto kv_dim = cfg.num_kv_heads * cfg.head_dim;
  const auto inter = cfg.intermediate_size;
  const auto last = static_cast<std::int32_t>(cfg.num_layers);

  std::vector<tensor_spec> out;
  out.reserve(3 + cfg.num_layers * 12);
  out.push_back({"model.embed_tokens.weight", {cfg.vocab_size, hidden}, -1});
  for (std::uint64_t i = 0; i < cfg.num_layers; ++i) {
    const auto layer = static_cast<std::int32_t>(i);
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back({p + "input_layernorm.weight", {hidden}, layer});
    out.push_back({p + "self_attn.q_proj.weight", {q_dim, hidden}, layer});
    if (cfg.attention_bias)
      out.push_back({p + "self_attn.q_proj.bias", {q_dim}, layer});
    out.push_back({p + "self_attn.k_proj.weight", {kv_dim, hidden}, layer});
    if (cfg.attention_bias)
      out.push_back({p + "self_attn.k_proj.bias", {kv_dim}, layer});
    out.push_back({p + "self_attn.v_proj.weight", {kv_dim, hidden}, layer});
    if (cfg.attention_bias)
      out.push_back({p + "self_attn.v_proj.bias", {kv_dim}, layer});
    out.push_back({p + "self_attn.o_proj.weight", {hidden, q_dim}, layer});
    out.push_back({p + "post_attention_layernorm.weight", {hidden}, layer});
    out.push_back({p + "mlp.gate_proj.weight", {inter, hidden}, layer});
    out.push_back({p + "mlp.up_proj.weight", {inter, hidden}, layer});
    out.push_back({p + "mlp.down_proj.weight", {hidden, inter}, layer});
  }
  out.push_back({"model.norm.weight", {hidden}, last});
  if (!cfg.tie_word_embeddings)
    out.push_back({"lm_head.weight", {cfg.vocab_size, hidden}, last});
  return out;
}

std::uint64_t parameter_count(const model_config& cfg) {
  std::uint64_t total = 0;
  for (const auto& t : expected_tensors(cfg)) {
    std::uint64_t n = 1;
    for (auto d : t.shape)
      n *= d;
    total += n;
  }
  return total;
}

bool is_ignorable_tensor(std::string_view name) noexcept {
  return name.ends_with("rotary_emb.inv_freq");
}

std::string shape_to_string(const std::vector<std::uint64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

} // namespace thaw
