#pragma once
// Test models: a Hugging Face directory from `make_model` (deterministic random weights) and
// its thaw checkpoint, in a test's temp_dir.

#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/checkpoint/importer.hpp"
#include "runtime/checkpoint/make_model.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

namespace thaw::testing {

/// Writes a HF model directory at `dir`; fails the test on error.
inline void make_hf(const std::filesystem::path& dir, const std::string& preset = "tiny",
                    dtype type = dtype::f32, std::uint64_t seed = 1,
                    std::uint64_t max_shard_bytes = 5'000'000'000) {
  make_model_options opt;
  opt.preset = preset;
  opt.tokenizer_json = llama2_tokenizer();
  opt.seed = seed;
  opt.type = type;
  opt.max_shard_bytes = max_shard_bytes;
  auto s = make_model(dir, opt);
  ASSERT_TRUE(s) << s.err().to_string();
}

/// Imports `hf` into a checkpoint at `out` with small chunks (so tests see many of them).
inline void import(const std::filesystem::path& hf, const std::filesystem::path& out,
                   std::optional<dtype> to = std::nullopt, std::uint64_t chunk_bytes = 64 << 10,
                   std::uint64_t max_file_bytes = 1 << 20) {
  import_options opt;
  opt.target_dtype = to;
  opt.writer.chunk_bytes = chunk_bytes;
  opt.writer.max_file_bytes = max_file_bytes;
  auto s = import_hf(hf, out, opt);
  ASSERT_TRUE(s) << s.err().to_string();
}

/// A test suite over the `tiny` model, made once for the suite: its Hugging Face directory is
/// dir()/"hf" and its checkpoint ckpt() (dir()/"tiny").
class tiny_model_suite : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    dir_ = new temp_dir();
    make_hf(*dir_ / "hf", "tiny");
    import(*dir_ / "hf", *dir_ / "tiny");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  static const temp_dir& dir() { return *dir_; }
  static std::string ckpt() { return (*dir_ / "tiny").string(); }

private:
  static inline temp_dir* dir_ = nullptr;
};

} // namespace thaw::testing
