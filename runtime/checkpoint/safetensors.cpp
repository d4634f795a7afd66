#include "runtime/checkpoint/safetensors.hpp"

#include "runtime/common/posix.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace thaw {

namespace {

// Header order matters to callers ("tensors in header order"), so keep keys as written.
using ordered_json = nlohmann::ordered_json;

/// Anything larger is not a header but a corrupt length; real headers are at most a few MB.
constexpr std::uint64_t max_header_bytes = 100'000'000;

/// Safetensors dtypes thaw recognises but does not load.
constexpr std::array<std::string_view, 14> other_safetensors_dtypes{
    "F64", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL", "F8_E4M3", "F8_E5M2",
    "F8_E8M0", "F4"};

error header_error(const std::filesystem::path& path, std::string_view tensor, std::string why,
                   errc code = errc::corrupt) {
  std::string msg = path.string() + ": ";
  if (!tensor.empty())
    msg += "tensor '" + std::string{tensor} + "': ";
  msg += why;
  return make_error(code, std::move(msg));
}

expected<std::uint64_t> read_u64(const ordered_json& v, const std::filesystem::path& path,
                                 std::string_view tensor, std::string_view field) {
  if (!v.is_number_unsigned())
    return header_error(path, tensor,
                        std::string{field} + ": expected a non-negative integer, got " + v.dump());
  return v.get<std::uint64_t>();
}

expected<safetensors_tensor> parse_entry(const std::string& name, const ordered_json& v,
                                         const std::filesystem::path& path,
                                         std::uint64_t data_bytes, std::uint64_t data_offset) {
  if (!v.is_object())
    return header_error(path, name, "expected an object with dtype, shape and data_offsets");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.contains(key))
      return header_error(path, name, std::string{"missing field '"} + key + "'");

  const auto& dt = v.at("dtype");
  if (!dt.is_string())
    return header_error(path, name, "dtype: expected a string, got " + dt.dump());
  auto dt_name = dt.get<std::string>();
  dtype type{};
  if (dt_name == "F32") {
    type = dtype::f32;
  } else if (dt_name == "F16") {
    type = dtype::f16;
  } else if (dt_name == "BF16") {
    type = dtype::bf16;
  } else {
    bool known = std::find(other_safetensors_dtypes.begin(), other_safetensors_dtypes.end(),
                           dt_name) != other_safetensors_dtypes.end();
    return header_error(path, name,
                        "dtype " + dt_name + (known ? " is not supported" : " is not a safetensors dtype") +
                            " (thaw loads F32, F16 and BF16)",
                        known ? errc::unsupported : errc::corrupt);
  }

  safetensors_tensor t;
  t.name = name;
  t.type = type;
  const auto& shape = v.at("shape");
  if (!shape.is_array())
    return header_error(path, name, "shape: expected a list, got " + shape.dump());
  std::uint64_t elements = 1;
  for (const auto& d : shape) {
    THAW_ASSIGN(auto dim, read_u64(d, path, name, "shape"));
    if (__builtin_mul_overflow(elements, dim, &elements))
      return header_error(path, name, "shape " + shape.dump() + " overflows");
    t.shape.push_back(dim);
  }
  std::uint64_t want = 0;
  if (__builtin_mul_overflow(elements, dtype_size(type), &want))
    return header_error(path, name, "shape " + shape.dump() + " overflows");

  const auto& offs = v.at("data_offsets");
  if (!offs.is_array() || offs.size() != 2)
    return header_error(path, name, "data_offsets: expected [begin, end], got " + offs.dump());
  THAW_ASSIGN(auto begin, read_u64(offs[0], path, name, "data_offsets"));
  THAW_ASSIGN(auto end, read_u64(offs[1], path, name, "data_offsets"));
  if (end < begin)
    return header_error(path, name, "data_offsets " + offs.dump() + " end before they begin");
  if (end - begin != want)
    return header_error(path, name,
                        "data_offsets " + offs.dump() + " span " + std::to_string(end - begin) +
                            " bytes but shape " + shape.dump() + " of " + dt_name + " needs " +
                            std::to_string(want));
  if (end > data_bytes)
    return header_error(path, name,
                        "data_offsets " + offs.dump() + " run past the end of the data (" +
                            std::to_string(data_bytes) + " bytes after the header)");
  t.offset = data_offset + begin;
  t.bytes = want;
  return t;
}

expected<std::map<std::string, std::string>> parse_metadata(const ordered_json& v,
                                                            const std::filesystem::path& path) {
  std::map<std::string, std::string> out;
  if (!v.is_object())
    return header_error(path, "", "__metadata__: expected an object of strings");
  for (const auto& [key, value] : v.items()) {
    if (!value.is_string())
      return header_error(path, "", "__metadata__." + key + ": expected a string, got " +
                                        value.dump());
    out[key] = value.get<std::string>();
  }
  return out;
}

/// Shard file names come from a JSON file: keep them inside the model directory.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name != "." && name != "..";
}

expected<std::vector<safetensors_file>> open_sharded(const std::filesystem::path& dir,
                                                     const std::filesystem::path& index_path) {
  THAW_ASSIGN(auto text, read_text_file(index_path));
  ordered_json doc;
  try {
    doc = ordered_json::parse(text);
  } catch (const ordered_json::exception& e) {
    return make_error(errc::parse_error, index_path.string() + ": invalid JSON: " + e.what());
  }
  if (!doc.is_object() || !doc.contains("weight_map") || !doc.at("weight_map").is_object())
    return make_error(errc::parse_error, index_path.string() + ": field 'weight_map': missing or "
                                                               "not an object");
  // tensor -> shard, and the shards in name order (model-00001-of-0000N first).
  std::map<std::string, std::string> assigned;
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : doc.at("weight_map").items()) {
    if (!shard.is_string() || !is_plain_file_name(shard.get<std::string>()))
      return make_error(errc::parse_error, index_path.string() + ": field 'weight_map." + tensor +
                                               "': expected a file name, got " + shard.dump());
    assigned[tensor] = shard.get<std::string>();
    shards.insert(shard.get<std::string>());
  }
  if (assigned.empty())
    return make_error(errc::corrupt, index_path.string() + ": weight_map lists no tensors");

  std::vector<safetensors_file> files;
  for (const auto& shard : shards) {
    auto shard_path = dir / shard;
    if (!std::filesystem::exists(shard_path)) {
      std::string example;
      for (const auto& [tensor, s] : assigned)
        if (s == shard) {
          example = tensor;
          break;
        }
      return make_error(errc::not_found, index_path.string() + ": shard " + shard +
                                             " (holding tensor '" + example +
                                             "', among others) does not exist");
    }
    THAW_ASSIGN(auto file, read_safetensors_header(shard_path));
    std::size_t held = 0;
    for (const auto& t : file.tensors) {
      auto it = assigned.find(t.name);
      if (it == assigned.end())
        return make_error(errc::corrupt, shard_path.string() + ": tensor '" + t.name +
                                             "' is not listed in " +
                                             index_path.filename().string());
      if (it->second != shard)
        return make_error(errc::corrupt, shard_path.string() + ": tensor '" + t.name +
                                             "' is here but " + index_path.filename().string() +
                                             " assigns it to " + it->second);
      ++held;
    }
    std::size_t want = 0;
    for (const auto& [tensor, s] : assigned)
      want += s == shard ? 1 : 0;
    if (held != want) {
      std::set<std::string> present;
      for (const auto& t : file.tensors)
        present.insert(t.name);
      for (const auto& [tensor, s] : assigned)
        if (s == shard && present.count(tensor) == 0)
          return make_error(errc::corrupt, shard_path.string() + ": tensor '" + tensor + "', which " +
                                               index_path.filename().string() +
                                               " assigns to this shard, is missing");
    }
    files.push_back(std::move(file));
  }
  return files;
}

} // namespace

std::uint64_t safetensors_entry::bytes() const {
  std::uint64_t n = dtype_size(type);
  for (auto d : shape)
    n *= d;
  return n;
}

expected<safetensors_file> read_safetensors_header(const std::filesystem::path& path) {
  THAW_ASSIGN(auto fd, open_file(path, O_RDONLY));
  safetensors_file out;
  out.path = path;
  THAW_ASSIGN(out.file_bytes, file_size(fd.get(), path));
  if (out.file_bytes < 8)
    return header_error(path, "", "too short to be safetensors (" +
                                      std::to_string(out.file_bytes) + " bytes)");
  std::array<unsigned char, 8> len_bytes{};
  THAW_TRY(pread_full(fd.get(), len_bytes.data(), len_bytes.size(), 0, path));
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i)
    header_len = (header_len << 8) | len_bytes[static_cast<std::size_t>(i)];
  if (header_len > max_header_bytes)
    return header_error(path, "", "header length " + std::to_string(header_len) +
                                      " is not plausible (over 100 MB): not a safetensors file?");
  if (header_len > out.file_bytes - 8)
    return header_error(path, "", "header length " + std::to_string(header_len) +
                                      " runs past the end of the file (" +
                                      std::to_string(out.file_bytes) + " bytes)");
  out.data_offset = 8 + header_len;

  std::string header(header_len, '\0');
  THAW_TRY(pread_full(fd.get(), header.data(), header.size(), 8, path));
  ordered_json doc;
  try {
    doc = ordered_json::parse(header);
  } catch (const ordered_json::exception& e) {
    return header_error(path, "", std::string{"header is not valid JSON: "} + e.what(),
                        errc::parse_error);
  }
  if (!doc.is_object())
    return header_error(path, "", "header is not a JSON object", errc::parse_error);

  const std::uint64_t data_bytes = out.file_bytes - out.data_offset;
  try {
    for (const auto& [key, value] : doc.items()) {
      if (key == "__metadata__") {
        THAW_ASSIGN(out.metadata, parse_metadata(value, path));
        continue;
      }
      THAW_ASSIGN(auto t, parse_entry(key, value, path, data_bytes, out.data_offset));
      out.tensors.push_back(std::move(t));
    }
  } catch (const ordered_json::exception& e) {
    return header_error(path, "", std::string{"malformed header: "} + e.what(), errc::parse_error);
  }

  // Overlap check on a copy sorted by offset; empty tensors occupy nothing.
  std::vector<const safetensors_tensor*> by_offset;
  for (const auto& t : out.tensors)
    if (t.bytes > 0)
      by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    const auto* prev = by_offset[i - 1];
    const auto* cur = by_offset[i];
    if (cur->offset < prev->offset + prev->bytes)
      return header_error(path, cur->name, "data overlaps tensor '" + prev->name + "'");
  }
  return out;
}

expected<std::vector<safetensors_file>> open_hf_weights(const std::filesystem::path& dir) {
  // transformers prefers the single file when both are present; so do we.
  auto single = dir / "model.safetensors";
  if (std::filesystem::exists(single)) {
    THAW_ASSIGN(auto file, read_safetensors_header(single));
    std::vector<safetensors_file> files;
    files.push_back(std::move(file));
    return files;
  }
  auto index = dir / "model.safetensors.index.json";
  if (std::filesystem::exists(index))
    return open_sharded(dir, index);
  return make_error(errc::not_found, dir.string() +
                                         ": no model.safetensors or model.safetensors.index.json");
}

status write_safetensors(const std::filesystem::path& path,
                         const std::vector<safetensors_entry>& entries,
                         const safetensors_fill& fill,
                         const std::map<std::string, std::string>& metadata) {
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json meta = ordered_json::object();
    for (const auto& [k, v] : metadata)
      meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::set<std::string> seen;
  std::uint64_t offset = 0;
  std::uint64_t largest = 0;
  for (const auto& e : entries) {
    if (e.name == "__metadata__" || !seen.insert(e.name).second)
      return make_error(errc::invalid_argument, path.string() + ": tensor name '" + e.name +
                                                    "' is reserved or repeated");
    const auto n = e.bytes();
    header[e.name] = {{"dtype", std::string{safetensors_name(e.type)}},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + n}}};
    offset += n;
    largest = std::max(largest, n);
  }
  std::string text = header.dump();
  // Pad so that the data region starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');

  THAW_ASSIGN(auto fd, open_file(path, O_WRONLY | O_CREAT | O_TRUNC));
  auto body = [&]() -> status {
    std::array<unsigned char, 8> len{};
    for (std::size_t i = 0; i < 8; ++i)
      len[i] = static_cast<unsigned char>((text.size() >> (8 * i)) & 0xff);
    THAW_TRY(write_full(fd.get(), len.data(), len.size(), path));
    THAW_TRY(write_full(fd.get(), text.data(), text.size(), path));
    // One buffer, sized for the largest tensor, reused: never more than one tensor in memory.
    // new[] rather than a vector so that a multi-GiB buffer is not zeroed first.
    std::unique_ptr<std::byte[]> buffer{largest > 0 ? new std::byte[largest] : nullptr};
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const auto n = entries[i].bytes();
      std::span<std::byte> out{buffer.get(), static_cast<std::size_t>(n)};
      if (auto ok = fill(i, out); !ok)
        return with_context(std::move(ok).err(),
                            path.string() + ": tensor '" + entries[i].name + "'");
      THAW_TRY(write_full(fd.get(), out.data(), out.size(), path));
    }
    THAW_POSIX_CHECK(::fsync(fd.get()), path.string());
    return {};
  };
  if (auto ok = body(); !ok) {
    // Leave no half-written file behind, but only ever unlink a regular file we were writing
    // (the path may be a device such as /dev/full).
    struct stat st {};
    if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode))
      ::unlink(path.c_str());
    return ok;
  }
  return {};
}

} // namespace thaw
