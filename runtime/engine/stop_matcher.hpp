#pragma once
/// Stop strings matched across token boundaries on the streamed text (OpenAI semantics; vLLM's
/// include_stop_str_in_output = false). Text that could still be the start of a stop string is
/// held back; when a stop string completes, the text before it is released and the stop string
/// itself never is. The first stop to complete wins; among stops completing in the same push,
/// the earliest-starting one, then the one listed first.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace thaw {

class stop_matcher {
public:
  static constexpr std::size_t max_stops = 16; ///< more: the step loop rejects the request

  /// Empty strings are ignored.
  explicit stop_matcher(std::vector<std::string> stops);

  struct result {
    std::string text;     ///< what may be emitted now
    bool stopped = false; ///< a stop string completed: generation ends
    std::string matched;  ///< which one
  };

  /// Feeds newly decoded text. After a stop, pushes return nothing.
  [[nodiscard]] result push(std::string_view text);
  /// End of generation without a stop: releases what is held back.
  [[nodiscard]] std::string flush();

  /// The held-back text (sequence export carries it) and whether a stop matched.
  [[nodiscard]] const std::string& pending() const noexcept { return pending_; }
  [[nodiscard]] bool stopped() const noexcept { return stopped_; }
  /// Sets the state exported from a matcher with the same stop strings.
  void restore(std::string pending, bool stopped);

private:
  std::vector<std::string> stops_;
  std::string pending_; ///< the longest suffix of the text that is a proper prefix of a stop
  bool stopped_ = false;
};

} // namespace thaw
