#pragma once
/// Incremental parsing of a Server-Sent Events stream (text/event-stream), as an OpenAI
/// streaming response sends it: "data: {...}\n\n" events, whose bytes may arrive split anywhere,
/// several events in one read or one event over many.
///
/// Follows the WHATWG event-stream rules that matter here: lines end in "\n" or "\r\n"; a blank
/// line ends an event; "data:" lines (one optional space after the colon) are joined with "\n";
/// comment lines (":...") and other fields (event, id, retry) are ignored; an event without data
/// is not dispatched.

#include <functional>
#include <string>
#include <string_view>

namespace thaw::bench {

class sse_parser {
public:
  using event_handler = std::function<void(std::string_view data)>;

  /// Consumes `bytes`, calling `on_event` with the data of every event completed by them.
  void feed(std::string_view bytes, const event_handler& on_event);

  /// True when bytes of an unfinished line or event are buffered (a stream cut short).
  [[nodiscard]] bool pending() const noexcept { return !line_.empty() || has_data_; }

private:
  void take_line(std::string_view line, const event_handler& on_event);

  std::string line_; ///< the current line's bytes so far
  std::string data_; ///< the current event's data so far
  bool has_data_ = false;
};

} // namespace thaw::bench
