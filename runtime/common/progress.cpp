#include "runtime/common/progress.hpp"

#include "runtime/common/units.hpp"

#include <cstdio>
#include <unistd.h>

namespace thaw {

progress_bar::progress_bar(std::string label, std::uint64_t total)
    : progress_bar(std::move(label), total, ::isatty(STDERR_FILENO) == 1) {}

progress_bar::progress_bar(std::string label, std::uint64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled),
      start_(std::chrono::steady_clock::now()) {}

progress_bar::~progress_bar() {
  if (enabled_ && !finished_ && last_draw_ != std::chrono::steady_clock::time_point{})
    std::fputc('\n', stderr);
}

void progress_bar::update(std::uint64_t done) {
  if (!enabled_)
    return;
  std::lock_guard lock(mutex_);
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100))
    return;
  last_draw_ = now;
  draw(done, false);
}

void progress_bar::finish() {
  if (!enabled_)
    return;
  std::lock_guard lock(mutex_);
  if (finished_)
    return;
  finished_ = true;
  draw(total_, true);
}

void progress_bar::draw(std::uint64_t done, bool final) {
  constexpr int width = 30;
  double frac = total_ == 0 ? 1.0 : static_cast<double>(done) / static_cast<double>(total_);
  if (frac > 1.0)
    frac = 1.0;
  int filled = static_cast<int>(frac * width);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.append(static_cast<std::size_t>(width - filled), ' ');
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
  std::fprintf(stderr, "\r%s [%s] %3d%% %s / %s %s%s", label_.c_str(), bar.c_str(),
               static_cast<int>(frac * 100), format_bytes(done).c_str(),
               format_bytes(total_).c_str(), format_rate(rate).c_str(), final ? "\n" : "   ");
  std::fflush(stderr);
}

} // namespace thaw
