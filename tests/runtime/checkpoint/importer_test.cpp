#include "runtime/checkpoint/importer.hpp"

#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/checkpoint/safetensors.hpp"
#include "runtime/common/hash.hpp"
#include "runtime/common/posix.hpp"
#include "tests/support/test_models.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <map>

namespace thaw {
namespace {

using testing::temp_dir;

std::vector<std::byte> read_range(const std::filesystem::path& path, std::uint64_t offset,
                                  std::uint64_t n) {
  std::vector<std::byte> out(n);
  auto fd = open_file(path, O_RDONLY);
  EXPECT_TRUE(fd);
  EXPECT_TRUE(pread_full(fd->get(), out.data(), n, offset, path));
  return out;
}

// The source tensors of a HF directory, by name, converted to `to` by the (separately tested)
// element conversion.
std::map<std::string, std::vector<std::byte>> source_tensors(const std::filesystem::path& hf,
                                                             std::optional<dtype> to) {
  std::map<std::string, std::vector<std::byte>> out;
  auto files = open_hf_weights(hf);
  EXPECT_TRUE(files);
  for (const auto& f : *files)
    for (const auto& t : f.tensors) {
      auto raw = read_range(f.path, t.offset, t.bytes);
      dtype target = to.value_or(t.type);
      std::size_t n = t.bytes / dtype_size(t.type);
      std::vector<std::byte> conv(n * dtype_size(target));
      convert_elements(t.type, raw.data(), target, conv.data(), n);
      out[t.name] = std::move(conv);
    }
  return out;
}

// Every tensor of the checkpoint equals the source tensor, converted as asked; every chunk's
// checksum matches; the device layout is the concatenation of files.
void expect_round_trip(const std::filesystem::path& hf, const std::filesystem::path& ckpt_dir,
                       std::optional<dtype> to) {
  auto ck = checkpoint::open(ckpt_dir);
  ASSERT_TRUE(ck) << ck.err().to_string();
  auto want = source_tensors(hf, to);
  ASSERT_EQ(ck->info().tensors.size(), want.size());
  for (const auto& t : ck->info().tensors) {
    ASSERT_TRUE(want.count(t.name)) << t.name;
    EXPECT_EQ(t.offset % 4096, 0u);
    if (to) {
      EXPECT_EQ(t.type, *to);
    }
    auto got = read_range(ck->file_path(t.file), t.offset, t.bytes);
    ASSERT_EQ(got, want[t.name]) << t.name;
  }
  std::uint64_t device_offset = 0;
  for (const auto& c : ck->chunks()) {
    EXPECT_EQ(c.device_offset, ck->file_base(c.file) + c.file_offset);
    EXPECT_EQ(c.device_offset, device_offset);
    device_offset += c.bytes;
    auto bytes = read_range(ck->file_path(c.file), c.file_offset, c.bytes);
    EXPECT_EQ(xxh3_64(bytes.data(), bytes.size()), c.checksum);
  }
  EXPECT_EQ(device_offset, ck->total_bytes());
}

TEST(Importer, RoundTripEveryDtypeConversion) {
  temp_dir dir;
  const dtype all[] = {dtype::f32, dtype::f16, dtype::bf16};
  for (dtype from : all) {
    auto hf = dir / ("hf-" + std::string{to_string(from)});
    testing::make_hf(hf, "tiny", from);
    std::vector<std::optional<dtype>> targets = {std::nullopt, dtype::f32, dtype::f16, dtype::bf16};
    for (auto to : targets) {
      SCOPED_TRACE(std::string{to_string(from)} + " -> " +
                   (to ? std::string{to_string(*to)} : "keep"));
      auto out = dir / ("ck-" + std::string{to_string(from)} + "-" +
                        (to ? std::string{to_string(*to)} : "keep"));
      testing::import(hf, out, to);
      expect_round_trip(hf, out, to);
      auto ck = checkpoint::open(out);
      EXPECT_EQ(ck->config().torch_dtype, to.value_or(from));
    }
  }
}

TEST(Importer, ShardedQwen2AndMistral) {
  temp_dir dir;
  // Shards of 400 KB force several safetensors files; files of 256 KiB force several data files.
  testing::make_hf(dir / "qwen", "tiny-qwen2", dtype::bf16, 3, 400'000);
  ASSERT_TRUE(std::filesystem::exists(dir / "qwen/model.safetensors.index.json"));
  testing::import(dir / "qwen", dir / "qwen-ck", std::nullopt, 16 << 10, 256 << 10);
  expect_round_trip(dir / "qwen", dir / "qwen-ck", std::nullopt);
  auto ck = checkpoint::open(dir / "qwen-ck");
  EXPECT_EQ(ck->config().arch, architecture::qwen2);
  EXPECT_TRUE(ck->find_tensor("model.layers.1.self_attn.k_proj.bias"));
  EXPECT_GT(ck->info().files.size(), 1u);

  testing::make_hf(dir / "mistral", "tiny-mistral", dtype::f16, 4);
  testing::import(dir / "mistral", dir / "mistral-ck", dtype::bf16);
  expect_round_trip(dir / "mistral", dir / "mistral-ck", dtype::bf16);
  auto mk = checkpoint::open(dir / "mistral-ck");
  EXPECT_EQ(mk->config().arch, architecture::mistral);
  EXPECT_TRUE(mk->find_tensor("lm_head.weight"));
}

TEST(Importer, LayoutIsOrderedByLayerWithPrefixEnds) {
  temp_dir dir;
  testing::make_hf(dir / "hf", "tiny");
  testing::import(dir / "hf", dir / "ck");
  auto ck = checkpoint::open(dir / "ck");
  ASSERT_TRUE(ck);
  const auto& cfg = ck->config();
  std::int32_t last = static_cast<std::int32_t>(cfg.num_layers);
  for (std::int32_t l = -1; l < last; ++l)
    EXPECT_LT(ck->layer_end(l), ck->layer_end(l + 1));
  EXPECT_LE(ck->layer_end(last), ck->total_bytes());
  // Every tensor of layer l ends at or before layer_end(l).
  for (const auto& t : ck->info().tensors)
    EXPECT_LE(ck->file_base(t.file) + t.offset + t.bytes, ck->layer_end(t.layer)) << t.name;
  EXPECT_EQ(ck->info().tensors.front().name, "model.embed_tokens.weight");
  EXPECT_TRUE(std::filesystem::exists(dir / "ck/tokenizer.json"));
  EXPECT_TRUE(std::filesystem::exists(dir / "ck/config.json"));
}

TEST(Importer, ContentIdIgnoresLocation) {
  temp_dir dir;
  testing::make_hf(dir / "hf", "tiny");
  testing::import(dir / "hf", dir / "a");
  std::filesystem::copy(dir / "a", dir / "b", std::filesystem::copy_options::recursive);
  auto a = checkpoint::open(dir / "a");
  auto b = checkpoint::open(dir / "b");
  EXPECT_EQ(a->content_id(), b->content_id());
  testing::make_hf(dir / "hf2", "tiny", dtype::f32, 2);
  testing::import(dir / "hf2", dir / "c");
  EXPECT_NE(a->content_id(), checkpoint::open(dir / "c")->content_id());
}

} // namespace
} // namespace thaw
