// The metrics registry: values seen through render(), read back by a small Prometheus text
// parser written here from the 0.0.4 format description; concurrent updates from several threads.

#include "runtime/common/metrics.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace thaw::metrics {
namespace {

struct sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct exposition {
  std::map<std::string, std::string> help;
  std::map<std::string, std::string> type;
  std::vector<std::string> family_order;
  std::vector<sample> samples;

  [[nodiscard]] std::vector<sample> find(const std::string& name) const {
    std::vector<sample> out;
    for (const auto& s : samples)
      if (s.name == name)
        out.push_back(s);
    return out;
  }
  [[nodiscard]] double value(const std::string& name,
                             const std::map<std::string, std::string>& labels = {}) const {
    for (const auto& s : samples)
      if (s.name == name && s.labels == labels)
        return s.value;
    ADD_FAILURE() << "no sample " << name;
    return -1;
  }
};

// Reads the text format back; fails the test on anything malformed.
exposition parse(const std::string& text) {
  exposition e;
  std::istringstream in(text);
  std::string line;
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "the exposition ends with a newline";
  while (std::getline(in, line)) {
    if (line.starts_with("# HELP ") || line.starts_with("# TYPE ")) {
      const auto rest = line.substr(7);
      const auto sp = rest.find(' ');
      const auto name = rest.substr(0, sp);
      const auto body = rest.substr(sp + 1);
      if (line[2] == 'H') {
        std::string unescaped;
        for (std::size_t i = 0; i < body.size(); ++i) {
          if (body[i] == '\\' && i + 1 < body.size()) {
            ++i;
            unescaped += body[i] == 'n' ? '\n' : body[i];
          } else {
            unescaped += body[i];
          }
        }
        e.help[name] = unescaped;
        e.family_order.push_back(name);
      } else {
        e.type[name] = body;
      }
      continue;
    }
    sample s;
    std::size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ')
      s.name += line[i++];
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (line.at(i) != '}') {
        std::string key;
        while (line.at(i) != '=')
          key += line[i++];
        ++i;
        EXPECT_EQ(line.at(i), '"') << line;
        ++i;
        std::string value;
        while (line.at(i) != '"') {
          if (line[i] == '\\') {
            ++i;
            value += line.at(i) == 'n' ? '\n' : line[i];
          } else {
            value += line[i];
          }
          ++i;
        }
        ++i;
        if (line.at(i) == ',')
          ++i;
        EXPECT_TRUE(s.labels.emplace(key, value).second) << "duplicate label in " << line;
      }
      ++i;
    }
    EXPECT_EQ(line.at(i), ' ') << line;
    const auto v = line.substr(i + 1);
    s.value = v == "+Inf" ? INFINITY : v == "-Inf" ? -INFINITY : std::strtod(v.c_str(), nullptr);
    e.samples.push_back(std::move(s));
  }
  return e;
}

TEST(Metrics, CountersAndGaugesRenderWithHelpTypeAndLabels) {
  registry r;
  auto& requests = r.add_counter("thaw_requests_total", "Requests by model.\nAll of them.",
                                 {"model", "status"});
  auto& running = r.add_gauge("vllm:num_requests_running", "Requests running.");
  requests.get({"llama", "200"}).inc();
  requests.get({"llama", "200"}).inc(2);
  requests.get({"we\"ird\\name\nx", "400"}).inc(0.5);
  running.get().set(3);
  running.get().add(-1);

  const auto e = parse(r.render());
  EXPECT_EQ((std::vector<std::string>{"thaw_requests_total", "vllm:num_requests_running"}),
            e.family_order);
  EXPECT_EQ(e.type.at("thaw_requests_total"), "counter");
  EXPECT_EQ(e.type.at("vllm:num_requests_running"), "gauge");
  EXPECT_EQ(e.help.at("thaw_requests_total"), "Requests by model.\nAll of them.");
  EXPECT_EQ(e.value("thaw_requests_total", {{"model", "llama"}, {"status", "200"}}), 3);
  // Quotes, backslashes and newlines in a label value survive the round trip.
  EXPECT_EQ(e.value("thaw_requests_total", {{"model", "we\"ird\\name\nx"}, {"status", "400"}}),
            0.5);
  EXPECT_EQ(e.value("vllm:num_requests_running"), 2);
  EXPECT_EQ(requests.get({"llama", "200"}).value(), 3);
}

TEST(Metrics, UnlabelledSeriesExistsAtZeroAndCounterNeverDecreases) {
  registry r;
  auto& c = r.add_counter("thaw_cold_starts_total", "Cold starts.");
  EXPECT_EQ(parse(r.render()).value("thaw_cold_starts_total"), 0);
  c.get().inc(-5); // ignored: counters only go up
  c.get().inc();
  EXPECT_EQ(parse(r.render()).value("thaw_cold_starts_total"), 1);
  // Registering the same name and kind again gives the same family.
  EXPECT_EQ(&r.add_counter("thaw_cold_starts_total", "Cold starts."), &c);
}

TEST(Metrics, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  registry r;
  auto& h = r.add_histogram("vllm:time_to_first_token_seconds", "TTFT.", {0.1, 1, 2.5},
                            {"model_name"});
  auto& s = h.get({"m"});
  for (const double v : {0.05, 0.1, 0.5, 1.0, 3.0, 100.0})
    s.observe(v);
  EXPECT_EQ(s.count(), 6u);
  EXPECT_DOUBLE_EQ(s.sum(), 104.65);
  EXPECT_EQ(s.cumulative(0), 2u); // le is inclusive: 0.1 falls in the 0.1 bucket
  EXPECT_EQ(s.cumulative(3), 6u);

  const auto e = parse(r.render());
  EXPECT_EQ(e.type.at("vllm:time_to_first_token_seconds"), "histogram");
  const auto buckets = e.find("vllm:time_to_first_token_seconds_bucket");
  ASSERT_EQ(buckets.size(), 4u);
  const std::vector<std::string> le{"0.1", "1", "2.5", "+Inf"};
  const std::vector<double> expected{2, 4, 4, 6};
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    EXPECT_EQ(buckets[i].labels.at("le"), le[i]);
    EXPECT_EQ(buckets[i].labels.at("model_name"), "m");
    EXPECT_EQ(buckets[i].value, expected[i]);
  }
  EXPECT_DOUBLE_EQ(e.value("vllm:time_to_first_token_seconds_sum", {{"model_name", "m"}}), 104.65);
  EXPECT_EQ(e.value("vllm:time_to_first_token_seconds_count", {{"model_name", "m"}}), 6);
}

TEST(Metrics, RemovedSeriesIsNoLongerRendered) {
  registry r;
  auto& g = r.add_gauge("thaw_model_bytes", "Bytes of a model.", {"model"});
  g.get({"a"}).set(10);
  auto& b = g.get({"b"});
  b.set(20);
  g.remove({"b"});
  b.set(30); // a reference kept past remove() stays usable; it just is not shown
  const auto e = parse(r.render());
  ASSERT_EQ(e.find("thaw_model_bytes").size(), 1u);
  EXPECT_EQ(e.value("thaw_model_bytes", {{"model", "a"}}), 10);
  EXPECT_EQ(g.get({"b"}).value(), 0); // a new series after removal starts over
}

TEST(Metrics, LatencyBucketsAscendFromOneMillisecondTo160Seconds) {
  const auto b = latency_buckets();
  ASSERT_FALSE(b.empty());
  EXPECT_DOUBLE_EQ(b.front(), 0.001);
  EXPECT_DOUBLE_EQ(b.back(), 160.0);
  for (std::size_t i = 1; i < b.size(); ++i)
    EXPECT_LT(b[i - 1], b[i]);
}

TEST(Metrics, ConcurrentUpdatesAndRendersLoseNothing) {
  registry r;
  auto& c = r.add_counter("thaw_tokens_total", "Tokens.", {"model"});
  auto& h = r.add_histogram("thaw_latency_seconds", "Latency.", latency_buckets(), {"model"});
  constexpr int threads = 6;
  constexpr int per_thread = 20000;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        // Series are created concurrently too: "m0".."m2" shared between threads.
        const std::string model = "m" + std::to_string((t + i) % 3);
        c.get({model}).inc();
        h.get({model}).observe(0.001 * (i % 500));
      }
    });
  }
  // Rendering while others update must give a well-formed, internally consistent text.
  for (int i = 0; i < 20; ++i) {
    const auto e = parse(r.render());
    for (const auto& model : {"m0", "m1", "m2"}) {
      double prev = 0;
      double inf = -1;
      for (const auto& s : e.find("thaw_latency_seconds_bucket")) {
        if (s.labels.at("model") != model)
          continue;
        EXPECT_GE(s.value, prev);
        prev = s.value;
        if (s.labels.at("le") == "+Inf")
          inf = s.value;
      }
      if (inf >= 0) {
        EXPECT_EQ(e.value("thaw_latency_seconds_count", {{"model", model}}), inf);
      }
    }
  }
  for (auto& w : workers)
    w.join();

  const auto e = parse(r.render());
  double total = 0;
  double count = 0;
  for (const auto& model : {"m0", "m1", "m2"}) {
    total += e.value("thaw_tokens_total", {{"model", model}});
    count += e.value("thaw_latency_seconds_count", {{"model", model}});
  }
  EXPECT_EQ(total, threads * per_thread);
  EXPECT_EQ(count, threads * per_thread);
}

TEST(MetricsDeathTest, MisuseStopsAtOnce) {
  EXPECT_DEATH(registry{}.add_counter("bad name", "x"), "invalid metric name");
  EXPECT_DEATH(
      {
        registry r;
        r.add_counter("thaw_x", "x");
        r.add_gauge("thaw_x", "x");
      },
      "registered twice");
  EXPECT_DEATH(registry{}.add_gauge("thaw_y", "y", {"model"}).get({}), "label values");
}

TEST(Metrics, ScrapedSumReadsBackWhatRenderWrote) {
  registry reg;
  auto& c = reg.add_counter("thaw_migrations_total", "Live migrations", {"model_name", "outcome"});
  c.get({"a", "completed"}).inc(2);
  c.get({"b", "completed"}).inc(3);
  c.get({"a", "aborted"}).inc();
  auto& h = reg.add_histogram("thaw_pause_seconds", "Pause", {0.1, 1.0}, {"model_name"});
  h.get({"a"}).observe(0.5);
  h.get({"a"}).observe(0.25);
  const auto text = reg.render();
  EXPECT_DOUBLE_EQ(scraped_sum(text, "thaw_migrations_total"), 6.0);
  EXPECT_DOUBLE_EQ(scraped_sum(text, "thaw_migrations_total", "outcome=\"completed\""), 5.0);
  EXPECT_DOUBLE_EQ(scraped_sum(text, "thaw_migrations_total", "model_name=\"a\""), 3.0);
  // A name that prefixes others counts only its own lines.
  EXPECT_DOUBLE_EQ(scraped_sum(text, "thaw_pause_seconds_sum"), 0.75);
  EXPECT_DOUBLE_EQ(scraped_sum(text, "thaw_pause_seconds_count"), 2.0);
  EXPECT_DOUBLE_EQ(scraped_sum(text, "thaw_pause_seconds"), 0.0);
  EXPECT_DOUBLE_EQ(scraped_sum(text, "nothing_here"), 0.0);
}

} // namespace
} // namespace thaw::metrics
