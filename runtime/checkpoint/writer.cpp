#include "runtime/checkpoint/writer.hpp"

#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/common/hash.hpp"
#include "runtime/common/posix.hpp"

#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <unistd.h>

namespace thaw {
namespace {

constexpr std::uint64_t align_up(std::uint64_t v) {
  return (v + checkpoint_alignment - 1) / checkpoint_alignment * checkpoint_alignment;
}

std::string data_file_name(std::size_t index) {
  char name[32];
  std::snprintf(name, sizeof name, "data-%05zu.bin", index);
  return name;
}

// Lays out tensors in order: each at an aligned offset, a new file when the next tensor would
// push the current one past max_file_bytes. Checksum lists are sized but not yet filled.
expected<manifest> plan_layout(const model_config& cfg, const std::vector<tensor_source>& tensors,
                               const writer_options& opt, std::string source) {
  manifest m;
  m.config = cfg;
  m.source = std::move(source);
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    tensor_entry e;
    e.name = t.name;
    e.type = t.type;
    e.shape = t.shape;
    e.layer = t.layer;
    e.bytes = dtype_size(t.type);
    for (auto d : t.shape)
      e.bytes *= d;
    if (m.files.empty() || (offset > 0 && offset + align_up(e.bytes) > opt.max_file_bytes)) {
      if (!m.files.empty())
        m.files.back().bytes = offset;
      m.files.push_back(data_file_entry{data_file_name(m.files.size()), 0, opt.chunk_bytes, {}});
      offset = 0;
    }
    e.file = static_cast<std::uint32_t>(m.files.size() - 1);
    e.offset = offset;
    offset += align_up(e.bytes);
    m.tensors.push_back(std::move(e));
  }
  if (!m.files.empty())
    m.files.back().bytes = offset;
  for (auto& f : m.files) {
    f.chunk_checksums.assign((f.bytes + f.chunk_bytes - 1) / f.chunk_bytes, 0);
    m.total_bytes += f.bytes;
  }
  THAW_TRY(validate_manifest(m));
  return m;
}

// Streams one data file: tensors are appended through a chunk-sized staging buffer so that
// each full chunk is hashed and written once.
class chunked_file_writer {
public:
  chunked_file_writer(unique_fd fd, std::filesystem::path path, data_file_entry& entry)
      : fd_(std::move(fd)), path_(std::move(path)), entry_(entry),
        staging_(static_cast<std::byte*>(std::aligned_alloc(checkpoint_alignment, entry.chunk_bytes))) {}

  status append(const std::byte* data, std::uint64_t n) {
    while (n > 0) {
      auto take = std::min<std::uint64_t>(n, entry_.chunk_bytes - fill_);
      if (data != nullptr) {
        std::memcpy(staging_.get() + fill_, data, take);
        data += take;
      } else {
        std::memset(staging_.get() + fill_, 0, take);
      }
      fill_ += take;
      n -= take;
      if (fill_ == entry_.chunk_bytes)
        THAW_TRY(flush());
    }
    return {};
  }

  status pad_to(std::uint64_t file_offset) {
    return append(nullptr, file_offset - written_ - fill_);
  }

  status finish() {
    THAW_TRY(pad_to(entry_.bytes));
    if (fill_ > 0)
      THAW_TRY(flush());
    THAW_POSIX_CHECK(::fsync(fd_.get()), path_.string());
    return {};
  }

private:
  status flush() {
    entry_.chunk_checksums[chunk_++] = xxh3_64(staging_.get(), fill_);
    THAW_TRY(write_full(fd_.get(), staging_.get(), fill_, path_));
    written_ += fill_;
    fill_ = 0;
    return {};
  }

  struct free_deleter {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };

  unique_fd fd_;
  std::filesystem::path path_;
  data_file_entry& entry_;
  std::unique_ptr<std::byte, free_deleter> staging_;
  std::uint64_t fill_ = 0;
  std::uint64_t written_ = 0;
  std::size_t chunk_ = 0;
};

status write_data(const std::filesystem::path& dir, manifest& m,
                  const std::vector<tensor_source>& tensors, const writer_options& opt) {
  std::uint64_t done = 0;
  std::size_t next = 0;
  for (std::uint32_t f = 0; f < m.files.size(); ++f) {
    auto path = dir / m.files[f].name;
    THAW_ASSIGN(auto fd, open_file(path, O_WRONLY | O_CREAT | O_EXCL));
    chunked_file_writer out(std::move(fd), path, m.files[f]);
    std::vector<std::byte> buffer;
    for (; next < tensors.size() && m.tensors[next].file == f; ++next) {
      if (opt.cancel != nullptr && opt.cancel->load())
        return make_error(errc::cancelled, "checkpoint writing cancelled");
      const auto& entry = m.tensors[next];
      buffer.resize(entry.bytes);
      if (auto s = tensors[next].fill(std::span<std::byte>(buffer.data(), buffer.size())); !s)
        return with_context(std::move(s).err(), "tensor '" + entry.name + "'");
      THAW_TRY(out.pad_to(entry.offset));
      THAW_TRY(out.append(buffer.data(), entry.bytes));
      done += entry.bytes;
      if (opt.on_progress)
        opt.on_progress(done, m.total_bytes);
    }
    THAW_TRY(out.finish());
  }
  return {};
}

status copy_side_files(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (from.empty())
    return {};
  for (const char* name : checkpoint_side_files) {
    auto src = from / name;
    if (!std::filesystem::exists(src))
      continue;
    THAW_ASSIGN(auto text, read_text_file(src));
    THAW_TRY(write_text_file(to / name, text));
  }
  return {};
}

} // namespace

status write_checkpoint(const std::filesystem::path& out_dir, const model_config& cfg,
                        const std::vector<tensor_source>& tensors, const writer_options& options,
                        std::string source) {
  if (options.chunk_bytes == 0 || options.chunk_bytes % checkpoint_alignment != 0)
    return make_error(errc::invalid_argument, "chunk size " + std::to_string(options.chunk_bytes) +
                                                  " is not a positive multiple of 4096");
  if (options.max_file_bytes == 0 || options.max_file_bytes % checkpoint_alignment != 0)
    return make_error(errc::invalid_argument, "maximum file size " +
                                                  std::to_string(options.max_file_bytes) +
                                                  " is not a positive multiple of 4096");
  THAW_ASSIGN(auto m, plan_layout(cfg, tensors, options, std::move(source)));
  if (std::filesystem::exists(out_dir))
    return make_error(errc::already_exists, out_dir.string() + ": already exists; not replaced");
  THAW_ASSIGN(auto temp, make_temp_dir(out_dir));
  auto result = [&]() -> status {
    THAW_TRY(write_data(temp, m, tensors, options));
    THAW_TRY(write_text_file(temp / manifest_file_name, encode_manifest(m)));
    THAW_TRY(copy_side_files(options.extra_files_from, temp));
    // Read back what we wrote through the validating reader before making it visible.
    THAW_TRY(checkpoint::open(temp));
    return publish_dir(temp, out_dir);
  }();
  if (!result)
    remove_tree_quietly(temp);
  return result;
}

} // namespace thaw
