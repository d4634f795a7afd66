#include "runtime/engine/stop_matcher.hpp"

#include "runtime/engine/utf8.hpp"

#include <algorithm>
#include <utility>

namespace thaw {

stop_matcher::stop_matcher(std::vector<std::string> stops) {
  for (auto& s : stops) {
    if (s.empty())
      continue;
    longest_ = std::max(longest_, s.size());
    stops_.push_back(std::move(s));
  }
}

status stop_matcher::validate(const std::vector<std::string>& stops) {
  if (stops.size() > max_stops)
    return make_error(errc::invalid_argument, "stop: " + std::to_string(stops.size()) +
                                                  " stop strings, at most " +
                                                  std::to_string(max_stops) + " allowed");
  for (std::size_t i = 0; i < stops.size(); ++i)
    if (!valid_utf8(stops[i]))
      return make_error(errc::invalid_argument,
                        "stop: stop string " + std::to_string(i) + " is not valid UTF-8");
  return {};
}

std::size_t stop_matcher::held_length(std::string_view text) const noexcept {
  if (longest_ == 0)
    return 0;
  // Longest first, so the first hit is the answer.
  for (std::size_t len = std::min(text.size(), longest_ - 1); len > 0; --len) {
    const auto tail = text.substr(text.size() - len);
    for (const auto& s : stops_)
      if (s.size() > len && std::string_view{s}.starts_with(tail))
        return len;
  }
  return 0;
}

stop_matcher::result stop_matcher::push(std::string_view text) {
  result out;
  if (stopped_)
    return out;
  if (stops_.empty()) {
    out.text.assign(text);
    return out;
  }
  std::string buf = std::move(pending_);
  pending_.clear();
  buf.append(text);

  // The occurrence ending first; on equal ends the longer (earlier start). Only the first
  // occurrence of each stop can end first. No occurrence can start before `buf`: the held-back
  // suffix is the longest one that could still grow into a stop string.
  std::size_t best_end = std::string::npos;
  std::size_t best_start = 0;
  const std::string* best = nullptr;
  for (const auto& s : stops_) {
    const auto pos = buf.find(s);
    if (pos == std::string::npos)
      continue;
    const auto end = pos + s.size();
    if (end < best_end || (end == best_end && pos < best_start)) {
      best_end = end;
      best_start = pos;
      best = &s;
    }
  }
  if (best != nullptr) {
    out.text = buf.substr(0, best_start);
    out.stopped = true;
    out.matched = *best;
    stopped_ = true;
    return out;
  }
  const auto held = held_length(buf);
  pending_ = buf.substr(buf.size() - held);
  buf.resize(buf.size() - held);
  out.text = std::move(buf);
  return out;
}

std::string stop_matcher::flush() {
  if (stopped_)
    return {};
  return std::exchange(pending_, std::string{});
}

const std::string& stop_matcher::pending() const noexcept { return pending_; }

bool stop_matcher::stopped() const noexcept { return stopped_; }

void stop_matcher::restore(std::string pending, bool stopped) {
  pending_ = std::move(pending);
  stopped_ = stopped;
  if (stopped_)
    pending_.clear();
}

const std::vector<std::string>& stop_matcher::stops() const noexcept { return stops_; }

} // namespace thaw
