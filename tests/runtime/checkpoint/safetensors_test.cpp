#include "runtime/checkpoint/safetensors.hpp"

#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <iterator>

namespace thaw {
namespace {

using testing::temp_dir;

/// Writes a safetensors file by hand: length, `header` verbatim, `data_bytes` bytes of data.
void write_raw(const std::filesystem::path& path, const std::string& header,
               std::size_t data_bytes, std::uint64_t claimed_len = 0) {
  std::ofstream out(path, std::ios::binary);
  std::uint64_t len = claimed_len != 0 ? claimed_len : header.size();
  for (int i = 0; i < 8; ++i)
    out.put(static_cast<char>((len >> (8 * i)) & 0xff));
  out << header;
  out << std::string(data_bytes, '\x01');
}

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool mentions(const error& e, const std::string& what) {
  return e.message.find(what) != std::string::npos;
}

/// Fills tensor i with bytes i*16 + position: every tensor's data is recognisable.
status pattern_fill(std::size_t index, std::span<std::byte> out) {
  for (std::size_t j = 0; j < out.size(); ++j)
    out[j] = static_cast<std::byte>(index * 16 + j);
  return {};
}

TEST(Safetensors, WriteReadRoundTrip) {
  temp_dir dir;
  auto path = dir / "m.safetensors";
  std::vector<safetensors_entry> entries = {{"b.weight", dtype::f32, {2, 3}},
                                            {"a.bias", dtype::bf16, {5}},
                                            {"c.norm", dtype::f16, {1, 2, 2}},
                                            {"scalar", dtype::f32, {}}};
  ASSERT_TRUE(write_safetensors(path, entries, pattern_fill, {{"format", "pt"}}));

  // The file as the format defines it, checked without the reader.
  auto raw = slurp(path);
  std::uint64_t len = 0;
  for (int i = 7; i >= 0; --i)
    len = (len << 8) | static_cast<unsigned char>(raw[static_cast<std::size_t>(i)]);
  EXPECT_EQ(len % 8, 0u);
  EXPECT_EQ(raw.size(), 8 + len + 24 + 10 + 8 + 4);
  auto header = nlohmann::json::parse(raw.substr(8, len));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(header["a.bias"]["dtype"], "BF16");
  EXPECT_EQ(header["a.bias"]["data_offsets"], nlohmann::json::parse("[24, 34]"));
  EXPECT_EQ(header["c.norm"]["shape"], nlohmann::json::parse("[1, 2, 2]"));

  auto file = read_safetensors_header(path);
  ASSERT_TRUE(file) << file.err().to_string();
  EXPECT_EQ(file->file_bytes, raw.size());
  EXPECT_EQ(file->data_offset, 8 + len);
  EXPECT_EQ(file->metadata.at("format"), "pt");
  ASSERT_EQ(file->tensors.size(), entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& t = file->tensors[i];
    EXPECT_EQ(t.name, entries[i].name); // header order is write order
    EXPECT_EQ(t.type, entries[i].type);
    EXPECT_EQ(t.shape, entries[i].shape);
    EXPECT_EQ(t.bytes, entries[i].bytes());
    for (std::size_t j = 0; j < t.bytes; ++j)
      ASSERT_EQ(static_cast<unsigned char>(raw[t.offset + j]),
                static_cast<unsigned char>(i * 16 + j))
          << t.name << " byte " << j;
  }
}

TEST(Safetensors, FillErrorNamesTensorAndLeavesNoFile) {
  temp_dir dir;
  auto path = dir / "m.safetensors";
  std::vector<safetensors_entry> entries = {{"ok", dtype::f32, {4}}, {"bad", dtype::f32, {4}}};
  auto st = write_safetensors(path, entries, [](std::size_t i, std::span<std::byte> out) -> status {
    if (i == 1)
      return make_error(errc::io_error, "source went away");
    std::memset(out.data(), 0, out.size());
    return {};
  });
  ASSERT_FALSE(st);
  EXPECT_EQ(st.err().code, errc::io_error);
  EXPECT_TRUE(mentions(st.err(), "bad")) << st.err().message;
  EXPECT_TRUE(mentions(st.err(), path.string()));
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Safetensors, FullDiskIsNoSpace) {
  if (!std::filesystem::exists("/dev/full"))
    GTEST_SKIP() << "no /dev/full";
  std::vector<safetensors_entry> entries = {{"w", dtype::f32, {1024}}};
  auto st = write_safetensors("/dev/full", entries, pattern_fill);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.err().code, errc::no_space);
  EXPECT_TRUE(mentions(st.err(), "/dev/full"));
  EXPECT_TRUE(std::filesystem::exists("/dev/full"));
}

struct bad_case {
  const char* what;
  std::string header;
  std::size_t data_bytes;
  errc code;
  const char* named; ///< text the message must contain besides the file name
};

TEST(Safetensors, RejectsBadHeaders) {
  const std::vector<bad_case> cases = {
      {"bad json", R"({"w": {"dtype": "F32", "shape": [2], )", 8, errc::parse_error, "JSON"},
      {"not an object", R"([1, 2])", 0, errc::parse_error, "object"},
      {"bytes != shape * dtype", R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})",
       16, errc::corrupt, "'w'"},
      {"offsets past end", R"({"w": {"dtype": "F16", "shape": [4], "data_offsets": [8, 16]}})", 12,
       errc::corrupt, "'w'"},
      {"end before begin", R"({"w": {"dtype": "F16", "shape": [0], "data_offsets": [8, 4]}})", 12,
       errc::corrupt, "'w'"},
      {"overlap",
       R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
           "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
       16, errc::corrupt, "'b'"},
      {"I64", R"({"ids": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}})", 16,
       errc::unsupported, "I64"},
      {"U8", R"({"mask": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})", 2,
       errc::unsupported, "'mask'"},
      {"missing data_offsets", R"({"w": {"dtype": "F32", "shape": [2]}})", 8, errc::corrupt,
       "data_offsets"},
      {"negative dim", R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8,
       errc::corrupt, "shape"},
      {"metadata not strings", R"({"__metadata__": {"step": 3}})", 0, errc::corrupt, "step"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    temp_dir dir;
    auto path = dir / "bad.safetensors";
    write_raw(path, c.header, c.data_bytes);
    auto file = read_safetensors_header(path);
    ASSERT_FALSE(file);
    EXPECT_EQ(file.err().code, c.code) << file.err().to_string();
    EXPECT_TRUE(mentions(file.err(), path.string())) << file.err().message;
    EXPECT_TRUE(mentions(file.err(), c.named)) << file.err().message;
  }
}

TEST(Safetensors, RejectsBadLengths) {
  temp_dir dir;
  auto past_eof = dir / "past_eof.safetensors";
  write_raw(past_eof, R"({})", 0, 4096);
  auto a = read_safetensors_header(past_eof);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.err().code, errc::corrupt);
  EXPECT_TRUE(mentions(a.err(), "past_eof.safetensors")) << a.err().message;

  auto huge = dir / "huge.safetensors";
  write_raw(huge, R"({})", 0, 1ULL << 40);
  auto b = read_safetensors_header(huge);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.err().code, errc::corrupt);

  auto tiny = dir / "tiny.safetensors";
  std::ofstream(tiny) << "abc";
  auto c = read_safetensors_header(tiny);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.err().code, errc::corrupt);

  auto missing = read_safetensors_header(dir / "nope.safetensors");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.err().code, errc::not_found);
}

/// A two-shard model: a.weight and b.weight in shard 1, c.weight in shard 2.
void write_sharded(const std::filesystem::path& dir, const std::string& index_json) {
  const std::string s1 = "model-00001-of-00002.safetensors";
  const std::string s2 = "model-00002-of-00002.safetensors";
  ASSERT_TRUE(write_safetensors(dir / s1,
                                {{"a.weight", dtype::bf16, {4, 2}}, {"b.weight", dtype::bf16, {2}}},
                                pattern_fill));
  ASSERT_TRUE(write_safetensors(dir / s2, {{"c.weight", dtype::f32, {3}}}, pattern_fill));
  std::ofstream(dir / "model.safetensors.index.json") << index_json;
}

constexpr const char* good_index = R"({"metadata": {"total_size": 32}, "weight_map": {
  "a.weight": "model-00001-of-00002.safetensors",
  "b.weight": "model-00001-of-00002.safetensors",
  "c.weight": "model-00002-of-00002.safetensors"}})";

TEST(Safetensors, OpensSingleAndShardedWeights) {
  temp_dir single;
  ASSERT_TRUE(write_safetensors(single / "model.safetensors", {{"w", dtype::f32, {2}}},
                                pattern_fill));
  auto one = open_hf_weights(single.path());
  ASSERT_TRUE(one) << one.err().to_string();
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].tensors[0].name, "w");

  temp_dir sharded;
  write_sharded(sharded.path(), good_index);
  auto files = open_hf_weights(sharded.path());
  ASSERT_TRUE(files) << files.err().to_string();
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[0].path.filename(), "model-00001-of-00002.safetensors");
  ASSERT_EQ((*files)[0].tensors.size(), 2u);
  EXPECT_EQ((*files)[1].tensors[0].name, "c.weight");
}

TEST(Safetensors, ShardedIndexErrorsNameShardAndTensor) {
  {
    temp_dir dir;
    write_sharded(dir.path(), good_index);
    std::filesystem::remove(dir / "model-00002-of-00002.safetensors");
    auto files = open_hf_weights(dir.path());
    ASSERT_FALSE(files);
    EXPECT_EQ(files.err().code, errc::not_found);
    EXPECT_TRUE(mentions(files.err(), "model-00002-of-00002.safetensors")) << files.err().message;
    EXPECT_TRUE(mentions(files.err(), "c.weight"));
  }
  {
    temp_dir dir; // b.weight sits in shard 1 but the index says shard 2
    std::string index = good_index;
    index.replace(index.find("\"b.weight\": \"model-00001"), 24, "\"b.weight\": \"model-00002");
    write_sharded(dir.path(), index);
    auto files = open_hf_weights(dir.path());
    ASSERT_FALSE(files);
    EXPECT_EQ(files.err().code, errc::corrupt);
    EXPECT_TRUE(mentions(files.err(), "'b.weight'")) << files.err().message;
    EXPECT_TRUE(mentions(files.err(), "model-00002-of-00002.safetensors"));
  }
  {
    temp_dir dir; // the index lists a tensor that no shard holds
    std::string index = good_index;
    index.insert(index.find("\"c.weight\""), R"("d.weight": "model-00002-of-00002.safetensors", )");
    write_sharded(dir.path(), index);
    auto files = open_hf_weights(dir.path());
    ASSERT_FALSE(files);
    EXPECT_EQ(files.err().code, errc::corrupt);
    EXPECT_TRUE(mentions(files.err(), "'d.weight'")) << files.err().message;
  }
  {
    temp_dir dir; // a shard holds a tensor the index does not list
    std::string index = good_index;
    index.erase(index.find("\"a.weight\""), std::string{R"("a.weight": "model-00001-of-00002.safetensors",)"}.size());
    write_sharded(dir.path(), index);
    auto files = open_hf_weights(dir.path());
    ASSERT_FALSE(files);
    EXPECT_EQ(files.err().code, errc::corrupt);
    EXPECT_TRUE(mentions(files.err(), "'a.weight'")) << files.err().message;
  }
  {
    temp_dir dir;
    auto files = open_hf_weights(dir.path());
    ASSERT_FALSE(files);
    EXPECT_EQ(files.err().code, errc::not_found);
    EXPECT_TRUE(mentions(files.err(), dir.path().string()));
  }
}

} // namespace
} // namespace thaw
