#pragma once
// A scratch directory for one test, removed with everything in it when the test ends.

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace thaw::testing {

class temp_dir {
public:
  temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ = std::string(base != nullptr ? base : "/tmp") + "/thaw-test-XXXXXX";
    path_ = ::mkdtemp(templ.data());
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  [[nodiscard]] std::filesystem::path operator/(const std::string& name) const {
    return path_ / name;
  }

private:
  std::filesystem::path path_;
};

/// The Llama 2 tokenizer the project carries (assets/), so tests need no ../shared.
inline std::filesystem::path llama2_tokenizer() {
  return std::filesystem::path{THAW_SOURCE_DIR} / "assets/tokenizers/llama2/tokenizer.json";
}

} // namespace thaw::testing
