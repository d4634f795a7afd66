// `thaw sim` run as a user runs it, on a slice of the real Azure conv trace with the Alibaba
// popularity file (../shared/traces; skipped where that folder is absent).

#include "runtime/common/posix.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <cstdio>
#include <filesystem>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

namespace thaw {
namespace {

using run_result = testing::command_result;

run_result run(const std::string& args, const testing::temp_dir& dir) {
  return testing::run_thaw(args, dir);
}

std::filesystem::path traces() {
  return std::filesystem::path{THAW_SOURCE_DIR} / ".." / "shared" / "traces";
}

class SimProcess : public ::testing::Test {
protected:
  void SetUp() override {
    if (!std::filesystem::exists(traces() / "AzureLLMInferenceTrace_conv_2023.csv") ||
        !std::filesystem::exists(traces() / "alibaba_genai_model_popularity.csv"))
      GTEST_SKIP() << "no ../shared/traces here";
  }
  std::string base() const {
    return "sim --trace " + (traces() / "AzureLLMInferenceTrace_conv_2023.csv").string() +
           " --popularity " + (traces() / "alibaba_genai_model_popularity.csv").string();
  }
  testing::temp_dir dir;
};

TEST_F(SimProcess, AllPoliciesSideBySideOnTenMinutesOfTheConvTrace) {
  auto r = run(base() + " --nodes 8 --slots-per-node 2 --models 64 --duration 600 --policy all "
                        "--json",
               dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const auto requests = j.at("requests").get<std::uint64_t>();
  EXPECT_GT(requests, 1000u); // the conv trace has about 5 requests a second
  ASSERT_EQ(j.at("policies").size(), 4u);
  std::vector<std::string> names;
  for (const auto& p : j.at("policies")) {
    names.push_back(p.at("policy").get<std::string>());
    EXPECT_EQ(p.at("completed").get<std::uint64_t>(), requests);
    const auto& t = p.at("ttft_s");
    EXPECT_LE(t.at("p50").get<double>(), t.at("p90").get<double>());
    EXPECT_LE(t.at("p90").get<double>(), t.at("p99").get<double>());
    EXPECT_GE(p.at("e2e_s").at("p50").get<double>(), t.at("p50").get<double>());
    const auto& c = p.at("cold_starts");
    EXPECT_GT(c.at("dram").get<int>() + c.at("ssd").get<int>() + c.at("remote").get<int>(), 0);
    EXPECT_GT(p.at("slot_utilisation").get<double>(), 0.0);
    EXPECT_LE(p.at("slot_utilisation").get<double>(), 1.0);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"random", "least-loaded", "locality",
                                             "locality-migrate"}));
  // Locality loads far less over the network than random placement does.
  EXPECT_LT(j["policies"][2]["cold_starts"]["remote"].get<int>(),
            j["policies"][0]["cold_starts"]["remote"].get<int>());
}

TEST_F(SimProcess, TheTableAndThePlot) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "gnuplot is not installed (scripts/setup.sh installs gnuplot-nox)";
  const auto png = dir / "cdf.png";
  auto r = run(base() + " --nodes 4 --slots-per-node 2 --models 16 --duration 120 --plot " +
                   png.string(),
               dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("TTFT p99 (s)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("locality-migrate"), std::string::npos);
  ASSERT_TRUE(std::filesystem::exists(png));
  auto bytes = read_text_file(png).value();
  ASSERT_GT(bytes.size(), 1000u);
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
}

TEST_F(SimProcess, PerModelTablesInTheConfigChangeTheModels) {
  // Checkpoints of 16 MB instead of 16 GB: cold starts cost next to nothing, so the tail shrinks.
  const auto cfg = dir / "sim.toml";
  ASSERT_TRUE(write_text_file(cfg, "[sim]\nnodes = 4\nslots_per_node = 2\nmodels = 32\n"
                                   "[[sim.model]]\nbytes_gb = 0.016\n"));
  const auto args = " --duration 300 --policy locality --json";
  auto small = run(base() + " --config " + cfg.string() + args, dir);
  ASSERT_EQ(small.exit_code, 0) << small.err;
  auto plain = run(base() + " --nodes 4 --slots-per-node 2 --models 32" + args, dir);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  auto p99 = [](const std::string& out) {
    return nlohmann::json::parse(out)["policies"][0]["ttft_s"]["p99"].get<double>();
  };
  EXPECT_LT(p99(small.out), 0.5 * p99(plain.out));
  EXPECT_EQ(nlohmann::json::parse(small.out)["nodes"].get<int>(), 4);
}

TEST_F(SimProcess, ABadPolicyOrTraceIsAClearError) {
  auto r = run(base() + " --policy fastest", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("fastest"), std::string::npos) << r.err;
  auto bad = dir / "bad.csv";
  ASSERT_TRUE(write_text_file(bad, "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n"));
  auto t = run("sim --trace " + bad.string(), dir);
  EXPECT_EQ(t.exit_code, 1);
  EXPECT_NE(t.err.find("bad.csv:2"), std::string::npos) << t.err;
}

} // namespace
} // namespace thaw
