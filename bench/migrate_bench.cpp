#include "bench/migrate_bench.hpp"

#include "actors/cluster.hpp"
#include "actors/embedded.hpp"
#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/common/metrics.hpp"
#include "transport/http_client.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <thread>

namespace thaw::bench {
namespace {

using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

double median(std::vector<double> v) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

/// One streamed greedy completion: its text and the arrival time of every chunk.
struct stream_result {
  std::string text;
  std::vector<double> arrivals; ///< seconds since the request was sent
  std::string error;
};

expected<stream_result> run_stream(std::uint16_t port, int tokens,
                                   const std::function<void(int)>& on_chunk) {
  THAW_ASSIGN(auto c, http::client::connect("127.0.0.1", port));
  const json body = {{"model", "bench"},       {"prompt", "Once upon a time"},
                     {"max_tokens", tokens},   {"temperature", 0},
                     {"ignore_eos", true},     {"stream", true}};
  stream_result out;
  std::string pending;
  const auto t0 = clock_type::now();
  THAW_ASSIGN(auto resp, c->stream("POST", "/v1/completions", body.dump(),
                                   {{"content-type", "application/json"}},
                                   [&](std::string_view d) {
                                     const double now =
                                         std::chrono::duration<double>(clock_type::now() - t0)
                                             .count();
                                     pending.append(d);
                                     for (auto end = pending.find("\n\n");
                                          end != std::string::npos; end = pending.find("\n\n")) {
                                       auto event = pending.substr(0, end);
                                       pending.erase(0, end + 2);
                                       if (event.rfind("data: ", 0) != 0 ||
                                           event == "data: [DONE]")
                                         continue;
                                       auto j = json::parse(event.substr(6), nullptr, false);
                                       if (j.is_discarded())
                                         continue;
                                       if (j.contains("error")) {
                                         out.error = j["error"].value("message", "error");
                                         continue;
                                       }
                                       for (auto& ch : j.value("choices", json::array())) {
                                         out.text += ch.value("text", "");
                                         out.arrivals.push_back(now);
                                         if (on_chunk)
                                           on_chunk(static_cast<int>(out.arrivals.size()));
                                       }
                                     }
                                     return true;
                                   }));
  if (resp.status != 200)
    return make_error(errc::io_error, fmt::format("bench: the stream answered {}", resp.status));
  return out;
}

expected<json> get_json(http::client& c, const std::string& target) {
  THAW_ASSIGN(auto r, c.request("GET", target, {}, {}));
  auto j = json::parse(r.body, nullptr, false);
  if (r.status != 200 || j.is_discarded())
    return make_error(errc::io_error, "bench: GET " + target + " answered " +
                                          std::to_string(r.status));
  return j;
}

/// Sum of a metric's series in the Prometheus text.
expected<double> metric(http::client& c, const std::string& name) {
  THAW_ASSIGN(auto r, c.request("GET", "/metrics", {}, {}));
  return metrics::scraped_sum(r.body, name);
}

/// The node that runs the model's instance ("" when none does yet).
expected<std::string> node_of(http::client& c) {
  THAW_ASSIGN(auto s, get_json(c, "/admin/status"));
  for (auto& n : s.value("nodes", json::array()))
    if (!n["instances"].empty())
      return n["name"].get<std::string>();
  return std::string{};
}

std::vector<double> gaps(const std::vector<double>& arrivals) {
  std::vector<double> g;
  for (std::size_t i = 1; i < arrivals.size(); ++i)
    g.push_back(arrivals[i] - arrivals[i - 1]);
  return g;
}

} // namespace

expected<json> run_migrate_bench(const migrate_bench_options& o) {
  if (o.warmup < 1 || o.warmup >= o.tokens)
    return make_error(errc::invalid_argument, "warmup: must be between 1 and tokens - 1");
  THAW_ASSIGN(auto ck, checkpoint::open(o.checkpoint));
  std::uint64_t chunk = 4096;
  for (const auto& c : ck.chunks())
    chunk = std::max<std::uint64_t>(chunk, (c.bytes + 4095) / 4096 * 4096);

  serve_options so;
  so.http.port = 0;
  model_spec spec;
  spec.name = "bench";
  spec.checkpoint = o.checkpoint.string();
  spec.kv_blocks = 64;
  so.models.push_back(spec);
  cluster_options co;
  co.port = 0;
  co.secret = "thaw-bench-migrate";
  co.heartbeat_ms = 500;
  co.timeout_ms = 5000;
  THAW_ASSIGN(auto head, head_server::start(so, co));
  std::vector<std::unique_ptr<node_server>> nodes;
  for (const char* name : {"node-a", "node-b"}) {
    node_options no;
    no.name = name;
    no.threads = o.threads;
    no.loader.chunk_bytes = chunk;
    no.loader.pool_bytes = chunk * (ck.chunks().size() + 1) * 2;
    THAW_ASSIGN(auto n, node_server::start(no, co, "127.0.0.1", head->control_port()));
    nodes.push_back(std::move(n));
  }
  THAW_ASSIGN(auto client, http::client::connect("127.0.0.1", head->http_port()));
  for (int i = 0;; ++i) {
    THAW_ASSIGN(auto s, get_json(*client, "/admin/status"));
    if (s["nodes"].size() == 2)
      break;
    if (i == 200)
      return make_error(errc::io_error, "bench: the nodes did not join within 10 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  // The reference (the first request also starts the instance: run it twice).
  if (auto warm = run_stream(head->http_port(), 4, nullptr); !warm)
    return warm.err();
  THAW_ASSIGN(auto reference, run_stream(head->http_port(), o.tokens, nullptr));
  const double ref_itl = median(gaps(reference.arrivals));

  json runs = json::array();
  std::vector<double> pauses, steps;
  for (int r = 0; r < o.repeats; ++r) {
    THAW_ASSIGN(auto from, node_of(*client));
    const std::string to = from == "node-a" ? "node-b" : "node-a";
    THAW_ASSIGN(const double pause_sum0, metric(*client, "thaw_migration_pause_seconds_sum"));
    THAW_ASSIGN(const double pause_n0, metric(*client, "thaw_migration_pause_seconds_count"));
    std::thread mover;
    std::atomic<bool> asked{false};
    json report;
    auto stream = run_stream(head->http_port(), o.tokens, [&](int n) {
      if (n == o.warmup && !asked.exchange(true))
        mover = std::thread([&, from, to] {
          auto c = http::client::connect("127.0.0.1", head->http_port());
          if (!c)
            return;
          auto resp = (*c)->request(
              "POST", "/admin/models/bench/migrate",
              json{{"from", from}, {"to", to}, {"max_gap", o.max_gap}}.dump(),
              {{"content-type", "application/json"}});
          if (resp)
            report = json::parse(resp->body, nullptr, false);
        });
    });
    if (mover.joinable())
      mover.join();
    if (!stream)
      return stream.err();
    THAW_ASSIGN(const double pause_sum, metric(*client, "thaw_migration_pause_seconds_sum"));
    THAW_ASSIGN(const double pause_n, metric(*client, "thaw_migration_pause_seconds_count"));
    const auto g = gaps(stream->arrivals);
    const double itl = median(g);
    const double max_gap = g.empty() ? 0 : *std::max_element(g.begin(), g.end());
    json run = {{"from", from},
                {"to", to},
                {"report", report},
                {"text_matches_reference", stream->text == reference.text && stream->error.empty()},
                {"median_itl_ms", itl * 1e3},
                {"client_max_gap_ms", max_gap * 1e3}};
    if (pause_n > pause_n0) {
      const double pause = (pause_sum - pause_sum0) / (pause_n - pause_n0);
      run["pause_ms"] = pause * 1e3;
      run["pause_decode_steps"] = itl > 0 ? pause / itl : 0;
      pauses.push_back(pause);
      steps.push_back(itl > 0 ? pause / itl : 0);
    }
    runs.push_back(run);
    // The source stops after the handoff; let the status settle before the next round.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  for (auto& n : nodes)
    n->stop();
  head->stop();
  return json{{"checkpoint", o.checkpoint.string()},
              {"tokens", o.tokens},
              {"threads", o.threads},
              {"max_gap", o.max_gap},
              {"reference_median_itl_ms", ref_itl * 1e3},
              {"runs", runs},
              {"migrations_with_pause", pauses.size()},
              {"median_pause_ms", median(pauses) * 1e3},
              {"median_pause_decode_steps", median(steps)}};
}

std::string format_migrate_bench(const json& r) {
  std::string out = fmt::format(
      "live migration, {} tokens a stream, {} thread(s), max_gap {}; reference median "
      "inter-token gap {:.2f} ms\n",
      r["tokens"].get<int>(), r["threads"].get<int>(), r["max_gap"].get<int>(),
      r["reference_median_itl_ms"].get<double>());
  out += "run  from -> to        moved rounds recomputed  pause ms  steps  client max gap ms  "
         "same text\n";
  int i = 0;
  for (const auto& run : r["runs"]) {
    const auto& rep = run["report"];
    out += fmt::format("{:>3}  {} -> {}  {:>5} {:>6} {:>10}  {:>8.2f}  {:>5.2f}  {:>16.2f}  {}\n",
                       ++i, run["from"].get<std::string>(), run["to"].get<std::string>(),
                       rep.is_object() ? rep.value("moved", -1) : -1,
                       rep.is_object() ? rep.value("rounds", -1) : -1,
                       rep.is_object() ? rep.value("tokens_recomputed", -1) : -1,
                       run.value("pause_ms", 0.0), run.value("pause_decode_steps", 0.0),
                       run["client_max_gap_ms"].get<double>(),
                       run["text_matches_reference"].get<bool>() ? "yes" : "NO");
  }
  out += fmt::format("median pause {:.2f} ms = {:.2f} decode steps (target: at most 2)\n",
                     r["median_pause_ms"].get<double>(),
                     r["median_pause_decode_steps"].get<double>());
  return out;
}

} // namespace thaw::bench
