#include "runtime/checkpoint/make_model.hpp"

#include "runtime/checkpoint/safetensors.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>

namespace thaw {
namespace {

using testing::llama2_tokenizer;
using testing::temp_dir;

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

make_model_options tiny_options(std::uint64_t seed, dtype type = dtype::bf16) {
  make_model_options o;
  o.preset = "tiny";
  o.tokenizer_json = llama2_tokenizer();
  o.seed = seed;
  o.type = type;
  return o;
}

/// A tensor's elements as f32, read straight from the file.
std::vector<float> read_tensor(const safetensors_file& file, const std::string& name) {
  auto raw = slurp(file.path);
  for (const auto& t : file.tensors) {
    if (t.name != name)
      continue;
    const auto n = t.bytes / dtype_size(t.type);
    std::vector<float> out(n);
    convert_elements(t.type, raw.data() + t.offset, dtype::f32, out.data(), n);
    return out;
  }
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

/// Parent directory holds nothing but `keep` (no temporary directories left behind).
void expect_only(const std::filesystem::path& parent, const std::vector<std::string>& keep) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(parent))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, keep);
}

TEST(MakeModel, TokenizerInfoFromLlama2) {
  auto info = read_tokenizer_info(llama2_tokenizer());
  ASSERT_TRUE(info) << info.err().to_string();
  EXPECT_EQ(info->vocab_size, 32000u);
  EXPECT_EQ(info->bos_token_id, 1);
  EXPECT_EQ(info->eos_token_id, 2);
}

TEST(MakeModel, TokenizerInfoFromQwen3) {
  const std::filesystem::path qwen3{"/work/shared/tokenizers/qwen3/tokenizer.json"};
  if (!std::filesystem::exists(qwen3))
    GTEST_SKIP() << qwen3 << " is not here";
  auto info = read_tokenizer_info(qwen3);
  ASSERT_TRUE(info) << info.err().to_string();
  EXPECT_EQ(info->vocab_size, 151669u);     // last added token <think> ... is id 151668
  EXPECT_EQ(info->eos_token_id, 151645);    // tokenizer_config: <|im_end|>
  EXPECT_EQ(info->bos_token_id, 151643);    // bos_token null: <|endoftext|>, as Qwen's config
}

TEST(MakeModel, WritesHuggingFaceLayout) {
  temp_dir dir;
  auto out = dir / "tiny";
  auto st = make_model(out, tiny_options(1));
  ASSERT_TRUE(st) << st.err().to_string();
  expect_only(dir.path(), {"tiny"});
  // Readable by others, as a directory made with mkdir would be (not mkdtemp's 0700).
  using std::filesystem::perms;
  EXPECT_NE(std::filesystem::status(out).permissions() & perms::others_read, perms::none);
  expect_only(out, {"config.json", "generation_config.json", "model.safetensors",
                    "tokenizer.json", "tokenizer_config.json"});

  auto cfg = parse_hf_config(slurp(out / "config.json"));
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  EXPECT_EQ(cfg->vocab_size, 32000u);
  EXPECT_EQ(cfg->bos_token_id, 1);
  EXPECT_EQ(cfg->eos_token_ids, (std::vector<std::int64_t>{2}));
  EXPECT_EQ(cfg->torch_dtype, dtype::bf16);
  EXPECT_EQ(cfg->hidden_size, 16u);
  EXPECT_TRUE(cfg->tie_word_embeddings);

  auto gen = nlohmann::json::parse(slurp(out / "generation_config.json"));
  EXPECT_EQ(gen["bos_token_id"], 1);
  EXPECT_EQ(gen["eos_token_id"], 2);
  EXPECT_EQ(slurp(out / "tokenizer.json"), slurp(llama2_tokenizer()));

  auto files = open_hf_weights(out);
  ASSERT_TRUE(files) << files.err().to_string();
  ASSERT_EQ(files->size(), 1u);
  const auto specs = expected_tensors(*cfg);
  const auto& tensors = (*files)[0].tensors;
  ASSERT_EQ(tensors.size(), specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ(tensors[i].name, specs[i].name);
    EXPECT_EQ(tensors[i].shape, specs[i].shape);
    EXPECT_EQ(tensors[i].type, dtype::bf16);
    if (i > 0) { // written contiguously in load order
      EXPECT_EQ(tensors[i].offset, tensors[i - 1].offset + tensors[i - 1].bytes);
    }
  }
  EXPECT_EQ((*files)[0].metadata.at("format"), "pt");
}

TEST(MakeModel, SameSeedSameBytesWhateverTheThreads) {
  temp_dir dir;
  auto a = tiny_options(7);
  a.threads = 1;
  auto b = tiny_options(7);
  b.threads = 5;
  auto c = tiny_options(8);
  ASSERT_TRUE(make_model(dir / "a", a));
  ASSERT_TRUE(make_model(dir / "b", b));
  ASSERT_TRUE(make_model(dir / "c", c));
  auto bytes_a = slurp(dir / "a" / "model.safetensors");
  EXPECT_GT(bytes_a.size(), 1'000'000u);
  EXPECT_EQ(bytes_a, slurp(dir / "b" / "model.safetensors"));
  auto bytes_c = slurp(dir / "c" / "model.safetensors");
  ASSERT_EQ(bytes_a.size(), bytes_c.size());
  EXPECT_NE(bytes_a, bytes_c);
}

TEST(MakeModel, WeightStatistics) {
  temp_dir dir;
  ASSERT_TRUE(make_model(dir / "m", tiny_options(3, dtype::f32)));
  auto files = open_hf_weights(dir / "m");
  ASSERT_TRUE(files);
  const auto& file = (*files)[0];

  auto embed = read_tensor(file, "model.embed_tokens.weight"); // 512,000 elements
  ASSERT_EQ(embed.size(), 32000u * 16);
  double sum = 0, sq = 0;
  std::size_t within_one_sigma = 0;
  for (float v : embed) {
    sum += v;
    sq += static_cast<double>(v) * v;
    within_one_sigma += std::fabs(v) < 0.02f ? 1 : 0;
  }
  const double n = static_cast<double>(embed.size());
  const double mean = sum / n;
  const double sd = std::sqrt(sq / n - mean * mean);
  EXPECT_LT(std::fabs(mean), 0.001);
  EXPECT_NEAR(sd, 0.02, 0.002);
  EXPECT_NEAR(static_cast<double>(within_one_sigma) / n, 0.6827, 0.01); // normal, not uniform

  // Norm weights near one but not identically one; biases do not exist in llama.
  auto norm = read_tensor(file, "model.layers.0.input_layernorm.weight");
  double norm_mean = 0;
  bool all_one = true;
  for (float v : norm) {
    norm_mean += v / static_cast<double>(norm.size());
    all_one = all_one && v == 1.0f;
    EXPECT_NEAR(v, 1.0, 0.15);
  }
  EXPECT_FALSE(all_one);
  EXPECT_NEAR(norm_mean, 1.0, 0.02);

  // Two tensors of the same shape are not copies of each other.
  EXPECT_NE(read_tensor(file, "model.layers.0.mlp.gate_proj.weight"),
            read_tensor(file, "model.layers.0.mlp.up_proj.weight"));
}

TEST(MakeModel, Bf16IsTheRoundedF32) {
  temp_dir dir;
  ASSERT_TRUE(make_model(dir / "f32", tiny_options(5, dtype::f32)));
  ASSERT_TRUE(make_model(dir / "bf16", tiny_options(5, dtype::bf16)));
  auto f32 = open_hf_weights(dir / "f32");
  auto bf16 = open_hf_weights(dir / "bf16");
  ASSERT_TRUE(f32 && bf16);
  const std::string name = "model.layers.1.self_attn.o_proj.weight";
  auto wide = read_tensor((*f32)[0], name);
  auto narrow = read_tensor((*bf16)[0], name);
  ASSERT_EQ(wide.size(), narrow.size());
  for (std::size_t i = 0; i < wide.size(); ++i)
    ASSERT_EQ(narrow[i], bf16_to_f32(f32_to_bf16(wide[i]))) << i;
}

TEST(MakeModel, ShardsLikeTransformers) {
  temp_dir dir;
  auto opts = tiny_options(2);
  opts.max_shard_bytes = 5000; // the 1 MB embedding alone, then less than a layer per shard
  std::uint64_t last_done = 0, last_total = 0;
  opts.on_progress = [&](std::uint64_t done, std::uint64_t total) {
    EXPECT_GE(done, last_done);
    last_done = done;
    last_total = total;
  };
  ASSERT_TRUE(make_model(dir / "sharded", opts));
  ASSERT_TRUE(make_model(dir / "whole", tiny_options(2)));
  EXPECT_EQ(last_done, last_total);
  EXPECT_FALSE(std::filesystem::exists(dir / "sharded" / "model.safetensors"));

  auto index = nlohmann::json::parse(slurp(dir / "sharded" / "model.safetensors.index.json"));
  auto files = open_hf_weights(dir / "sharded");
  ASSERT_TRUE(files) << files.err().to_string();
  ASSERT_GE(files->size(), 3u);
  const auto count = files->size();
  std::uint64_t total = 0;
  std::vector<std::string> order;
  for (std::size_t s = 0; s < count; ++s) {
    char want[64];
    std::snprintf(want, sizeof want, "model-%05zu-of-%05zu.safetensors", s + 1, count);
    const auto& f = (*files)[s];
    EXPECT_EQ(f.path.filename(), want);
    std::uint64_t shard_bytes = 0;
    for (const auto& t : f.tensors) {
      EXPECT_EQ(index["weight_map"][t.name], want);
      shard_bytes += t.bytes;
      order.push_back(t.name);
    }
    EXPECT_TRUE(shard_bytes <= 5000 || f.tensors.size() == 1) << want;
    total += shard_bytes;
  }
  EXPECT_EQ(index["metadata"]["total_size"], total);
  EXPECT_EQ(index["weight_map"].size(), order.size());

  // Same tensors, same order, same bytes as the unsharded model.
  auto whole = open_hf_weights(dir / "whole");
  ASSERT_TRUE(whole);
  const auto& single = (*whole)[0];
  ASSERT_EQ(order.size(), single.tensors.size());
  std::size_t k = 0;
  auto whole_bytes = slurp(single.path);
  for (const auto& f : *files) {
    auto shard_bytes = slurp(f.path);
    for (const auto& t : f.tensors) {
      const auto& w = single.tensors[k++];
      EXPECT_EQ(t.name, w.name);
      EXPECT_EQ(shard_bytes.substr(t.offset, t.bytes), whole_bytes.substr(w.offset, w.bytes))
          << t.name;
    }
  }
}

TEST(MakeModel, PresetsCarryTheirArchitecture) {
  temp_dir dir;
  for (const char* preset : {"tiny-qwen2", "tiny-mistral"}) {
    auto opts = tiny_options(1);
    opts.preset = preset;
    ASSERT_TRUE(make_model(dir / preset, opts));
    auto cfg = parse_hf_config(slurp(dir / preset / "config.json"));
    ASSERT_TRUE(cfg) << cfg.err().to_string();
    auto files = open_hf_weights(dir / preset);
    ASSERT_TRUE(files);
    EXPECT_EQ((*files)[0].tensors.size(), expected_tensors(*cfg).size()) << preset;
  }
  auto qwen = parse_hf_config(slurp(dir / "tiny-qwen2" / "config.json"));
  EXPECT_EQ(qwen->arch, architecture::qwen2);
  EXPECT_TRUE(qwen->attention_bias);
  auto mistral = parse_hf_config(slurp(dir / "tiny-mistral" / "config.json"));
  EXPECT_EQ(mistral->arch, architecture::mistral);
  EXPECT_EQ(mistral->sliding_window, 64u);
  EXPECT_FALSE(mistral->tie_word_embeddings);
}

TEST(MakeModel, RefusesToOverwrite) {
  temp_dir dir;
  auto out = dir / "existing";
  std::filesystem::create_directory(out);
  std::ofstream(out / "keep.txt") << "mine";
  auto st = make_model(out, tiny_options(1));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.err().code, errc::already_exists);
  EXPECT_EQ(slurp(out / "keep.txt"), "mine");
  expect_only(out, {"keep.txt"});
  expect_only(dir.path(), {"existing"});
}

TEST(MakeModel, BadInputsLeaveNothingBehind) {
  temp_dir dir;
  auto unknown = tiny_options(1);
  unknown.preset = "gpt-5";
  auto a = make_model(dir / "x", unknown);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.err().code, errc::invalid_argument);
  EXPECT_NE(a.err().message.find("gpt-5"), std::string::npos);
  EXPECT_NE(a.err().message.find("stories110m"), std::string::npos); // lists the presets

  auto no_tokenizer = tiny_options(1);
  no_tokenizer.tokenizer_json = dir / "missing" / "tokenizer.json";
  auto b = make_model(dir / "y", no_tokenizer);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.err().code, errc::not_found);
  EXPECT_NE(b.err().message.find("tokenizer.json"), std::string::npos);
  expect_only(dir.path(), {});
}

TEST(MakeModel, CancelStopsAndCleansUp) {
  temp_dir dir;
  std::atomic<bool> cancel{false};
  auto opts = tiny_options(1);
  opts.cancel = &cancel;
  int calls = 0;
  opts.on_progress = [&](std::uint64_t, std::uint64_t) {
    if (++calls == 3)
      cancel.store(true); // as a SIGINT handler would, part-way through
  };
  auto st = make_model(dir / "m", opts);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.err().code, errc::cancelled);
  EXPECT_EQ(calls, 3);
  expect_only(dir.path(), {});
}

TEST(MakeModel, PresetShapes) {
  const auto names = preset_names();
  EXPECT_EQ(names.size(), 8u);
  auto stories = preset_config("stories15m", 32000);
  ASSERT_TRUE(stories);
  EXPECT_EQ(parameter_count(*stories), 15'191'712u); // llama2.c's stories15M.bin
  auto qwen = preset_config("qwen2.5-0.5b", 151936);
  ASSERT_TRUE(qwen);
  EXPECT_EQ(parameter_count(*qwen), 494'032'768u);
  auto l1 = preset_config("llama-3.2-1b", 128256);
  ASSERT_TRUE(l1);
  EXPECT_EQ(parameter_count(*l1), 1'235'814'400u);
  EXPECT_EQ(l1->rope_scaling.type, "llama3");
}

} // namespace
} // namespace thaw
