// The thaw binary, run as a user runs it: make-model, convert, inspect, bench load|engine|ucx, and
// the errors a user sees for bad input.

#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/common/posix.hpp"
#include "tests/support/fake_openai_server.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <cstdio>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

namespace thaw {
namespace {

using run_result = testing::command_result;

run_result run(const std::string& args, const testing::temp_dir& dir) {
  return testing::run_thaw(args, dir);
}

std::string tokenizer() {
  return std::string{THAW_SOURCE_DIR} + "/assets/tokenizers/llama2/tokenizer.json";
}

/// Makes the tiny model (HF directory dir/hf) and converts it (dir/ck); returns the checkpoint.
std::string tiny_checkpoint(const testing::temp_dir& dir, int seed, const std::string& dtype) {
  auto hf = (dir / "hf").string();
  auto ck = (dir / "ck").string();
  auto r = run("make-model --preset tiny --tokenizer " + tokenizer() + " --seed " +
                   std::to_string(seed) + " --dtype " + dtype + " " + hf,
               dir);
  EXPECT_EQ(r.exit_code, 0) << r.all;
  r = run("convert " + hf + " " + ck, dir);
  EXPECT_EQ(r.exit_code, 0) << r.all;
  return ck;
}

TEST(Cli, MakeConvertInspect) {
  testing::temp_dir dir;
  auto hf = (dir / "hf").string();
  auto ck = (dir / "ck").string();
  auto r = run("make-model --preset tiny --tokenizer " + tokenizer() + " --seed 7 --dtype bf16 " + hf, dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  r = run("convert " + hf + " " + ck + " --dtype fp32 --chunk-size 64KiB", dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  EXPECT_NE(r.out.find("converted"), std::string::npos) << r.out;

  r = run("inspect " + ck + " --json", dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["config"]["architecture"], "llama");
  EXPECT_EQ(j["config"]["vocab_size"], 32000);
  EXPECT_EQ(j["config"]["dtype"], "f32");
  EXPECT_EQ(j["tensors"][0]["name"], "model.embed_tokens.weight");
  EXPECT_EQ(j["tensors"][0]["dtype"], "f32");
  EXPECT_EQ(j["files"][0]["chunk_bytes"], 64 * 1024);

  r = run("inspect " + ck, dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  EXPECT_NE(r.out.find("model.layers.1.mlp.down_proj.weight"), std::string::npos);
  EXPECT_NE(r.out.find("llama, f32"), std::string::npos) << r.out;

  r = run("inspect --verify " + ck, dir);
  EXPECT_EQ(r.exit_code, 0) << r.all;
  EXPECT_NE(r.all.find("all checksums match"), std::string::npos) << r.all;
}

TEST(Cli, VerifyFindsAFlippedByte) {
  testing::temp_dir dir;
  auto hf = (dir / "hf").string();
  auto ck = dir / "ck";
  ASSERT_EQ(run("make-model --preset tiny --tokenizer " + tokenizer() + " --seed 1 " + hf, dir).exit_code, 0);
  ASSERT_EQ(run("convert " + hf + " " + ck.string() + " --chunk-size 64KiB", dir).exit_code, 0);
  {
    auto fd = open_file(ck / "data-00000.bin", O_RDWR);
    ASSERT_TRUE(fd);
    char b = 0;
    ASSERT_EQ(::pread(fd->get(), &b, 1, 70000), 1);
    b = static_cast<char>(b ^ 0x01);
    ASSERT_EQ(::pwrite(fd->get(), &b, 1, 70000), 1);
  }
  auto r = run("inspect --verify " + ck.string(), dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.all.find("corrupt"), std::string::npos) << r.all;
  EXPECT_NE(r.all.find("data-00000.bin: chunk 1"), std::string::npos) << r.all;
}

TEST(Cli, ErrorsNameTheProblem) {
  testing::temp_dir dir;
  auto r = run("convert " + (dir / "nope").string() + " " + (dir / "out").string(), dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.all.find("thaw convert: not_found"), std::string::npos) << r.all;
  EXPECT_NE(r.all.find("nope"), std::string::npos) << r.all;

  r = run("make-model --preset gpt5 --tokenizer " + tokenizer() + " --seed 1 " + (dir / "m").string(), dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.all.find("gpt5"), std::string::npos) << r.all;

  r = run("inspect " + (dir / "missing-ckpt").string(), dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.all.find("missing-ckpt"), std::string::npos) << r.all;

  r = run("convert a b --dtype int4", dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.all.find("int4"), std::string::npos) << r.all;
}

TEST(Cli, BenchLoadPrintsRatios) {
  testing::temp_dir dir;
  auto hf = (dir / "hf").string();
  auto ck = tiny_checkpoint(dir, 3, "fp32");
  auto r = run("bench load " + ck + " --source " + hf + " --copies 2 --json --set loader.pool_bytes=64MiB", dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  auto j = nlohmann::json::parse(r.out);
  for (const char* k : {"raw_odirect_1t", "raw_odirect_2t", "raw_odirect_to_memory", "thaw_cold",
                        "thaw_cold_in_place", "thaw_dram", "memcpy_2t", "buffered_read",
                        "mmap_safetensors"})
    EXPECT_GT(j["gbps"][k].get<double>(), 0.0) << k;
  for (const char* k : {"thaw_cold_vs_raw_odirect", "thaw_cold_in_place_vs_raw_odirect_to_memory",
                        "thaw_cold_in_place_vs_raw_odirect_to_memory_paired",
                        "mmap_safetensors_vs_raw_odirect_to_memory", "thaw_dram_vs_memcpy_2t"})
    EXPECT_GT(j["ratios"][k].get<double>(), 0.0) << k;
  EXPECT_TRUE(j["targets"].contains("thaw_cold_in_place_vs_raw_odirect_to_memory >= 0.95"));
  // Two rounds plus the first load: each cold load (copied, in place) read the whole model once
  // from SSD; each warm load came from DRAM; the in-place loads ended mapped.
  auto model = j["model_bytes"].get<std::uint64_t>();
  EXPECT_EQ(j["loader_stats"]["bytes_read_ssd"].get<std::uint64_t>(), 5 * model); // 2 a round + 1
  EXPECT_EQ(j["loader_stats"]["bytes_from_dram"].get<std::uint64_t>(), 6 * model); // 3 a round
  EXPECT_EQ(j["loader_stats"]["loads_in_place"].get<std::uint64_t>(), 2u);
  // The copies are removed afterwards.
  EXPECT_FALSE(std::filesystem::exists(dir / ".thaw-bench-ck"));
}

TEST(Cli, BenchLoadOntoCudaMeasuresAGpuOrSaysWhyNot) {
  testing::temp_dir dir;
  auto ck = tiny_checkpoint(dir, 3, "fp32");
  auto r = run("bench load " + ck + " --device cuda --copies 2 --json --set loader.pool_bytes=64MiB",
               dir);
  if (r.exit_code != 0) {
    // No GPU here (CI), or a build without CUDA: a clear error saying which, before any copy of
    // the model is made.
    EXPECT_EQ(r.exit_code, 1) << r.all;
    EXPECT_NE(r.all.find("thaw bench load: "), std::string::npos) << r.all;
    EXPECT_NE(r.all.find("--device cuda: "), std::string::npos) << r.all;
    EXPECT_TRUE(r.all.find("unavailable") != std::string::npos ||
                r.all.find("built without CUDA") != std::string::npos)
        << r.all;
    EXPECT_FALSE(std::filesystem::exists(dir / ".thaw-bench-ck"));
  } else {
    // A GPU: the loads onto it against the raw reads and against one pinned cudaMemcpy.
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["device"].get<std::string>().rfind("cuda:0", 0), 0u) << j["device"];
    for (const char* k : {"thaw_cold_to_gpu", "thaw_dram_to_gpu", "cuda_memcpy_h2d",
                          "raw_odirect_to_memory"})
      EXPECT_GT(j["gbps"][k].get<double>(), 0.0) << k;
    for (const char* k : {"thaw_dram_to_gpu_vs_cuda_memcpy_h2d",
                          "thaw_cold_to_gpu_vs_raw_odirect_to_memory",
                          "thaw_cold_to_gpu_vs_raw_odirect",
                          "thaw_cold_to_gpu_vs_raw_odirect_to_memory_paired"})
      EXPECT_GT(j["ratios"][k].get<double>(), 0.0) << k;
    EXPECT_TRUE(j["targets"].contains("thaw_dram_to_gpu_vs_cuda_memcpy_h2d >= 0.9"));
    EXPECT_FALSE(j["gbps"].contains("thaw_cold_in_place")) << "a GPU loads by copying";
    auto model = j["model_bytes"].get<std::uint64_t>();
    EXPECT_EQ(j["loader_stats"]["bytes_read_ssd"].get<std::uint64_t>(), 3 * model); // 1 a round + 1
  }

  r = run("bench load " + ck + " --device tpu", dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.all.find("tpu"), std::string::npos) << r.all;
}

TEST(Cli, BenchUcxComparesTheDataPlaneWithRawGets) {
  testing::temp_dir dir;
  auto r = run("bench ucx --bytes 8MiB --segment 1MiB --piece 512KiB --rounds 2 --json", dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  auto j = nlohmann::json::parse(r.out);
  for (const char* k :
       {"raw_ucp_get", "data_plane_fetch", "data_plane_fetch_registered", "memcpy_1t"})
    EXPECT_GT(j["gbps"][k].get<double>(), 0.0) << k;
  EXPECT_GT(j["ratios"]["data_plane_vs_raw_ucp_get"].get<double>(), 0.0);
  EXPECT_EQ(j["segments"].get<int>(), 8);
  EXPECT_EQ(j["seconds"]["data_plane_fetch"].size(), 2u);

  r = run("bench ucx --bytes 1MiB --segment nonsense", dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.all.find("--segment"), std::string::npos) << r.all;

  // The remote tier: a checkpoint pulled from the other process's DRAM tier, every round.
  auto ck = tiny_checkpoint(dir, 5, "f32");
  r = run("bench ucx --bytes 8MiB --segment 1MiB --rounds 2 --skip-registered --json "
          "--checkpoint " + ck, dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["gbps"]["remote_tier_pull"].get<double>(), 0.0);
  EXPECT_GT(j["ratios"]["remote_tier_pull_vs_raw_ucp_get_paired"].get<double>(), 0.0);
  EXPECT_EQ(j["seconds"]["remote_tier_pull"].size(), 2u);
  EXPECT_GT(j["checkpoint_bytes"].get<std::uint64_t>(), 0u);
  EXPECT_GT(j["first_round_gbps"]["remote_tier_pull"].get<double>(), 0.0);

  r = run("bench ucx --bytes 1MiB --rounds 1 --checkpoint " + (dir / "absent").string(), dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.all.find("absent"), std::string::npos) << r.all;
}

TEST(Cli, BenchEngineReportsThroughputAgainstBandwidth) {
  testing::temp_dir dir;
  auto ck = tiny_checkpoint(dir, 3, "bf16");
  auto r = run("bench engine " + ck +
                   " --prompt-len 20 --gen 4 --batch 1,3 --threads 1 --repeats 2 --prefix-len 64 --json",
               dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["read_gbps"].get<double>(), 0.0);
  ASSERT_EQ(j["batches"].size(), 2u);
  EXPECT_EQ(j["batches"][1]["batch"], 3);
  for (const auto& row : j["batches"]) {
    EXPECT_GT(row["prefill_tokens_per_s"].get<double>(), 0.0);
    EXPECT_GT(row["decode_tokens_per_s"].get<double>(), 0.0);
    EXPECT_GT(row["decode_fraction_of_bandwidth_limit"].get<double>(), 0.0);
  }
  // Batch 1 against itself is exactly 1; batch 3 against batch 1 is a positive ratio of the same
  // rounds (2 here, so the median is of two pairs).
  EXPECT_EQ(j["batches"][0]["decode_speedup_over_batch_1"].get<double>(), 1.0);
  EXPECT_GT(j["batches"][1]["decode_speedup_over_batch_1"].get<double>(), 0.0);
  // The tiny model's lm_head is tied to the embedding table, which a decode step then reads.
  EXPECT_GT(j["decode_step_bytes"].get<std::uint64_t>(), j["weight_bytes"].get<std::uint64_t>() / 2);
  EXPECT_LE(j["decode_step_bytes"].get<std::uint64_t>(), j["weight_bytes"].get<std::uint64_t>());
  // Prefix reuse through the step loop: both times measured (their ratio is the benchmark's).
  const auto& p = j["prefix_cache"];
  EXPECT_EQ(p["prefix_len"], 64);
  EXPECT_GT(p["first_token_seconds_cold"].get<double>(), 0.0);
  EXPECT_GT(p["first_token_seconds_cached"].get<double>(), 0.0);
  EXPECT_GT(p["cached_over_cold"].get<double>(), 0.0);
  r = run("bench engine " + ck + " --prompt-len 5000 --gen 4", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.all.find("max_position_embeddings"), std::string::npos) << r.all;
  // A forced kernel path is used and named; one this CPU lacks falls back to one it has.
  r = run("bench engine " + ck + " --prompt-len 8 --gen 2 --repeats 1 --kernels scalar --json", dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  EXPECT_EQ(nlohmann::json::parse(r.out)["kernels"], "scalar");
  r = run("bench engine " + ck + " --prompt-len 8 --gen 2 --repeats 1 --kernels avx512 --json", dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  const auto used = nlohmann::json::parse(r.out)["kernels"].get<std::string>();
  EXPECT_TRUE(used == "avx512" || used == "avx2" || used == "scalar") << used;
}

TEST(Cli, GenerateOnCudaRunsOnTheGpuOrSaysWhyNot) {
  testing::temp_dir dir;
  auto ck = tiny_checkpoint(dir, 5, "fp32");
  auto r = run("generate " + ck + " --prompt 'Once upon a time' --max-tokens 6 --temperature 0 "
                                  "--ignore-eos --device cuda --json",
               dir);
  if (r.exit_code != 0) {
    // No GPU here (CI), or a build without CUDA: an error that says which.
    EXPECT_EQ(r.exit_code, 1) << r.all;
    EXPECT_TRUE(r.all.find("cuda:0: unavailable") != std::string::npos ||
                r.all.find("built without CUDA") != std::string::npos)
        << r.all;
  } else {
    // A GPU: the same greedy tokens as the host runner's.
    auto host = run("generate " + ck + " --prompt 'Once upon a time' --max-tokens 6 "
                                       "--temperature 0 --ignore-eos --json",
                    dir);
    ASSERT_EQ(host.exit_code, 0) << host.all;
    const auto gpu = nlohmann::json::parse(r.out);
    EXPECT_EQ(gpu["device"].get<std::string>().rfind("cuda:0", 0), 0u) << gpu["device"];
    EXPECT_EQ(nlohmann::json::parse(host.out)["device"], "host");
    EXPECT_EQ(gpu["tokens"], nlohmann::json::parse(host.out)["tokens"]);
  }
}

} // namespace
} // namespace thaw

// thaw tokenize, with the tokenizer carried in assets/ (ids looked up in its vocabulary file, so
// the test does not depend on which 32,000-token numbering the file uses).
namespace thaw {
namespace {

std::int32_t vocab_id(const std::string& token) {
  auto j = nlohmann::json::parse(read_text_file(tokenizer()).value());
  return j["model"]["vocab"][token].get<std::int32_t>();
}

TEST(Cli, TokenizeEncodesAndDecodes) {
  testing::temp_dir dir;
  const auto hello = vocab_id("\xE2\x96\x81Hello");
  const auto world = vocab_id("\xE2\x96\x81world");
  auto r = run("tokenize " + tokenizer() + " --text 'Hello world'", dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  EXPECT_EQ(r.out, "1 " + std::to_string(hello) + " " + std::to_string(world) + "\n");

  r = run("tokenize " + tokenizer() + " --text 'Hello world' --no-special --json", dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tokens"], (std::vector<std::int32_t>{hello, world}));
  EXPECT_EQ(j["count"], 2);

  // A checkpoint-style directory holding tokenizer.json works too; ids by commas or spaces.
  const auto tok_dir = std::filesystem::path{tokenizer()}.parent_path().string();
  r = run("tokenize " + tok_dir + " --decode '1," + std::to_string(hello) + " " + std::to_string(world) + "'", dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  EXPECT_EQ(r.out, "Hello world\n");
  r = run("tokenize " + tok_dir + " --decode '1 " + std::to_string(hello) + "' --json --no-special", dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  EXPECT_EQ(nlohmann::json::parse(r.out)["text"], "<s> Hello");

  ASSERT_TRUE(write_text_file(dir / "in.txt", "Hello world"));
  r = run("tokenize " + tokenizer() + " --file " + (dir / "in.txt").string() + " --json --repeat 3", dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["count"], 3);
  EXPECT_GT(j["mb_per_s"].get<double>(), 0.0);
}

TEST(Cli, TokenizeErrorsNameTheProblem) {
  testing::temp_dir dir;
  auto r = run("tokenize " + tokenizer() + " --decode '1,abc'", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.all.find("invalid_argument"), std::string::npos) << r.all;
  EXPECT_NE(r.all.find("abc"), std::string::npos) << r.all;

  r = run("tokenize " + tokenizer() + " --decode 99999999", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.all.find("99999999"), std::string::npos) << r.all;

  r = run("tokenize " + (dir / "none").string() + " --text hi", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.all.find("not_found"), std::string::npos) << r.all;

  r = run("tokenize " + tokenizer(), dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.all.find("--text"), std::string::npos) << r.all;
}

TEST(Cli, GenerateStreamsTextAndReportsTheCompletion) {
  testing::temp_dir dir;
  auto ck = tiny_checkpoint(dir, 5, "fp32");
  auto r = run("generate " + ck +
                   " --prompt 'Once upon a time' --max-tokens 12 --temperature 0 --ignore-eos --json",
               dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["tokens"].size(), 12u);
  EXPECT_EQ(j["completion_tokens"], 12);
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_GT(j["prompt_tokens"].get<int>(), 1);
  EXPECT_EQ(j["device"], "host");
  // The text is the tokens decoded, as thaw tokenize --decode gives it.
  std::string ids;
  for (const auto& t : j["tokens"])
    ids += std::to_string(t.get<int>()) + ",";
  auto d = run("tokenize " + ck + " --decode " + ids.substr(0, ids.size() - 1) + " --json", dir);
  ASSERT_EQ(d.exit_code, 0) << d.all;
  EXPECT_EQ(nlohmann::json::parse(d.out)["text"], j["text"]);

  // Streaming: one JSON line a token, then the summary; the same tokens as without streaming.
  r = run("generate " + ck +
              " --prompt 'Once upon a time' --max-tokens 12 --temperature 0 --ignore-eos --stream --json",
          dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  std::vector<nlohmann::json> lines;
  for (std::size_t at = 0, nl; (nl = r.out.find('\n', at)) != std::string::npos; at = nl + 1)
    lines.push_back(nlohmann::json::parse(r.out.substr(at, nl - at)));
  ASSERT_EQ(lines.size(), 13u);
  std::string streamed;
  for (std::size_t i = 0; i < 12; ++i) {
    EXPECT_EQ(lines[i]["token"], j["tokens"][i]);
    streamed += lines[i]["text"].get<std::string>();
  }
  EXPECT_EQ(streamed, j["text"]);
  EXPECT_EQ(lines[11]["finish_reason"], "length");

  // Seeded sampling repeats; bad parameters are named.
  auto a = run("generate " + ck + " --prompt hi --max-tokens 8 --seed 9 --ignore-eos --json", dir);
  auto b = run("generate " + ck + " --prompt hi --max-tokens 8 --seed 9 --ignore-eos --json", dir);
  EXPECT_EQ(nlohmann::json::parse(a.out)["tokens"], nlohmann::json::parse(b.out)["tokens"]);
  r = run("generate " + ck + " --prompt hi --top-p 0", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.all.find("top_p"), std::string::npos) << r.all;
  r = run("generate " + ck + " --prompt '' --max-tokens 4", dir);
  EXPECT_EQ(r.exit_code, 1) << r.all;
  EXPECT_NE(r.all.find("prompt: empty"), std::string::npos) << r.all;
  r = run("generate " + ck + " --prompt \"$(printf '\\377\\376')\"", dir); // not UTF-8
  EXPECT_EQ(r.exit_code, 1) << r.all;
  EXPECT_NE(r.all.find("invalid_argument"), std::string::npos) << r.all;
}

TEST(Cli, BenchServeDrivesAnOpenAiServer) {
  testing::temp_dir dir;
  testing::fake_openai_server server;
  // A Poisson run against the models the server lists (m-a, m-b).
  auto r = run("bench serve --url " + server.url() +
                   " --rate 100 --duration 0.2 --prompt-tokens 12 --output-tokens 5 --seed 3"
                   " --json",
               dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  auto j = nlohmann::json::parse(r.out);
  const int n = j["num_requests"];
  ASSERT_GT(n, 0);
  EXPECT_EQ(j["completed"], n);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["total_output_tokens"], 5 * n);
  EXPECT_EQ(j["models"], (nlohmann::json{"m-a", "m-b"}));
  for (const char* key : {"mean_ttft_ms", "median_tpot_ms", "p90_itl_ms", "p99_e2e_ms"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(server.bodies().size(), static_cast<std::size_t>(n));

  // A trace replayed 1000 times faster, capped; the readable table.
  const auto trace =
      std::string{THAW_SOURCE_DIR} + "/../shared/traces/AzureLLMInferenceTrace_conv_2023.csv";
  if (std::filesystem::exists(trace)) {
    r = run("bench serve --url " + server.url() + " --trace " + trace +
                " --time-scale 1000 --num-requests 20 --max-prompt-tokens 64 --max-output-tokens 8"
                " --models m-a",
            dir);
    ASSERT_EQ(r.exit_code, 0) << r.all;
    EXPECT_NE(r.out.find("Successful requests:                    20"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Mean TTFT (ms):"), std::string::npos) << r.out;
  }

  // Every request failing is exit code 1, with the server's message.
  r = run("bench serve --url " + server.url() + " --rate 50 --duration 0.1 --models missing", dir);
  EXPECT_EQ(r.exit_code, 1) << r.all;
  EXPECT_NE(r.all.find("model 'missing' does not exist"), std::string::npos) << r.all;
}

TEST(Cli, BenchServeErrorsNameTheProblem) {
  testing::temp_dir dir;
  auto r = run("bench serve --url http://127.0.0.1:1 --models m", dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.all.find("--trace FILE or --rate R"), std::string::npos) << r.all;
  r = run("bench serve --url http://127.0.0.1:1 --rate 5 --models m", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.all.find("--duration"), std::string::npos) << r.all;
  r = run("bench serve --url http://127.0.0.1:1 --trace " + (dir / "none.csv").string() +
              " --models m",
          dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.all.find("none.csv"), std::string::npos) << r.all;
  r = run("bench serve --url gopher://x:1 --rate 5 --duration 1 --models m", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.all.find("gopher"), std::string::npos) << r.all;
}

} // namespace
} // namespace thaw
