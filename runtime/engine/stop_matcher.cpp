#include "runtime/engine/stop_matcher.hpp"

#include <algorithm>
#include <utility>

namespace thaw {

stop_matcher::stop_matcher(std::vector<std::string> stops) {
  for (auto& s : stops)
    if (!s.empty())
      stops_.push_back(std::move(s));
}

stop_matcher::result stop_matcher::push(std::string_view text) {
  result r;
  if (stopped_ || text.empty())
    return r;
  if (stops_.empty()) {
    r.text = text;
    return r;
  }
  std::string buf = std::move(pending_);
  buf.append(text);
  pending_.clear();

  // The earliest complete occurrence of any stop.
  std::size_t first = std::string::npos;
  const std::string* which = nullptr;
  for (const auto& s : stops_) {
    auto at = buf.find(s);
    if (at != std::string::npos && (first == std::string::npos || at < first)) {
      first = at;
      which = &s;
    }
  }
  if (which) {
    r.text = buf.substr(0, first);
    r.stopped = true;
    r.matched = *which;
    stopped_ = true;
    return r;
  }
  // Hold back the longest suffix that is a proper prefix of some stop: only it can still grow
  // into a match (any occurrence starting earlier would have been found complete above).
  std::size_t hold = 0;
  for (const auto& s : stops_) {
    const std::size_t longest = std::min(s.size() - 1, buf.size());
    for (std::size_t len = longest; len > hold; --len)
      if (std::string_view(buf).substr(buf.size() - len) == std::string_view(s).substr(0, len)) {
        hold = len;
        break;
      }
  }
  r.text = buf.substr(0, buf.size() - hold);
  pending_ = buf.substr(buf.size() - hold);
  return r;
}

std::string stop_matcher::flush() {
  if (stopped_)
    return {};
  return std::exchange(pending_, {});
}

void stop_matcher::restore(std::string pending, bool stopped) {
  pending_ = std::move(pending);
  stopped_ = stopped;
}

} // namespace thaw
