#include "bench/serve_workload.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>
#include <string_view>

namespace thaw::bench {
namespace {

std::vector<std::string_view> split_csv(std::string_view line) {
  std::vector<std::string_view> fields;
  std::size_t start = 0;
  while (true) {
    const auto comma = line.find(',', start);
    fields.push_back(line.substr(start, comma == std::string_view::npos ? comma : comma - start));
    if (comma == std::string_view::npos)
      return fields;
    start = comma + 1;
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == ' '))
    s.remove_suffix(1);
  while (!s.empty() && s.front() == ' ')
    s.remove_prefix(1);
  return s;
}

template <class T> bool parse_number(std::string_view s, T& out) {
  const auto* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, out);
  return ec == std::errc{} && ptr == end;
}

/// "2023-11-16 18:17:03.9799600" as seconds since the epoch (UTC assumed; only differences
/// matter). A double near 1.7e9 s still resolves well under a microsecond.
bool parse_timestamp(std::string_view s, double& seconds) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0;
  double sec = 0;
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' || s[16] != ':')
    return false;
  if (!parse_number(s.substr(0, 4), y) || !parse_number(s.substr(5, 2), mo) ||
      !parse_number(s.substr(8, 2), d) || !parse_number(s.substr(11, 2), h) ||
      !parse_number(s.substr(14, 2), mi) || !parse_number(s.substr(17), sec))
    return false;
  const std::chrono::year_month_day ymd{std::chrono::year{y}, std::chrono::month(mo),
                                        std::chrono::day(d)};
  if (!ymd.ok() || h > 23 || mi > 59 || sec < 0 || sec >= 61)
    return false;
  const auto days = std::chrono::sys_days{ymd}.time_since_epoch().count();
  seconds = static_cast<double>(days) * 86400.0 + h * 3600.0 + mi * 60.0 + sec;
  return true;
}

int cap(int value, int limit) {
  value = std::max(value, 1);
  return limit > 0 ? std::min(value, limit) : value;
}

expected<std::ifstream> open_csv(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      return make_error(errc::not_found, path.string() + ": no such file");
    return make_error(errc::io_error, path.string() + ": cannot be opened");
  }
  return in;
}

error bad_line(const std::filesystem::path& path, std::size_t line_no, std::string_view what) {
  return make_error(errc::parse_error,
                    path.string() + ":" + std::to_string(line_no) + ": " + std::string(what));
}

} // namespace

expected<std::vector<serve_request>> load_azure_trace(const trace_options& options) {
  if (!(options.time_scale > 0))
    return make_error(errc::invalid_argument, "time scale must be positive");
  THAW_ASSIGN(auto in, open_csv(options.path));
  std::string line;
  if (!std::getline(in, line))
    return bad_line(options.path, 1, "empty file, expected a header");
  const auto header = split_csv(trim(line));
  int col_time = -1, col_ctx = -1, col_gen = -1;
  for (int i = 0; i < static_cast<int>(header.size()); ++i) {
    const auto name = trim(header[i]);
    if (name == "TIMESTAMP")
      col_time = i;
    else if (name == "ContextTokens")
      col_ctx = i;
    else if (name == "GeneratedTokens")
      col_gen = i;
  }
  if (col_time < 0 || col_ctx < 0 || col_gen < 0)
    return bad_line(options.path, 1, "header lacks TIMESTAMP, ContextTokens or GeneratedTokens");
  const auto needed = static_cast<std::size_t>(std::max({col_time, col_ctx, col_gen})) + 1;

  std::vector<std::pair<double, serve_request>> rows;
  for (std::size_t line_no = 2; std::getline(in, line); ++line_no) {
    const auto text = trim(line);
    if (text.empty())
      continue;
    const auto fields = split_csv(text);
    if (fields.size() < needed)
      return bad_line(options.path, line_no, "too few fields");
    double t = 0;
    int ctx = 0, gen = 0;
    if (!parse_timestamp(trim(fields[col_time]), t))
      return bad_line(options.path, line_no, "bad TIMESTAMP");
    if (!parse_number(trim(fields[col_ctx]), ctx) || ctx < 0)
      return bad_line(options.path, line_no, "bad ContextTokens");
    if (!parse_number(trim(fields[col_gen]), gen) || gen < 0)
      return bad_line(options.path, line_no, "bad GeneratedTokens");
    serve_request r;
    r.prompt_tokens = cap(ctx, options.max_prompt_tokens);
    r.output_tokens = cap(gen, options.max_output_tokens);
    rows.emplace_back(t, std::move(r));
  }
  if (rows.empty())
    return bad_line(options.path, 2, "no requests");

  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  const double t0 = rows.front().first;
  std::vector<serve_request> out;
  out.reserve(rows.size());
  for (auto& [t, r] : rows) {
    r.arrival_s = (t - t0) / options.time_scale;
    if (options.duration_s > 0 && r.arrival_s >= options.duration_s)
      break;
    if (options.max_requests > 0 && out.size() >= options.max_requests)
      break;
    out.push_back(std::move(r));
  }
  return out;
}

expected<std::vector<serve_request>> poisson_workload(const poisson_options& options) {
  if (!(options.rate > 0) || !std::isfinite(options.rate))
    return make_error(errc::invalid_argument, "--rate must be positive");
  if (!(options.duration_s > 0) || !std::isfinite(options.duration_s))
    return make_error(errc::invalid_argument, "--duration must be positive");
  if (options.prompt_tokens <= 0 || options.output_tokens <= 0)
    return make_error(errc::invalid_argument,
                      "--prompt-tokens and --output-tokens must be positive");
  // The inverse-CDF transform by hand, not std::exponential_distribution, whose algorithm is
  // left to the standard library: the same seed gives the same arrivals on any build.
  std::mt19937_64 rng(options.seed);
  std::vector<serve_request> out;
  double t = 0;
  while (true) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53; // [0, 1)
    t += -std::log1p(-u) / options.rate;
    if (t >= options.duration_s)
      return out;
    out.push_back(serve_request{t, options.prompt_tokens, options.output_tokens, {}});
  }
}

expected<std::vector<double>> load_model_popularity(const std::filesystem::path& path) {
  THAW_ASSIGN(auto in, open_csv(path));
  std::string line;
  if (!std::getline(in, line))
    return bad_line(path, 1, "empty file, expected a header");
  const auto header = split_csv(trim(line));
  if (header.size() < 2 || trim(header[1]) != "requests")
    return bad_line(path, 1, "expected the header model_id,requests");
  std::vector<double> weights;
  for (std::size_t line_no = 2; std::getline(in, line); ++line_no) {
    const auto text = trim(line);
    if (text.empty())
      continue;
    const auto fields = split_csv(text);
    double w = 0;
    if (fields.size() < 2 || !parse_number(trim(fields[1]), w) || !(w >= 0))
      return bad_line(path, line_no, "bad requests count");
    weights.push_back(w);
  }
  if (weights.empty() || std::accumulate(weights.begin(), weights.end(), 0.0) <= 0)
    return bad_line(path, 2, "no requests");
  std::sort(weights.begin(), weights.end(), std::greater<>());
  return weights;
}

status assign_models(std::vector<serve_request>& requests, const std::vector<std::string>& models,
                     const std::vector<double>& weights, std::uint64_t seed) {
  if (models.empty())
    return make_error(errc::invalid_argument, "--models: no model given");
  if (weights.empty()) {
    for (std::size_t i = 0; i < requests.size(); ++i)
      requests[i].model = models[i % models.size()];
    return {};
  }
  const auto n = std::min(models.size(), weights.size());
  // Cumulative weights and a uniform draw: std::discrete_distribution's algorithm is also the
  // library's choice, and a run should be reproducible from its seed alone.
  std::vector<double> cumulative(n);
  std::partial_sum(weights.begin(), weights.begin() + static_cast<std::ptrdiff_t>(n),
                   cumulative.begin());
  if (!(cumulative.back() > 0))
    return make_error(errc::invalid_argument,
                      "--model-popularity: the listed models have no requests");
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  for (auto& r : requests) {
    const double x = static_cast<double>(rng() >> 11) * 0x1.0p-53 * cumulative.back();
    const auto it = std::upper_bound(cumulative.begin(), cumulative.end(), x);
    r.model = models[std::min<std::size_t>(it - cumulative.begin(), n - 1)];
  }
  return {};
}

std::string make_prompt(int tokens) {
  std::string out;
  out.reserve(static_cast<std::size_t>(std::max(tokens, 0)) * 6);
  for (int i = 0; i < tokens; ++i)
    out += i == 0 ? "hello" : " hello";
  return out;
}

} // namespace thaw::bench
