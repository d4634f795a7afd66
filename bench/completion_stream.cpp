#include "bench/completion_stream.hpp"

#include <nlohmann/json.hpp>

namespace thaw::bench {
namespace {

constexpr std::size_t head_bytes = 4096;

/// The message of an OpenAI error body {"error":{"message":...}}, or the body itself, shortened.
std::string error_message(std::string_view body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error")) {
    const auto& e = j["error"];
    if (e.is_object() && e.contains("message") && e["message"].is_string())
      return e["message"].get<std::string>();
    if (e.is_string())
      return e.get<std::string>();
  }
  return std::string(body.substr(0, 200));
}

} // namespace

void completion_stream::on_bytes(std::string_view bytes, double now_s) {
  if (head_.size() < head_bytes)
    head_.append(bytes.substr(0, head_bytes - head_.size()));
  parser_.feed(bytes, [&](std::string_view data) { on_event(data, now_s); });
}

void completion_stream::on_event(std::string_view data, double now_s) {
  if (data == "[DONE]") {
    done_ = true;
    return;
  }
  auto j = nlohmann::json::parse(data, nullptr, false);
  if (!j.is_object()) {
    if (error_.empty())
      error_ = "malformed chunk: " + std::string(data.substr(0, 100));
    return;
  }
  if (j.contains("error")) {
    if (error_.empty())
      error_ = "error event: " + error_message(data);
    return;
  }
  if (const auto it = j.find("choices"); it != j.end() && it->is_array() && !it->empty()) {
    if (chunks_ == 0)
      first_s_ = now_s;
    else
      itl_s_.push_back(now_s - last_s_);
    last_s_ = now_s;
    ++chunks_;
  }
  if (const auto it = j.find("usage"); it != j.end() && it->is_object()) {
    const auto count = [&](const char* key) -> std::int64_t {
      const auto f = it->find(key);
      return f != it->end() && f->is_number_integer() ? f->get<std::int64_t>() : -1;
    };
    prompt_tokens_ = count("prompt_tokens");
    completion_tokens_ = count("completion_tokens");
  }
}

void completion_stream::finish(int http_status, const std::string& transport_error,
                               request_record& rec) const {
  rec.ok = false;
  rec.ttft_s = chunks_ > 0 ? first_s_ - sent_s_ : 0;
  rec.e2e_s = chunks_ > 0 ? last_s_ - sent_s_ : 0;
  rec.itl_s = itl_s_;
  rec.output_tokens =
      completion_tokens_ >= 0 ? completion_tokens_ : static_cast<std::int64_t>(chunks_);
  if (prompt_tokens_ >= 0)
    rec.prompt_tokens = prompt_tokens_;
  if (http_status != 0 && http_status != 200)
    rec.error = "HTTP " + std::to_string(http_status) + ": " + error_message(head_);
  else if (!transport_error.empty())
    rec.error = transport_error;
  else if (!error_.empty())
    rec.error = error_;
  else if (chunks_ == 0)
    rec.error = "no chunk with choices in the stream";
  else if (!done_)
    rec.error = "stream ended without data: [DONE]";
  else
    rec.ok = true;
}

} // namespace thaw::bench
