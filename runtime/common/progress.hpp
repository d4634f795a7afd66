#pragma once
/// A one-line progress bar for long work (convert, load) on a terminal. Draws on stderr only
/// when stderr is a TTY; otherwise it stays silent so that logs and pipes stay clean.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace thaw {

class progress_bar {
public:
  /// `total` is in bytes; `enabled` defaults to "stderr is a terminal".
  progress_bar(std::string label, std::uint64_t total);
  progress_bar(std::string label, std::uint64_t total, bool enabled);
  ~progress_bar();
  progress_bar(const progress_bar&) = delete;
  progress_bar& operator=(const progress_bar&) = delete;

  /// Sets the amount done (thread-safe); redraws at most ten times a second.
  void update(std::uint64_t done);
  /// Draws the final state and ends the line.
  void finish();

  [[nodiscard]] bool enabled() const noexcept { return enabled_; }

private:
  void draw(std::uint64_t done, bool final);

  std::string label_;
  std::uint64_t total_;
  bool enabled_;
  bool finished_ = false;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
};

} // namespace thaw
