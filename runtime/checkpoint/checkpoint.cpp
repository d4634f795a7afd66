#include "runtime/checkpoint/checkpoint.hpp"

#include "runtime/common/hash.hpp"
#include "runtime/common/posix.hpp"

#include <algorithm>
#include <cstdio>
#include <fcntl.h>
#include <map>
#include <optional>
#include <sys/stat.h>

namespace thaw {
namespace {

error bad(std::string message) { return make_error(errc::corrupt, std::move(message)); }

bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name != manifest_file_name;
}

// product(shape) * size, or nullopt on overflow.
std::optional<std::uint64_t> shape_bytes(const std::vector<std::uint64_t>& shape, dtype t) {
  std::uint64_t n = dtype_size(t);
  for (auto d : shape) {
    if (d != 0 && n > UINT64_MAX / d)
      return std::nullopt;
    n *= d;
  }
  return n;
}

status validate_files(const manifest& m) {
  if (m.files.empty())
    return bad("manifest lists no data files");
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < m.files.size(); ++i) {
    const auto& f = m.files[i];
    std::string what = "data file " + std::to_string(i) + " ('" + f.name + "')";
    if (!is_plain_file_name(f.name))
      return bad(what + ": not a plain file name");
    if (f.bytes == 0 || f.bytes % checkpoint_alignment != 0)
      return bad(what + ": size " + std::to_string(f.bytes) + " is not a positive multiple of " +
                 std::to_string(checkpoint_alignment));
    if (f.chunk_bytes == 0 || f.chunk_bytes % checkpoint_alignment != 0)
      return bad(what + ": chunk size " + std::to_string(f.chunk_bytes) +
                 " is not a positive multiple of " + std::to_string(checkpoint_alignment));
    std::uint64_t chunks = (f.bytes + f.chunk_bytes - 1) / f.chunk_bytes;
    if (f.chunk_checksums.size() != chunks)
      return bad(what + ": " + std::to_string(f.chunk_checksums.size()) + " checksums for " +
                 std::to_string(chunks) + " chunks");
    if (total > UINT64_MAX - f.bytes)
      return bad("data files' sizes overflow");
    total += f.bytes;
    for (std::size_t j = 0; j < i; ++j)
      if (m.files[j].name == f.name)
        return bad(what + ": listed twice");
  }
  if (total != m.total_bytes)
    return bad("manifest total_bytes " + std::to_string(m.total_bytes) +
               " differs from the sum of its data files, " + std::to_string(total));
  return {};
}

status validate_tensors(const manifest& m) {
  const auto& cfg = m.config;
  auto want = expected_tensors(cfg);
  std::map<std::string, const tensor_spec*> specs;
  for (const auto& s : want)
    specs[s.name] = &s;
  std::map<std::string, bool> seen;
  std::uint64_t prev_end = 0;
  std::int32_t prev_layer = -1;
  std::vector<std::uint64_t> bases(m.files.size(), 0);
  for (std::size_t i = 1; i < m.files.size(); ++i)
    bases[i] = bases[i - 1] + m.files[i - 1].bytes;
  for (const auto& t : m.tensors) {
    std::string what = "tensor '" + t.name + "'";
    auto spec = specs.find(t.name);
    if (spec == specs.end())
      return bad(what + " is not a tensor of a " + std::string{to_string(cfg.arch)} +
                 " model with this config");
    if (seen[t.name])
      return bad(what + " is listed twice");
    seen[t.name] = true;
    if (t.shape != spec->second->shape)
      return bad(what + ": shape " + shape_to_string(t.shape) + " but the config implies " +
                 shape_to_string(spec->second->shape));
    if (t.layer != spec->second->layer)
      return bad(what + ": layer " + std::to_string(t.layer) + ", expected " +
                 std::to_string(spec->second->layer));
    auto bytes = shape_bytes(t.shape, t.type);
    if (!bytes || *bytes != t.bytes)
      return bad(what + ": " + std::to_string(t.bytes) + " bytes, but shape " +
                 shape_to_string(t.shape) + " of " + std::string{to_string(t.type)} + " needs " +
                 (bytes ? std::to_string(*bytes) : std::string{"more than 2^64"}));
    if (t.file >= m.files.size())
      return bad(what + ": file index " + std::to_string(t.file) + " but there are only " +
                 std::to_string(m.files.size()) + " data files");
    const auto& f = m.files[t.file];
    if (t.offset % checkpoint_alignment != 0)
      return bad(what + ": offset " + std::to_string(t.offset) + " is not 4096-byte aligned");
    if (t.offset > f.bytes || t.bytes > f.bytes - t.offset)
      return bad(what + ": bytes [" + std::to_string(t.offset) + ", " +
                 std::to_string(t.offset + t.bytes) + ") lie past the end of " + f.name + " (" +
                 std::to_string(f.bytes) + " bytes)");
    // Load order: layers never go backwards and tensors never overlap or go backwards in the
    // device buffer, which is what lets the loader publish a per-layer prefix.
    std::uint64_t start = bases[t.file] + t.offset;
    if (t.layer < prev_layer)
      return bad(what + ": layer " + std::to_string(t.layer) + " after layer " +
                 std::to_string(prev_layer) + " (tensors must be ordered by layer)");
    if (start < prev_end)
      return bad(what + ": overlaps or precedes the tensor before it");
    prev_layer = t.layer;
    prev_end = start + t.bytes;
  }
  for (const auto& s : want)
    if (!seen[s.name])
      return bad("tensor '" + s.name + "' is missing (required by the " +
                 std::string{to_string(cfg.arch)} + " architecture)");
  return {};
}

} // namespace

status validate_manifest(const manifest& m) {
  if (m.format_version != checkpoint_format_version)
    return make_error(errc::unsupported, "format version " + std::to_string(m.format_version) +
                                             " (this thaw reads version " +
                                             std::to_string(checkpoint_format_version) + ")");
  if (auto s = m.config.validate(); !s)
    return with_context(std::move(s).err(), "model config");
  THAW_TRY(validate_files(m));
  THAW_TRY(validate_tensors(m));
  return {};
}

expected<checkpoint> checkpoint::open(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    return make_error(errc::not_found, dir.string() + ": no such checkpoint directory");
  THAW_ASSIGN(auto bytes, read_text_file(dir / manifest_file_name));
  return build(dir, std::move(bytes), true);
}

expected<checkpoint> checkpoint::from_manifest(const std::filesystem::path& dir,
                                               std::string manifest_bytes) {
  return build(dir, std::move(manifest_bytes), false);
}

expected<checkpoint> checkpoint::build(const std::filesystem::path& dir, std::string bytes,
                                       bool check_files) {
  const auto manifest_path = dir / manifest_file_name;
  THAW_ASSIGN(auto m, decode_manifest(bytes, manifest_path.string()));
  if (auto s = validate_manifest(m); !s)
    return with_context(std::move(s).err(), manifest_path.string());

  checkpoint ck;
  ck.dir_ = dir;
  ck.manifest_ = std::move(m);
  char id[17];
  std::snprintf(id, sizeof id, "%016llx",
                static_cast<unsigned long long>(xxh3_64(bytes.data(), bytes.size())));
  ck.content_id_ = id;
  ck.manifest_bytes_ = std::make_shared<const std::string>(std::move(bytes));

  const auto& files = ck.manifest_.files;
  std::uint64_t base = 0;
  for (std::uint32_t i = 0; i < files.size(); ++i) {
    if (check_files) {
      auto path = ck.file_path(i);
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0)
        return unexpected(posix_error(errno, "stat()", path.string(), __FILE__, __LINE__));
      auto size = static_cast<std::uint64_t>(st.st_size);
      if (size != files[i].bytes)
        return make_error(errc::corrupt,
                          path.string() + ": " + std::to_string(size) + " bytes, manifest says " +
                              std::to_string(files[i].bytes) +
                              (size < files[i].bytes ? " (truncated)" : " (extra bytes)"));
    }
    ck.file_bases_.push_back(base);
    for (std::uint64_t off = 0, c = 0; off < files[i].bytes; off += files[i].chunk_bytes, ++c)
      ck.chunks_.push_back(checkpoint_chunk{i, off, std::min(files[i].chunk_bytes, files[i].bytes - off),
                                            base + off, files[i].chunk_checksums[c]});
    base += files[i].bytes;
  }

  auto layers = static_cast<std::size_t>(ck.manifest_.config.num_layers) + 2;
  ck.layer_ends_.assign(layers, 0);
  for (const auto& t : ck.manifest_.tensors) {
    auto& end = ck.layer_ends_[static_cast<std::size_t>(t.layer + 1)];
    end = std::max(end, ck.file_bases_[t.file] + t.offset + t.bytes);
  }
  for (std::size_t i = 1; i < layers; ++i)
    ck.layer_ends_[i] = std::max(ck.layer_ends_[i], ck.layer_ends_[i - 1]);
  return ck;
}

std::filesystem::path checkpoint::file_path(std::uint32_t file) const {
  return dir_ / manifest_.files.at(file).name;
}

std::uint64_t checkpoint::layer_end(std::int32_t layer) const {
  if (layer < -1)
    return 0;
  auto index = std::min(static_cast<std::size_t>(layer + 1), layer_ends_.size() - 1);
  return layer_ends_[index];
}

const tensor_entry* checkpoint::find_tensor(std::string_view name) const {
  for (const auto& t : manifest_.tensors)
    if (t.name == name)
      return &t;
  return nullptr;
}

status checkpoint::verify_data(
    const std::function<void(std::uint64_t, std::uint64_t)>& on_progress) const {
  std::vector<std::byte> buffer;
  std::uint64_t done = 0;
  for (std::uint32_t f = 0; f < manifest_.files.size(); ++f) {
    auto path = file_path(f);
    THAW_ASSIGN(auto fd, open_file(path, O_RDONLY));
    std::uint64_t index = 0;
    for (const auto& c : chunks_) {
      if (c.file != f)
        continue;
      buffer.resize(c.bytes);
      THAW_TRY(pread_full(fd.get(), buffer.data(), c.bytes, c.file_offset, path));
      if (xxh3_64(buffer.data(), c.bytes) != c.checksum)
        return make_error(errc::corrupt, path.string() + ": chunk " + std::to_string(index) +
                                             " (bytes " + std::to_string(c.file_offset) + ".." +
                                             std::to_string(c.file_offset + c.bytes) +
                                             ") fails its checksum");
      ++index;
      done += c.bytes;
      if (on_progress)
        on_progress(done, manifest_.total_bytes);
    }
  }
  return {};
}

} // namespace thaw
