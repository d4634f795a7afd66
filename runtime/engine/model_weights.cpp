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

} // namespace thaw
