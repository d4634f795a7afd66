#pragma once
/// Stop strings on the streamed text (ARCHITECTURE.md section 6, OpenAI `stop`; vLLM with
/// include_stop_str_in_output=false).
///
/// The detokenizer hands over text in pieces of whole code points; a stop string may span any
/// number of pieces. The matcher holds back exactly the longest suffix of the text seen so far
/// that is a proper prefix of some stop string (it could still become one) and releases
/// everything before it. When a stop string completes, the text before it is released, the stop
/// string and anything after it are dropped, and the matcher is stopped.
///
/// Which stop wins: the occurrence that ENDS first in the text, i.e. the first one a reader of
/// the stream could see completed; among occurrences ending at the same place, the longer one
/// (it starts first). Because of that rule the result does not depend on how the text is split
/// into pieces.
///
///   matching --push(text completing a stop)--> stopped (push returns nothing, flush nothing)
///   matching --flush()--> held text released, nothing held (pushes may continue)
///
/// Bytes are compared exactly; stop strings should be valid UTF-8 (validate() checks), and then
/// every piece released ends on a code point boundary when the input does.

#include "runtime/common/error.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace thaw {

class stop_matcher {
public:
  /// Empty strings are ignored (they would stop before any text).
  explicit stop_matcher(std::vector<std::string> stops);

  struct result {
    std::string text;     ///< may be emitted now
    bool stopped = false; ///< a stop string completed with this push
    std::string matched;  ///< that stop string, when stopped
  };

  /// Feeds newly decoded text; returns what may be emitted now. After stopped, further pushes
  /// return nothing.
  [[nodiscard]] result push(std::string_view text);
  /// End of generation without a stop: releases the held-back text (nothing once stopped).
  [[nodiscard]] std::string flush();
  /// The held-back text (export_state carries it); restore() sets it on a fresh matcher with the
  /// same stops.
  [[nodiscard]] const std::string& pending() const noexcept;
  [[nodiscard]] bool stopped() const noexcept;
  void restore(std::string pending, bool stopped);

  /// The stop strings in use (empty ones dropped), in the order given.
  [[nodiscard]] const std::vector<std::string>& stops() const noexcept;

  static constexpr std::size_t max_stops = 16; // more -> the step loop rejects the request

  /// Checks a request's stop list before it is queued: invalid_argument for more than
  /// max_stops strings or a string that is not valid UTF-8, naming which.
  [[nodiscard]] static status validate(const std::vector<std::string>& stops);

private:
  /// Length of the longest suffix of `text` that is a proper prefix of a stop string.
  [[nodiscard]] std::size_t held_length(std::string_view text) const noexcept;

  std::vector<std::string> stops_;
  std::size_t longest_ = 0; ///< bytes in the longest stop string
  std::string pending_;
  bool stopped_ = false;
};

} // namespace thaw
