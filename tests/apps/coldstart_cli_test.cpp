// `thaw bench coldstart`, run as a user runs it, on the tiny model: every cold start it times
// after the first comes from the DRAM tier, and the figures it compares are all there.

#include "runtime/common/posix.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <cstdio>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

namespace thaw {
namespace {

using run_result = testing::command_result;

run_result run(const std::string& args, const testing::temp_dir& dir) {
  return testing::run_thaw(args, dir);
}

TEST(BenchColdstart, ColdStartsRunInPlaceOrCopyFromDramAndTheRatioIsPrinted) {
  testing::temp_dir dir;
  const auto hf = (dir / "hf").string();
  const auto ck = (dir / "ck").string();
  const std::string tok = std::string{THAW_SOURCE_DIR} + "/assets/tokenizers/llama2/tokenizer.json";
  auto r = run("make-model --preset tiny --tokenizer " + tok + " --seed 1 --dtype fp32 " + hf, dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  r = run("convert " + hf + " " + ck, dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;

  r = run("bench coldstart --model " + ck + " --repetitions 3 --threads 1 --json", dir);
  ASSERT_EQ(r.exit_code, 0) << r.all;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["model_bytes"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(j["dram_load_source"], "dram");
  EXPECT_EQ(j["ssd_load_source"], "ssd");
  EXPECT_GT(j["dram_bandwidth"].get<double>(), 0.0);
  EXPECT_EQ(j["cold_ttft_dram_seconds"].size(), 3u);
  // Every cold start in the default server ran on the DRAM tier's bytes; every one in the
  // copying server copied them from the tier.
  EXPECT_EQ(j["cold_starts_not_in_place"], 0) << r.all;
  EXPECT_EQ(j["cold_ttft_copied_seconds"].size(), 3u);
  EXPECT_EQ(j["cold_starts_not_copied_from_dram"], 0) << r.all;
  EXPECT_GT(j["prefill_seconds"].get<double>(), 0.0);
  EXPECT_GT(j["cold_ttft_ssd_seconds"].get<double>(), 0.0);
  EXPECT_GT(j["ratio"].get<double>(), 0.0);
  EXPECT_EQ(j["target_ratio"], 1.2);

  r = run("bench coldstart --model " + (dir / "missing").string(), dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.all.find("missing"), std::string::npos) << r.all;
}

} // namespace
} // namespace thaw
