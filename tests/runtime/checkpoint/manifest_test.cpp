#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/checkpoint/manifest.hpp"

#include <gtest/gtest.h>

namespace thaw {
namespace {

// A small, valid manifest built by hand (not by the writer under test).
manifest small_manifest() {
  manifest m;
  auto& c = m.config;
  c.arch = architecture::llama;
  c.vocab_size = 64;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_layers = 1;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 8;
  c.max_position_embeddings = 128;
  c.tie_word_embeddings = true;
  c.eos_token_ids = {2, 7};
  c.bos_token_id = 1;
  c.rope_scaling = {"llama3", 32.0, 1.0, 4.0, 8192};
  c.torch_dtype = dtype::f32;
  std::uint64_t offset = 0;
  for (const auto& spec : expected_tensors(c)) {
    tensor_entry t;
    t.name = spec.name;
    t.type = dtype::f32;
    t.shape = spec.shape;
    t.layer = spec.layer;
    t.bytes = 4;
    for (auto d : spec.shape)
      t.bytes *= d;
    t.offset = offset;
    offset += (t.bytes + 4095) / 4096 * 4096;
    m.tensors.push_back(t);
  }
  data_file_entry f{"data-00000.bin", offset, 8192, {}};
  for (std::uint64_t o = 0; o < offset; o += 8192)
    f.chunk_checksums.push_back(o * 31 + 7);
  m.files.push_back(f);
  m.total_bytes = offset;
  m.source = "hand-made";
  return m;
}

TEST(Manifest, EncodeDecodeRoundTrip) {
  auto m = small_manifest();
  ASSERT_TRUE(validate_manifest(m)) << validate_manifest(m).err().to_string();
  auto bytes = encode_manifest(m);
  auto back = decode_manifest(bytes);
  ASSERT_TRUE(back) << back.err().to_string();
  EXPECT_EQ(*back, m);
}

TEST(Manifest, GarbageIsParseError) {
  auto r = decode_manifest(std::string(64, '\xff'), "x/manifest.bin");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::parse_error);
  EXPECT_NE(r.err().message.find("x/manifest.bin"), std::string::npos);
  EXPECT_EQ(decode_manifest("abc").err().code, errc::parse_error);
}

TEST(Manifest, OtherVersionIsUnsupported) {
  auto m = small_manifest();
  m.format_version = 2;
  auto r = decode_manifest(encode_manifest(m));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::unsupported);
  EXPECT_NE(r.err().message.find("version 2"), std::string::npos);
}

void expect_invalid(const manifest& m, const std::string& needle) {
  auto s = validate_manifest(m);
  ASSERT_FALSE(s) << "expected a failure mentioning " << needle;
  EXPECT_NE(s.err().message.find(needle), std::string::npos) << s.err().message;
}

TEST(Manifest, ValidationNamesTheProblem) {
  {
    auto m = small_manifest();
    m.tensors[3].offset = m.files[0].bytes; // past the end
    expect_invalid(m, "past the end of data-00000.bin");
  }
  {
    auto m = small_manifest();
    m.tensors[2].bytes += 4;
    expect_invalid(m, m.tensors[2].name);
  }
  {
    auto m = small_manifest();
    m.tensors[1].offset += 8;
    expect_invalid(m, "aligned");
  }
  {
    auto m = small_manifest();
    m.tensors[2].offset = m.tensors[1].offset; // overlap
    expect_invalid(m, "overlaps");
  }
  {
    auto m = small_manifest();
    m.tensors[1].name = "model.layers.0.self_attn.qq_proj.weight";
    expect_invalid(m, "qq_proj");
  }
  {
    auto m = small_manifest();
    m.tensors.pop_back(); // model.norm.weight
    expect_invalid(m, "model.norm.weight' is missing");
  }
  {
    auto m = small_manifest();
    m.tensors[0].shape = {64, 17};
    m.tensors[0].bytes = 64 * 17 * 4;
    expect_invalid(m, "shape [64, 17]");
  }
  {
    auto m = small_manifest();
    m.files[0].chunk_checksums.pop_back();
    expect_invalid(m, "checksums");
  }
  {
    auto m = small_manifest();
    m.total_bytes += 4096;
    expect_invalid(m, "total_bytes");
  }
  {
    auto m = small_manifest();
    m.files[0].name = "../etc/passwd";
    expect_invalid(m, "plain file name");
  }
  {
    auto m = small_manifest();
    m.tensors[1].file = 5;
    expect_invalid(m, "file index 5");
  }
}

} // namespace
} // namespace thaw
