#include "runtime/sched/sim_workload.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>

namespace thaw::sched {
namespace {

expected<std::string> read_file(const std::filesystem::path& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return make_error(errc::not_found, path.string() + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string_view> split(std::string_view line, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    auto pos = line.find(sep, start);
    out.push_back(line.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos)
      return out;
    start = pos + 1;
  }
}

template <class T>
bool parse_number(std::string_view s, T& out) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '"'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '"' || s.back() == '\r'))
    s.remove_suffix(1);
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && p == s.data() + s.size();
}

// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

// "2023-11-16 18:15:46.6805900" -> seconds since the epoch.
bool parse_timestamp(std::string_view s, double& out) {
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':')
    return false;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0;
  double sec = 0;
  if (!parse_number(s.substr(0, 4), y) || !parse_number(s.substr(5, 2), mo) ||
      !parse_number(s.substr(8, 2), d) || !parse_number(s.substr(11, 2), h) ||
      !parse_number(s.substr(14, 2), mi) || !parse_number(s.substr(17), sec))
    return false;
  out = static_cast<double>(days_from_civil(y, static_cast<unsigned>(mo),
                                            static_cast<unsigned>(d))) *
            86400.0 +
        h * 3600.0 + mi * 60.0 + sec;
  return true;
}

std::string where(std::string_view source, std::size_t line) {
  return std::string{source} + ":" + std::to_string(line) + ": ";
}

} // namespace

expected<std::vector<trace_request>> parse_azure_trace(std::string_view text,
                                                       std::string_view source) {
  std::vector<trace_request> out;
  std::size_t line_no = 0;
  double first = 0;
  for (auto line : split(text, '\n')) {
    ++line_no;
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.find("TIMESTAMP") != std::string_view::npos))
      continue;
    auto f = split(line, ',');
    trace_request r;
    double t = 0;
    if (f.size() != 3 || !parse_timestamp(f[0], t) || !parse_number(f[1], r.input_tokens) ||
        !parse_number(f[2], r.output_tokens) || r.input_tokens < 0 || r.output_tokens < 0)
      return make_error(errc::parse_error,
                        where(source, line_no) +
                            "expected TIMESTAMP,ContextTokens,GeneratedTokens, got '" +
                            std::string{line.substr(0, 80)} + "'");
    if (out.empty())
      first = t;
    r.arrival = t - first;
    out.push_back(r);
  }
  if (out.empty())
    return make_error(errc::invalid_argument, std::string{source} + ": no requests");
  // The trace is in arrival order; keep it so even if a line is out of place.
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.arrival < b.arrival; });
  const double t0 = out.front().arrival;
  for (auto& r : out)
    r.arrival -= t0;
  return out;
}

expected<std::vector<trace_request>> load_azure_trace(const std::filesystem::path& path) {
  THAW_ASSIGN(auto text, read_file(path));
  return parse_azure_trace(text, path.string());
}

expected<std::vector<double>> parse_popularity(std::string_view text, std::string_view source) {
  std::vector<double> out;
  std::size_t line_no = 0;
  for (auto line : split(text, '\n')) {
    ++line_no;
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    if (line.empty())
      continue;
    auto f = split(line, ',');
    double n = 0;
    if (f.size() < 2 || !parse_number(f.back(), n) || n < 0) {
      if (line_no == 1)
        continue; // header
      return make_error(errc::parse_error, where(source, line_no) +
                                               "expected model_id,requests, got '" +
                                               std::string{line.substr(0, 80)} + "'");
    }
    out.push_back(n);
  }
  if (out.empty())
    return make_error(errc::invalid_argument, std::string{source} + ": no models");
  std::sort(out.begin(), out.end(), std::greater<>());
  return out;
}

expected<std::vector<double>> load_popularity(const std::filesystem::path& path) {
  THAW_ASSIGN(auto text, read_file(path));
  return parse_popularity(text, path.string());
}

namespace {

// Least squares of log(count) = c - s*log(rank) over the ranks with a count.
std::pair<double, double> fit_zipf(const std::vector<double>& pop) {
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < pop.size(); ++i) {
    if (pop[i] <= 0)
      continue;
    const double x = std::log(static_cast<double>(i + 1)), y = std::log(pop[i]);
    n += 1;
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  if (n < 2 || sxx - sx * sx / n <= 0)
    return {1.0, pop.empty() ? 0.0 : std::log(std::max(pop.front(), 1.0))};
  const double slope = (sxy - sx * sy / n) / (sxx - sx * sx / n);
  return {-slope, (sy - slope * sx) / n};
}

} // namespace

double fitted_zipf_exponent(const std::vector<double>& popularity) {
  return fit_zipf(popularity).first;
}

std::vector<double> model_weights(const std::vector<double>& popularity, std::uint32_t models) {
  std::vector<double> w(models, 0.0);
  const auto [s, c] = fit_zipf(popularity);
  for (std::uint32_t i = 0; i < models; ++i) {
    if (i < popularity.size())
      w[i] = popularity[i];
    else
      w[i] = std::exp(c - s * std::log(static_cast<double>(i + 1)));
  }
  // A file whose tail is zeros would leave models that never get a request; that is the file's
  // say, but an all-zero table would leave nothing to draw from.
  if (std::all_of(w.begin(), w.end(), [](double x) { return x <= 0; }))
    std::fill(w.begin(), w.end(), 1.0);
  return w;
}

std::vector<sim_request> make_requests(const std::vector<trace_request>& trace,
                                       const std::vector<double>& weights, double time_scale,
                                       double duration, std::uint64_t seed) {
  std::vector<sim_request> out;
  if (trace.empty() || weights.empty() || !(time_scale > 0))
    return out;
  std::vector<double> cumulative(weights.size());
  std::partial_sum(weights.begin(), weights.end(), cumulative.begin());
  const double total = cumulative.back();
  std::mt19937_64 rng{seed};
  std::uniform_real_distribution<double> u{0.0, total};
  // One period of the (scaled) trace: its span plus one mean gap, so repeats do not collide.
  const double span = trace.back().arrival / time_scale;
  const double period = span + span / static_cast<double>(trace.size());
  const double end = duration > 0 ? duration : span;
  for (std::size_t rep = 0;; ++rep) {
    const double base = static_cast<double>(rep) * period;
    if (base > end)
      break;
    for (const auto& r : trace) {
      const double t = base + r.arrival / time_scale;
      if (t > end)
        break;
      auto it = std::upper_bound(cumulative.begin(), cumulative.end(), u(rng));
      auto model = static_cast<std::uint32_t>(
          std::min<std::ptrdiff_t>(it - cumulative.begin(),
                                   static_cast<std::ptrdiff_t>(weights.size()) - 1));
      out.push_back({t, model, r.input_tokens, r.output_tokens});
    }
    if (period <= 0)
      break;
  }
  return out;
}

} // namespace thaw::sched
