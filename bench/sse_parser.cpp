#include "bench/sse_parser.hpp"

namespace thaw::bench {

void sse_parser::feed(std::string_view bytes, const event_handler& on_event) {
  while (!bytes.empty()) {
    const auto nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      line_.append(bytes);
      return;
    }
    // Most lines arrive whole; only copy when one was split across reads.
    if (line_.empty()) {
      take_line(bytes.substr(0, nl), on_event);
    } else {
      line_.append(bytes.substr(0, nl));
      const std::string line = std::move(line_);
      line_.clear();
      take_line(line, on_event);
    }
    bytes.remove_prefix(nl + 1);
  }
}

void sse_parser::take_line(std::string_view line, const event_handler& on_event) {
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  if (line.empty()) {
    if (has_data_)
      on_event(data_);
    data_.clear();
    has_data_ = false;
    return;
  }
  if (line.front() == ':')
    return;
  const auto colon = line.find(':');
  const auto field = line.substr(0, colon);
  if (field != "data")
    return;
  auto value = colon == std::string_view::npos ? std::string_view{} : line.substr(colon + 1);
  if (!value.empty() && value.front() == ' ')
    value.remove_prefix(1);
  if (has_data_)
    data_ += '\n';
  data_.append(value);
  has_data_ = true;
}

} // namespace thaw::bench
