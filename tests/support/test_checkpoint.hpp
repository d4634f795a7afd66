#pragma once
// Small thaw checkpoints for loader tests: a Llama-shaped config filled in by hand, tensors from
// expected_tensors() with deterministic bytes (a different seed gives a different model and
// content id), written with small chunks and small files so that a test sees many of both.

#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/checkpoint/model_config.hpp"
#include "runtime/checkpoint/writer.hpp"
#include "runtime/common/posix.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fcntl.h>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

namespace thaw::testing {

struct test_model_spec {
  std::uint64_t vocab = 1000;
  std::uint64_t hidden = 64;
  std::uint64_t layers = 2;
  std::uint64_t heads = 4;
  std::uint64_t kv_heads = 2;
  std::uint64_t head_dim = 16;
  std::uint64_t intermediate = 128;
  std::uint64_t seed = 1;
  std::uint64_t chunk_bytes = 64 << 10;
  std::uint64_t max_file_bytes = 256 << 10;
};

inline model_config test_config(const test_model_spec& spec) {
  model_config cfg;
  cfg.arch = architecture::llama;
  cfg.vocab_size = spec.vocab;
  cfg.hidden_size = spec.hidden;
  cfg.intermediate_size = spec.intermediate;
  cfg.num_layers = spec.layers;
  cfg.num_heads = spec.heads;
  cfg.num_kv_heads = spec.kv_heads;
  cfg.head_dim = spec.head_dim;
  cfg.max_position_embeddings = 256;
  cfg.bos_token_id = 1;
  cfg.eos_token_ids = {2};
  cfg.torch_dtype = dtype::f32;
  return cfg;
}

/// The bytes tensor number `index` of a model with `seed` holds: a splitmix64 stream, so every
/// tensor and every model differs and a misplaced byte range shows.
inline void fill_test_tensor(std::span<std::byte> out, std::uint64_t seed, std::uint64_t index) {
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + index * 0xd1b54a32d192ed03ull + 1;
  for (std::size_t i = 0; i < out.size(); i += 8) {
    x += 0x9e3779b97f4a7c15ull;
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(out.data() + i, &z, std::min<std::size_t>(8, out.size() - i));
  }
}

inline std::vector<std::byte> test_tensor_bytes(const tensor_entry& t, std::uint64_t seed,
                                                std::uint64_t index) {
  std::vector<std::byte> bytes(t.bytes);
  fill_test_tensor(bytes, seed, index);
  return bytes;
}

/// Writes the checkpoint of `spec` to `dir` (which must not exist).
inline status write_test_checkpoint(const std::filesystem::path& dir, const test_model_spec& spec) {
  const auto cfg = test_config(spec);
  std::vector<tensor_source> tensors;
  std::uint64_t index = 0;
  for (const auto& t : expected_tensors(cfg)) {
    tensor_source src;
    src.name = t.name;
    src.type = cfg.torch_dtype;
    src.shape = t.shape;
    src.layer = t.layer;
    src.fill = [seed = spec.seed, i = index](std::span<std::byte> out) -> status {
      fill_test_tensor(out, seed, i);
      return {};
    };
    tensors.push_back(std::move(src));
    ++index;
  }
  writer_options opt;
  opt.chunk_bytes = spec.chunk_bytes;
  opt.max_file_bytes = spec.max_file_bytes;
  return write_checkpoint(dir, cfg, tensors, opt, "loader test seed " + std::to_string(spec.seed));
}

/// Writes and opens the checkpoint of `spec` at `dir`.
inline expected<checkpoint> make_test_checkpoint(const std::filesystem::path& dir,
                                                 const test_model_spec& spec) {
  THAW_TRY(write_test_checkpoint(dir, spec));
  return checkpoint::open(dir);
}

/// The data files of `ckpt` concatenated: what a loaded device buffer must equal.
inline std::vector<std::byte> concatenated_data(const checkpoint& ckpt) {
  std::vector<std::byte> all;
  all.reserve(ckpt.total_bytes());
  for (std::uint32_t f = 0; f < ckpt.info().files.size(); ++f) {
    auto text = read_text_file(ckpt.file_path(f));
    if (!text)
      return {};
    const auto* p = reinterpret_cast<const std::byte*>(text->data());
    all.insert(all.end(), p, p + text->size());
  }
  return all;
}

/// Flips one byte of a file at `offset`.
inline status flip_byte(const std::filesystem::path& file, std::uint64_t offset) {
  THAW_ASSIGN(auto fd, open_file(file, O_RDWR));
  unsigned char b = 0;
  THAW_TRY(pread_full(fd.get(), &b, 1, offset, file));
  b ^= 0xff;
  if (::pwrite(fd.get(), &b, 1, static_cast<off_t>(offset)) != 1)
    return make_error(errc::io_error, file.string() + ": pwrite failed");
  return {};
}

} // namespace thaw::testing
