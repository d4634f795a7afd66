#include "runtime/engine/model_weights.hpp"

namespace thaw {

weight_files weights_in(const checkpoint& ckpt, const device_buffer& buffer) {
  weight_files w;
  const auto* base = static_cast<const std::byte*>(const_cast<device_buffer&>(buffer).data());
  for (std::uint32_t f = 0; f < ckpt.info().files.size(); ++f)
    w.files.push_back(base + ckpt.file_base(f));
  return w;
}

expected<weight> find_weight(const checkpoint& ckpt, const weight_files& files,
                             const std::string& name, const std::vector<std::uint64_t>& shape,
                             std::string_view who) {
  const std::string prefix = std::string(who) + ": ";
  const tensor_entry* t = ckpt.find_tensor(name);
  if (t == nullptr)
    return make_error(errc::invalid_argument, prefix + "checkpoint has no tensor " + name);
  if (t->shape != shape)
    return make_error(errc::invalid_argument, prefix + name + " has shape " +
                                                  shape_to_string(t->shape) + ", expected " +
                                                  shape_to_string(shape));
  std::uint64_t n = 1;
  for (auto d : shape)
    n *= d;
  if (t->file >= files.files.size() || t->file >= ckpt.info().files.size() ||
      t->offset + n * dtype_size(t->type) > ckpt.info().files[t->file].bytes)
    return make_error(errc::invalid_argument, prefix + name + " lies outside its file");
  return weight{files.files[t->file] + t->offset, t->type};
}

expected<model_tensors> find_model_tensors(const checkpoint& ckpt, const weight_files& files,
                                           std::string_view who) {
  const auto& c = ckpt.config();
  const std::uint64_t h = c.hidden_size, qd = c.num_heads * c.head_dim,
                      kd = c.num_kv_heads * c.head_dim, f = c.intermediate_size;
  auto find = [&](const std::string& name, const std::vector<std::uint64_t>& shape) {
    return find_weight(ckpt, files, name, shape, who);
  };
  model_tensors t;
  THAW_ASSIGN(t.embed, find("model.embed_tokens.weight", {c.vocab_size, h}));
  if (c.tie_word_embeddings && ckpt.find_tensor("lm_head.weight") == nullptr) {
    t.lm_head = t.embed;
  } else {
    THAW_ASSIGN(t.lm_head, find("lm_head.weight", {c.vocab_size, h}));
  }
  THAW_ASSIGN(t.final_norm, find("model.norm.weight", {h}));
  for (std::uint64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    model_tensors::layer w;
    THAW_ASSIGN(w.q, find(p + "self_attn.q_proj.weight", {qd, h}));
    THAW_ASSIGN(w.k, find(p + "self_attn.k_proj.weight", {kd, h}));
    THAW_ASSIGN(w.v, find(p + "self_attn.v_proj.weight", {kd, h}));
    THAW_ASSIGN(w.o, find(p + "self_attn.o_proj.weight", {h, qd}));
    THAW_ASSIGN(w.gate, find(p + "mlp.gate_proj.weight", {f, h}));
    THAW_ASSIGN(w.up, find(p + "mlp.up_proj.weight", {f, h}));
    THAW_ASSIGN(w.down, find(p + "mlp.down_proj.weight", {h, f}));
    THAW_ASSIGN(w.attn_norm, find(p + "input_layernorm.weight", {h}));
    THAW_ASSIGN(w.mlp_norm, find(p + "post_attention_layernorm.weight", {h}));
    if (c.attention_bias) {
      THAW_ASSIGN(w.q_bias, find(p + "self_attn.q_proj.bias", {qd}));
      THAW_ASSIGN(w.k_bias, find(p + "self_attn.k_proj.bias", {kd}));
      THAW_ASSIGN(w.v_bias, find(p + "self_attn.v_proj.bias", {kd}));
    }
    t.layers.push_back(w);
  }
  return t;
}

} // namespace thaw
