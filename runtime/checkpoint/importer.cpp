#include "runtime/checkpoint/importer.hpp"

#include "runtime/checkpoint/model_config.hpp"
#include "runtime/checkpoint/safetensors.hpp"
#include "runtime/common/posix.hpp"

#include <fcntl.h>
#include <map>
#include <memory>
#include <spdlog/spdlog.h>

namespace thaw {
namespace {

struct located_tensor {
  const safetensors_file* file = nullptr;
  const safetensors_tensor* tensor = nullptr;
};

// Matches the safetensors' tensors against what the architecture needs: every required tensor
// present with the config's shape, nothing unknown left over.
expected<std::vector<located_tensor>> match_tensors(const model_config& cfg,
                                                    const std::vector<safetensors_file>& files) {
  std::map<std::string, located_tensor> by_name;
  for (const auto& f : files)
    for (const auto& t : f.tensors)
      by_name[t.name] = located_tensor{&f, &t};

  std::vector<located_tensor> ordered;
  for (const auto& spec : expected_tensors(cfg)) {
    auto it = by_name.find(spec.name);
    if (it == by_name.end())
      return make_error(errc::corrupt, "tensor '" + spec.name + "' is missing (required by the " +
                                           std::string{to_string(cfg.arch)} +
                                           " architecture with this config.json)");
    const auto& t = *it->second.tensor;
    if (t.shape != spec.shape)
      return make_error(errc::corrupt, it->second.file->path.filename().string() + ": tensor '" +
                                           t.name + "' has shape " + shape_to_string(t.shape) +
                                           " but config.json implies " + shape_to_string(spec.shape));
    ordered.push_back(it->second);
    by_name.erase(it);
  }
  for (const auto& [name, where] : by_name) {
    if (is_ignorable_tensor(name))
      continue;
    if (name == "lm_head.weight" && cfg.tie_word_embeddings) {
      spdlog::debug("skipping lm_head.weight: tie_word_embeddings is set");
      continue;
    }
    return make_error(errc::unsupported, where.file->path.filename().string() + ": tensor '" +
                                             name + "' is not part of a " +
                                             std::string{to_string(cfg.arch)} + " model");
  }
  return ordered;
}

// Reads tensors out of the source files, converting dtype on the way.
class tensor_reader {
public:
  status read(const located_tensor& src, dtype to, std::span<std::byte> out) {
    THAW_ASSIGN(int fd, fd_for(*src.file));
    const auto& t = *src.tensor;
    if (t.type == to)
      return pread_full(fd, out.data(), out.size(), t.offset, src.file->path);
    scratch_.resize(t.bytes);
    THAW_TRY(pread_full(fd, scratch_.data(), t.bytes, t.offset, src.file->path));
    convert_elements(t.type, scratch_.data(), to, out.data(), t.bytes / dtype_size(t.type));
    return {};
  }

private:
  expected<int> fd_for(const safetensors_file& file) {
    auto it = fds_.find(file.path.string());
    if (it == fds_.end()) {
      THAW_ASSIGN(auto fd, open_file(file.path, O_RDONLY));
      it = fds_.emplace(file.path.string(), std::move(fd)).first;
    }
    return it->second.get();
  }

  std::map<std::string, unique_fd> fds_;
  std::vector<std::byte> scratch_;
};

} // namespace

status import_hf(const std::filesystem::path& hf_dir, const std::filesystem::path& out_dir,
                 const import_options& options) {
  std::error_code ec;
  if (!std::filesystem::is_directory(hf_dir, ec))
    return make_error(errc::not_found, hf_dir.string() + ": no such model directory");
  auto config_path = hf_dir / "config.json";
  THAW_ASSIGN(auto config_text, read_text_file(config_path));
  THAW_ASSIGN(auto cfg, parse_hf_config(config_text, config_path.string()));
  if (auto s = cfg.validate(); !s)
    return with_context(std::move(s).err(), config_path.string());
  THAW_ASSIGN(auto files, open_hf_weights(hf_dir));
  auto matched = match_tensors(cfg, files);
  if (!matched)
    return with_context(std::move(matched).err(), hf_dir.string());

  dtype first = matched->front().tensor->type;
  cfg.torch_dtype = options.target_dtype.value_or(first);

  auto reader = std::make_shared<tensor_reader>();
  std::vector<tensor_source> sources;
  auto specs = expected_tensors(cfg);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    located_tensor src = (*matched)[i];
    dtype to = options.target_dtype.value_or(src.tensor->type);
    sources.push_back(tensor_source{
        specs[i].name, to, specs[i].shape, specs[i].layer,
        [reader, src, to](std::span<std::byte> out) { return reader->read(src, to, out); }});
  }
  writer_options wopt = options.writer;
  wopt.extra_files_from = hf_dir;
  std::string source = "imported from " + std::filesystem::absolute(hf_dir).string();
  return write_checkpoint(out_dir, cfg, sources, wopt, source);
}

} // namespace thaw
