// Every bad input named by the checkpoint store's issue: each gives an error that names the file
// and the problem, and leaves existing checkpoints untouched.

#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/checkpoint/importer.hpp"
#include "runtime/common/posix.hpp"
#include "tests/support/test_models.hpp"

#include <csignal>
#include <cstring>
#include <set>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace thaw {
namespace {

using testing::temp_dir;

void expect_error(const status& s, errc code, std::initializer_list<std::string> needles) {
  ASSERT_FALSE(s) << "expected " << to_string(code);
  EXPECT_EQ(s.err().code, code) << s.err().to_string();
  for (const auto& n : needles)
    EXPECT_NE(s.err().message.find(n), std::string::npos)
        << "'" << n << "' not in: " << s.err().message;
}

status open_status(const std::filesystem::path& dir) {
  auto ck = checkpoint::open(dir);
  if (!ck)
    return unexpected(std::move(ck).err());
  return {};
}

// Only these names are in `dir`: nothing half-written, no temporary directories left.
void expect_entries(const std::filesystem::path& dir, std::set<std::string> names) {
  std::set<std::string> got;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    got.insert(e.path().filename().string());
  EXPECT_EQ(got, names);
}

class BadInput : public ::testing::Test {
protected:
  void SetUp() override {
    testing::make_hf(dir_ / "hf", "tiny");
    testing::import(dir_ / "hf", dir_ / "good");
  }
  void rewrite_manifest(const std::filesystem::path& ck, auto&& edit) {
    auto bytes = read_text_file(ck / manifest_file_name);
    ASSERT_TRUE(bytes);
    auto m = decode_manifest(*bytes);
    ASSERT_TRUE(m);
    edit(*m);
    ASSERT_TRUE(write_text_file(ck / manifest_file_name, encode_manifest(*m)));
  }
  std::filesystem::path copy_good(const std::string& name) {
    std::filesystem::copy(dir_ / "good", dir_ / name, std::filesystem::copy_options::recursive);
    return dir_ / name;
  }
  temp_dir dir_;
};

TEST_F(BadInput, TruncatedDataFile) {
  auto ck = copy_good("trunc");
  std::filesystem::resize_file(ck / "data-00000.bin", 4096);
  expect_error(open_status(ck), errc::corrupt, {"data-00000.bin", "truncated"});
  EXPECT_TRUE(open_status(dir_ / "good"));
}

TEST_F(BadInput, MissingDataFile) {
  auto ck = copy_good("missing");
  std::filesystem::remove(ck / "data-00001.bin");
  expect_error(open_status(ck), errc::not_found, {"data-00001.bin"});
}

TEST_F(BadInput, MissingManifest) {
  auto ck = copy_good("nomanifest");
  std::filesystem::remove(ck / "manifest.bin");
  expect_error(open_status(ck), errc::not_found, {"manifest.bin"});
  expect_error(open_status(dir_ / "no-such-dir"), errc::not_found, {"no-such-dir"});
}

TEST_F(BadInput, GarbageManifest) {
  auto ck = copy_good("garbage");
  ASSERT_TRUE(write_text_file(ck / "manifest.bin", std::string(4000, 'x')));
  expect_error(open_status(ck), errc::parse_error, {"manifest.bin"});
}

TEST_F(BadInput, ManifestOffsetPastEndOfFile) {
  auto ck = copy_good("offset");
  std::string name;
  rewrite_manifest(ck, [&](manifest& m) {
    auto& t = m.tensors.back();
    name = t.name;
    t.offset = m.files[t.file].bytes;
  });
  expect_error(open_status(ck), errc::corrupt, {name, "past the end"});
}

TEST_F(BadInput, UnknownArchitectureInConfig) {
  auto hf = dir_ / "hf";
  auto text = read_text_file(hf / "config.json");
  std::string t = *text;
  auto pos = t.find("LlamaForCausalLM");
  ASSERT_NE(pos, std::string::npos);
  t.replace(pos, 16, "GPTNeoXForCausalLM");
  ASSERT_TRUE(write_text_file(hf / "config.json", t));
  expect_error(import_hf(hf, dir_ / "out", {}), errc::unsupported, {"GPTNeoXForCausalLM"});
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out"));
}

// Rewrites a safetensors header in place (same length, space padded).
void patch_header(const std::filesystem::path& file, const std::string& from,
                  const std::string& to) {
  auto text = read_text_file(file);
  ASSERT_TRUE(text);
  std::string s = *text;
  std::uint64_t n = 0;
  std::memcpy(&n, s.data(), 8);
  std::string header = s.substr(8, n);
  auto pos = header.find(from);
  ASSERT_NE(pos, std::string::npos) << from;
  header.replace(pos, from.size(), to);
  header.resize(n, ' ');
  ASSERT_EQ(header.size(), n) << "replacement must not grow the header";
  s.replace(8, n, header);
  ASSERT_TRUE(write_text_file(file, s));
}

TEST_F(BadInput, UnknownDtypeInSafetensors) {
  patch_header(dir_ / "hf/model.safetensors", "\"F32\"", "\"I32\"");
  auto s = import_hf(dir_ / "hf", dir_ / "out", {});
  expect_error(s, errc::unsupported, {"model.safetensors", "I32"});
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out"));
}

TEST_F(BadInput, SafetensorsHeaderLiesAboutSizes) {
  // Claim a larger shape than the bytes given: size mismatch must be caught before reading.
  patch_header(dir_ / "hf/model.safetensors", "[16]", "[17]");
  auto s = import_hf(dir_ / "hf", dir_ / "out", {});
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::corrupt) << s.err().to_string();
  EXPECT_NE(s.err().message.find("model.safetensors"), std::string::npos) << s.err().message;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out"));
}

TEST_F(BadInput, TruncatedSafetensors) {
  auto file = dir_ / "hf/model.safetensors";
  std::filesystem::resize_file(file, std::filesystem::file_size(file) - 100);
  auto s = import_hf(dir_ / "hf", dir_ / "out", {});
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::corrupt) << s.err().to_string();
  EXPECT_NE(s.err().message.find("model.safetensors"), std::string::npos) << s.err().message;
}

TEST_F(BadInput, ExistingCheckpointIsNeverReplaced) {
  auto before = read_text_file(dir_ / "good/manifest.bin");
  import_options opt;
  auto s = import_hf(dir_ / "hf", dir_ / "good", opt);
  expect_error(s, errc::already_exists, {"good"});
  EXPECT_EQ(*read_text_file(dir_ / "good/manifest.bin"), *before);
  EXPECT_TRUE(open_status(dir_ / "good"));
}

// A disk that fills up during convert: the child process gets a real write failure from the
// kernel (RLIMIT_FSIZE makes write(2) fail with EFBIG past the limit, like ENOSPC). The error
// names the data file, nothing is left behind, and the existing checkpoint is untouched.
TEST_F(BadInput, FullDiskDuringConvert) {
  auto out = dir_ / "full";
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit{256 << 10, 256 << 10};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    import_options opt;
    opt.writer.chunk_bytes = 64 << 10;
    auto s = import_hf(dir_ / "hf", out, opt);
    std::string msg = s ? "ok" : s.err().to_string();
    (void)!::write(pipefd[1], msg.data(), msg.size());
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string msg;
  char buf[512];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;)
    msg.append(buf, static_cast<std::size_t>(n));
  ::close(pipefd[0]);
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  EXPECT_EQ(msg.rfind("no_space: ", 0), 0u) << msg;
  EXPECT_NE(msg.find("data-00000.bin"), std::string::npos) << msg;
  expect_entries(dir_.path(), {"hf", "good"});
  EXPECT_TRUE(open_status(dir_ / "good"));
}

TEST_F(BadInput, CancelledConvertLeavesNothing) {
  std::atomic<bool> cancel{true};
  import_options opt;
  opt.writer.cancel = &cancel;
  expect_error(import_hf(dir_ / "hf", dir_ / "cancelled", opt), errc::cancelled, {});
  expect_entries(dir_.path(), {"hf", "good"});
}

TEST_F(BadInput, MissingConfigOrWeights) {
  std::filesystem::create_directory(dir_ / "empty");
  expect_error(import_hf(dir_ / "empty", dir_ / "out", {}), errc::not_found, {"config.json"});
  std::filesystem::copy_file(dir_ / "hf/config.json", dir_ / "empty/config.json");
  expect_error(import_hf(dir_ / "empty", dir_ / "out", {}), errc::not_found, {"empty"});
}

} // namespace
} // namespace thaw
