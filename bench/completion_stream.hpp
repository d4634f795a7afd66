#pragma once
/// Reads one streamed `POST /v1/completions` response as its bytes arrive and times it the way
/// vLLM's benchmark client does: every SSE event with a non-empty `choices` array is a chunk;
/// the first one's arrival is the TTFT, the gaps between the next ones are the ITLs, and the last
/// one's arrival ends the request (E2E). The usage event supplies the token counts; without one
/// the output is counted as one token a chunk (the server streams one token a chunk).
///
/// A request succeeds when the status is 200, at least one chunk came, no error event came, and
/// the stream ended with "data: [DONE]".

#include "bench/serve_stats.hpp"
#include "bench/sse_parser.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace thaw::bench {

class completion_stream {
public:
  /// `sent_s`: when the request was sent, on the clock of the `now_s` given to on_bytes.
  explicit completion_stream(double sent_s) : sent_s_(sent_s) {}

  /// Body bytes that arrived at `now_s`, split anywhere.
  void on_bytes(std::string_view bytes, double now_s);

  /// Fills `rec` (ok, error, ttft_s, e2e_s, itl_s, output_tokens, and prompt_tokens when the
  /// server reported usage) once the response is over. `http_status`: the response's status, 0
  /// when the request failed before one came; `transport_error`: why the connection failed, ""
  /// when it did not.
  void finish(int http_status, const std::string& transport_error, request_record& rec) const;

private:
  void on_event(std::string_view data, double now_s);

  double sent_s_;
  sse_parser parser_;
  std::string head_; ///< the body's first bytes, for an error response's message
  std::size_t chunks_ = 0;
  double first_s_ = 0;
  double last_s_ = 0;
  std::vector<double> itl_s_;
  std::int64_t prompt_tokens_ = -1; ///< from usage; -1 when none came
  std::int64_t completion_tokens_ = -1;
  bool done_ = false;
  std::string error_; ///< an error event's message, or a malformed chunk
};

} // namespace thaw::bench
