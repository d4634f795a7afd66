#include "bench/serve_stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>

namespace thaw::bench {

double percentile(std::vector<double> values, double p) {
  if (values.empty())
    return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(rank));
  const auto hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (rank - static_cast<double>(lo));
}

metric_summary summarize_metric(const std::vector<double>& seconds) {
  metric_summary m;
  m.count = seconds.size();
  if (seconds.empty())
    return m;
  std::vector<double> ms(seconds.size());
  std::transform(seconds.begin(), seconds.end(), ms.begin(), [](double s) { return s * 1e3; });
  m.mean_ms = std::accumulate(ms.begin(), ms.end(), 0.0) / static_cast<double>(ms.size());
  m.median_ms = percentile(ms, 50);
  m.p90_ms = percentile(ms, 90);
  m.p99_ms = percentile(ms, 99);
  m.max_ms = *std::max_element(ms.begin(), ms.end());
  return m;
}

serve_summary summarize(const std::vector<request_record>& records, double duration_s) {
  serve_summary s;
  s.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2e;
  for (const auto& r : records) {
    s.max_send_delay_ms = std::max(s.max_send_delay_ms, (r.sent_s - r.scheduled_s) * 1e3);
    if (r.waited_for_thread)
      ++s.waited_for_thread;
    if (!r.ok) {
      ++s.failed;
      if (s.first_errors.size() < 5 &&
          std::find(s.first_errors.begin(), s.first_errors.end(), r.error) == s.first_errors.end())
        s.first_errors.push_back(r.error);
      continue;
    }
    ++s.completed;
    s.total_input_tokens += r.prompt_tokens;
    s.total_output_tokens += r.output_tokens;
    ttft.push_back(r.ttft_s);
    e2e.push_back(r.e2e_s);
    if (r.output_tokens > 1)
      tpot.push_back((r.e2e_s - r.ttft_s) / static_cast<double>(r.output_tokens - 1));
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
  }
  if (duration_s > 0) {
    s.request_throughput = static_cast<double>(s.completed) / duration_s;
    s.output_throughput = static_cast<double>(s.total_output_tokens) / duration_s;
    s.total_token_throughput =
        static_cast<double>(s.total_input_tokens + s.total_output_tokens) / duration_s;
  }
  s.ttft = summarize_metric(ttft);
  s.tpot = summarize_metric(tpot);
  s.itl = summarize_metric(itl);
  s.e2e = summarize_metric(e2e);
  return s;
}

nlohmann::json to_json(const serve_summary& s) {
  nlohmann::json j;
  j["completed"] = s.completed;
  j["failed"] = s.failed;
  j["waited_for_thread"] = s.waited_for_thread;
  j["max_send_delay_ms"] = s.max_send_delay_ms;
  j["duration"] = s.duration_s;
  j["total_input_tokens"] = s.total_input_tokens;
  j["total_output_tokens"] = s.total_output_tokens;
  j["request_throughput"] = s.request_throughput;
  j["output_throughput"] = s.output_throughput;
  j["total_token_throughput"] = s.total_token_throughput;
  const auto put = [&j](const char* name, const metric_summary& m) {
    const std::string n = name;
    j["mean_" + n + "_ms"] = m.mean_ms;
    j["median_" + n + "_ms"] = m.median_ms;
    j["p90_" + n + "_ms"] = m.p90_ms;
    j["p99_" + n + "_ms"] = m.p99_ms;
    j["max_" + n + "_ms"] = m.max_ms;
  };
  put("ttft", s.ttft);
  put("tpot", s.tpot);
  put("itl", s.itl);
  put("e2e", s.e2e);
  j["errors"] = s.first_errors;
  return j;
}

namespace {

void line(std::string& out, const char* label, const std::string& value) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%-40s%s\n", label, value.c_str());
  out += buf;
}

std::string num(double v, int decimals = 2) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

void section(std::string& out, const char* title, const char* name, const metric_summary& m) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s\n", title);
  out += buf;
  const std::string n = name;
  line(out, ("Mean " + n + " (ms):").c_str(), num(m.mean_ms));
  line(out, ("Median " + n + " (ms):").c_str(), num(m.median_ms));
  line(out, ("P90 " + n + " (ms):").c_str(), num(m.p90_ms));
  line(out, ("P99 " + n + " (ms):").c_str(), num(m.p99_ms));
}

} // namespace

std::string format_summary(const serve_summary& s) {
  std::string out = "============ Serving Benchmark Result ============\n";
  line(out, "Successful requests:", std::to_string(s.completed));
  line(out, "Failed requests:", std::to_string(s.failed));
  line(out, "Sent late (no free client thread):", std::to_string(s.waited_for_thread));
  line(out, "Max send delay (ms):", num(s.max_send_delay_ms));
  line(out, "Benchmark duration (s):", num(s.duration_s));
  line(out, "Total input tokens:", std::to_string(s.total_input_tokens));
  line(out, "Total generated tokens:", std::to_string(s.total_output_tokens));
  line(out, "Request throughput (req/s):", num(s.request_throughput));
  line(out, "Output token throughput (tok/s):", num(s.output_throughput));
  line(out, "Total token throughput (tok/s):", num(s.total_token_throughput));
  section(out, "---------------Time to First Token----------------", "TTFT", s.ttft);
  section(out, "-----Time per Output Token (excl. 1st token)------", "TPOT", s.tpot);
  section(out, "---------------Inter-token Latency----------------", "ITL", s.itl);
  section(out, "----------------End-to-end Latency----------------", "E2EL", s.e2e);
  out += "==================================================\n";
  for (const auto& e : s.first_errors)
    out += "error: " + e + "\n";
  return out;
}

} // namespace thaw::bench
