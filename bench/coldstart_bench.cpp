#include "bench/coldstart_bench.hpp"

#include "actors/embedded.hpp"
#include "bench/completion_stream.hpp"
#include "gpu/host/host_device.hpp"
#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/engine/host_model_runner.hpp"
#include "runtime/engine/tokenizer.hpp"
#include "runtime/loader/loader.hpp"
#include "transport/http_client.hpp"

#include <algorithm>
#include <chrono>
#include <fmt/format.h>
#include <optional>
#include <thread>

namespace thaw::bench {
namespace {

using clock = std::chrono::steady_clock;
using json = nlohmann::json;

double seconds_since(clock::time_point t0) {
  return std::chrono::duration<double>(clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n == 0 ? 0.0 : n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/// Room for the model in the DRAM tier, whole chunks per checkpoint chunk, and some to spare.
std::uint64_t pool_bytes_for(const checkpoint& ck, std::uint64_t chunk) {
  const auto bytes = ck.total_bytes();
  return ((bytes + bytes / 4) / chunk + 16) * chunk;
}

/// A loader of the server's settings, outside the server: the reference DRAM-to-device load.
class load_probe {
public:
  static expected<load_probe> create(const checkpoint& ck, const loader_options& lo) {
    load_probe p{ck};
    THAW_ASSIGN(p.ld_, loader::create(lo, *p.dev_));
    return p;
  }

  /// Loads the checkpoint once and returns the seconds from load() until the buffer is whole;
  /// `source` says which tier it came from.
  expected<double> load(std::string& source, std::unique_ptr<device_buffer>* keep = nullptr) {
    const auto t0 = clock::now();
    THAW_ASSIGN(auto handle, ld_->load(ck_));
    THAW_ASSIGN(auto buffer, handle.take_buffer());
    const double s = seconds_since(t0);
    source = to_string(handle.progress().source);
    if (keep != nullptr)
      *keep = std::move(buffer);
    return s;
  }

private:
  explicit load_probe(const checkpoint& ck) : ck_(ck), dev_(std::make_unique<host_device>()) {}
  checkpoint ck_;
  std::unique_ptr<host_device> dev_;
  std::unique_ptr<loader> ld_;
};

class bench_client {
public:
  static expected<bench_client> connect(std::uint16_t port) {
    THAW_ASSIGN(auto c, http::client::connect("127.0.0.1", port));
    return bench_client{std::move(c)};
  }

  expected<json> get_json(const std::string& target) {
    THAW_ASSIGN(auto r, c_->request("GET", target, {}, {}));
    if (r.status != 200)
      return make_error(errc::io_error, "GET " + target + ": HTTP " + std::to_string(r.status));
    auto j = json::parse(r.body, nullptr, false);
    if (j.is_discarded())
      return make_error(errc::parse_error, "GET " + target + ": not JSON");
    return j;
  }

  /// A model's entry in /admin/status.
  expected<json> model_status(const std::string& model) {
    THAW_ASSIGN(auto st, get_json("/admin/status"));
    for (const auto& m : st["models"])
      if (m.value("name", "") == model)
        return m;
    return make_error(errc::not_found, "/admin/status lists no model " + model);
  }

  /// Polls until `model` has `want` running instances (and none starting).
  status wait_instances(const std::string& model, int want) {
    for (int i = 0; i < 60'000; ++i) {
      THAW_ASSIGN(auto m, model_status(model));
      if (m.value("instances", -1) == want && m.value("starting", -1) == 0)
        return {};
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return make_error(errc::internal, model + " never reached " + std::to_string(want) +
                                           " instances");
  }

  /// Streams one completion and returns its TTFT in seconds.
  expected<double> ttft(const std::string& model, const std::string& prompt, int max_tokens) {
    const json body = {{"model", model},       {"prompt", prompt},
                       {"max_tokens", max_tokens}, {"temperature", 0},
                       {"ignore_eos", true},   {"stream", true},
                       {"stream_options", {{"include_usage", true}}}};
    const auto t0 = clock::now();
    completion_stream cs{0.0};
    auto r = c_->stream("POST", "/v1/completions", body.dump(),
                        {{"content-type", "application/json"}}, [&](std::string_view d) {
                          cs.on_bytes(d, seconds_since(t0));
                          return true;
                        });
    request_record rec;
    cs.finish(r ? r->status : 0, r ? std::string{} : r.err().to_string(), rec);
    if (!rec.ok)
      return make_error(errc::io_error, "request to " + model + " failed: " + rec.error);
    if (rec.output_tokens != max_tokens)
      return make_error(errc::internal, "request to " + model + ": " +
                                            std::to_string(rec.output_tokens) + " tokens, not " +
                                            std::to_string(max_tokens));
    return rec.ttft_s;
  }

private:
  explicit bench_client(std::unique_ptr<http::client> c) : c_(std::move(c)) {}
  std::unique_ptr<http::client> c_;
};

/// The starts of the server's node that took the model from its DRAM tier so far: loads (a copy
/// into the instance's buffer) and starts in place (the tier's own bytes).
struct dram_starts {
  std::uint64_t copied = 0;
  std::uint64_t in_place = 0;
};

expected<dram_starts> dram_starts_of(embedded_server& server) {
  THAW_ASSIGN(auto nodes, server.nodes());
  dram_starts n;
  for (const auto& s : nodes) {
    n.copied += s.loads_dram;
    n.in_place += s.starts_in_place;
  }
  return n;
}

/// One embedded server (one CPU node) with the model deployed as "cold", keep_alive 0, so that
/// each instance stops once idle.
struct bench_server {
  std::unique_ptr<embedded_server> server;
  std::optional<bench_client> client;
};

expected<bench_server> start_server(const coldstart_options& o, const loader_options& lo,
                                    const model_spec& cold) {
  serve_options so;
  so.http.address = "127.0.0.1";
  so.http.port = 0;
  so.node.threads = o.threads;
  so.node.loader = lo;
  bench_server b;
  THAW_ASSIGN(b.server, embedded_server::start(so));
  THAW_ASSIGN(auto c, bench_client::connect(b.server->port()));
  b.client.emplace(std::move(c));
  THAW_TRY(b.server->deploy(cold));
  return b;
}

} // namespace

expected<json> run_coldstart_bench(const coldstart_options& o) {
  auto log = [&](const std::string& line) {
    if (o.log)
      o.log(line);
  };
  if (o.repetitions < 1 || o.prompt_words < 1 || o.max_tokens < 1 || o.threads < 1)
    return make_error(errc::invalid_argument,
                      "repetitions, prompt words, max tokens and threads must be >= 1");
  THAW_ASSIGN(auto ck, checkpoint::open(o.checkpoint));
  const auto bytes = ck.total_bytes();
  loader_options lo;
  lo.pool_bytes = pool_bytes_for(ck, lo.chunk_bytes);
  constexpr std::int32_t kv_blocks = 64;

  // The reference loader: once from SSD, then from its DRAM tier before each cold request.
  log(fmt::format("loader: {} ({} bytes)", o.checkpoint, bytes));
  THAW_ASSIGN(auto probe, load_probe::create(ck, lo));
  std::string ssd_source, dram_source;
  std::unique_ptr<device_buffer> weights;
  THAW_ASSIGN(const double ssd_s, probe.load(ssd_source, &weights));
  // What else an instance's start does, each timed alone once the weights are in memory.
  auto t = clock::now();
  THAW_ASSIGN(auto opened, checkpoint::open(ck.dir()));
  const double open_s = seconds_since(t);
  t = clock::now();
  THAW_ASSIGN(auto tok, tokenizer::load(opened.dir() / "tokenizer.json"));
  const double tokenizer_s = seconds_since(t);
  t = clock::now();
  THAW_ASSIGN(auto runner, make_host_model_runner(opened, *weights, {.num_kv_blocks = kv_blocks,
                                                                     .threads = o.threads}));
  const double runner_s = seconds_since(t);
  runner.reset();
  weights.reset();

  // Request i's prompt names its number first: no two requests share their first block of
  // tokens, so no prefix cache can shorten a prefill. Cold and warm request i are the same.
  auto prompt = [&](int i) {
    static const char* words[] = {"Once", "upon", "a",     "time,", "a",     "little", "girl",
                                  "named", "Lily", "found", "a",    "shiny", "stone."};
    std::string p = "Story " + std::to_string(i) + ".";
    for (int w = 0; w < o.prompt_words; ++w)
      p += " " + std::string{words[(i + w) % std::size(words)]};
    return p;
  };

  // Two servers, one per way a cold start takes a model from the DRAM tier: `in_place` runs it
  // on the tier's own bytes (loader::map, the default on a CPU node), `copied` copies them into
  // a buffer of the instance's (loader.map_weights off; what a GPU node does). The warm instance
  // runs in `copied`, on bytes of its own, so the cold instance in place never finds its weights
  // in a cache the warm one keeps hot.
  model_spec cold;
  cold.name = "cold";
  cold.checkpoint = o.checkpoint;
  cold.kv_blocks = kv_blocks;
  cold.keep_alive_ms = 0; // scale to zero as soon as idle
  THAW_ASSIGN(auto in_place, start_server(o, lo, cold));
  auto copy_lo = lo;
  copy_lo.map_weights = false;
  THAW_ASSIGN(auto copied, start_server(o, copy_lo, cold));

  // The model's first start in a server reads it from SSD.
  log("cold starts from SSD");
  THAW_ASSIGN(const double ttft_ssd, in_place.client->ttft("cold", prompt(0), o.max_tokens));
  THAW_ASSIGN(const double ttft_ssd_copied, copied.client->ttft("cold", prompt(0), o.max_tokens));

  // Prefill on a running instance: a second deployment kept warm (min_instances 1). Its first
  // request also warms the serving path.
  model_spec warm = cold;
  warm.name = "warm";
  warm.min_instances = 1;
  warm.keep_alive_ms = 3'600'000;
  THAW_TRY(copied.server->deploy(warm));
  THAW_TRY(copied.client->wait_instances("warm", 1));
  THAW_ASSIGN(const double first_on_new_instance,
              copied.client->ttft("warm", prompt(0), o.max_tokens));

  // Paired rounds, so that a slow spell of a shared machine hits every figure alike: a
  // reference DRAM load, a cold request in place, the same request warm, then cold copied.
  log(fmt::format("{} rounds: DRAM load, cold in place, warm, cold copied", o.repetitions));
  std::vector<double> dram_s, cold_ttft, warm_ttft, copied_ttft, pair_ratio, copied_ratio;
  int not_in_place = 0, not_copied = 0;
  for (int i = 1; i <= o.repetitions; ++i) {
    THAW_TRY(in_place.client->wait_instances("cold", 0));
    THAW_TRY(copied.client->wait_instances("cold", 0));
    THAW_ASSIGN(const double load_s, probe.load(dram_source));
    THAW_ASSIGN(const auto before, dram_starts_of(*in_place.server));
    THAW_ASSIGN(const double c, in_place.client->ttft("cold", prompt(i), o.max_tokens));
    THAW_ASSIGN(const auto after, dram_starts_of(*in_place.server));
    if (after.in_place != before.in_place + 1)
      ++not_in_place;
    THAW_ASSIGN(const double w, copied.client->ttft("warm", prompt(i), o.max_tokens));
    THAW_ASSIGN(const auto before_copy, dram_starts_of(*copied.server));
    THAW_ASSIGN(const double cc, copied.client->ttft("cold", prompt(i), o.max_tokens));
    THAW_ASSIGN(const auto after_copy, dram_starts_of(*copied.server));
    if (after_copy.copied != before_copy.copied + 1)
      ++not_copied;
    log(fmt::format("round {}: load {:.1f} ms; TTFT cold in place {:.1f} ms, warm {:.1f} ms, "
                    "cold copied {:.1f} ms",
                    i, load_s * 1e3, c * 1e3, w * 1e3, cc * 1e3));
    dram_s.push_back(load_s);
    cold_ttft.push_back(c);
    warm_ttft.push_back(w);
    copied_ttft.push_back(cc);
    pair_ratio.push_back((c - w) / load_s);
    copied_ratio.push_back((cc - w) / load_s);
  }
  double instance_dram_bw = 0;
  {
    // Scoped: the statuses hold actor handles, which would keep the server from stopping.
    THAW_ASSIGN(auto nodes, copied.server->nodes());
    if (!nodes.empty())
      instance_dram_bw = nodes[0].dram_bandwidth;
  }
  in_place.server->stop();
  copied.server->stop();

  const double load_s = median(dram_s);
  const double prefill_s = median(warm_ttft);
  const double ttft_dram = median(cold_ttft);
  const double target_s = 1.2 * load_s + prefill_s;
  json j;
  j["checkpoint"] = o.checkpoint;
  j["model_bytes"] = bytes;
  j["dram_load_seconds"] = dram_s;
  j["dram_bandwidth"] = static_cast<double>(bytes) / load_s;
  j["dram_load_source"] = dram_source;
  j["ssd_load_seconds"] = ssd_s;
  j["ssd_bandwidth"] = static_cast<double>(bytes) / ssd_s;
  j["ssd_load_source"] = ssd_source;
  j["instance_dram_bandwidth"] = instance_dram_bw; // the copied server's last DRAM transfer
  j["instance_load_seconds"] = instance_dram_bw > 0 ? static_cast<double>(bytes) / instance_dram_bw
                                                    : 0.0;
  j["checkpoint_open_seconds"] = open_s;
  j["tokenizer_load_seconds"] = tokenizer_s;
  j["runner_create_seconds"] = runner_s;
  j["prompt_words"] = o.prompt_words;
  j["max_tokens"] = o.max_tokens;
  j["threads"] = o.threads;
  j["prefill_seconds"] = prefill_s;
  j["warm_ttft_seconds"] = warm_ttft;
  // The first request an instance serves, once it is running: the prefill of a fresh instance.
  j["first_request_ttft_seconds"] = first_on_new_instance;
  j["cold_ttft_dram_seconds"] = cold_ttft;
  j["cold_ttft_dram_median"] = ttft_dram;
  j["cold_starts_not_in_place"] = not_in_place;
  j["cold_ttft_copied_seconds"] = copied_ttft;
  j["cold_ttft_copied_median"] = median(copied_ttft);
  j["cold_starts_not_copied_from_dram"] = not_copied;
  j["copied_paired_load_ratio_median"] = median(copied_ratio);
  j["cold_ttft_ssd_seconds"] = ttft_ssd;
  j["cold_ttft_ssd_copied_seconds"] = ttft_ssd_copied;
  j["ssd_note"] = "read with O_DIRECT (page cache not dropped: needs root)";
  j["ratio"] = ttft_dram / (load_s + prefill_s);
  j["load_ratio"] = (ttft_dram - prefill_s) / load_s; // the target's own form, from the medians
  j["paired_load_ratios"] = pair_ratio;                // (cold - warm) / load, round by round
  j["paired_load_ratio_median"] = median(pair_ratio);
  j["target_ratio"] = 1.2;
  j["target_seconds"] = target_s;
  j["meets_target"] = ttft_dram <= target_s;
  return j;
}

std::string format_coldstart_bench(const json& r) {
  auto ms = [](double s) { return fmt::format("{:.1f} ms", s * 1e3); };
  auto gbps = [](double b) { return fmt::format("{:.2f} GB/s", b / 1e9); };
  std::string out;
  out += fmt::format("model            {} ({:.1f} MB)\n", r["checkpoint"].get<std::string>(),
                     r["model_bytes"].get<double>() / 1e6);
  out += fmt::format("DRAM tier load   {} median -> {} (reference loader, {} loads)\n",
                     ms(r["dram_bandwidth"].get<double>() > 0
                            ? r["model_bytes"].get<double>() / r["dram_bandwidth"].get<double>()
                            : 0),
                     gbps(r["dram_bandwidth"].get<double>()), r["dram_load_seconds"].size());
  out += fmt::format("SSD load         {} -> {} (O_DIRECT)\n",
                     ms(r["ssd_load_seconds"].get<double>()), gbps(r["ssd_bandwidth"].get<double>()));
  out += fmt::format("prefill (warm)   {} median TTFT, {} words, {} threads\n",
                     ms(r["prefill_seconds"].get<double>()), r["prompt_words"].get<int>(),
                     r["threads"].get<int>());
  out += fmt::format("first request    {} TTFT on a new, running instance\n",
                     ms(r["first_request_ttft_seconds"].get<double>()));
  out += fmt::format("cold TTFT, DRAM  {} median of {}, in place{}\n",
                     ms(r["cold_ttft_dram_median"].get<double>()),
                     r["cold_ttft_dram_seconds"].size(),
                     r["cold_starts_not_in_place"].get<int>() > 0 ? " (some NOT in place)" : "");
  out += fmt::format("  copied         {} median, (TTFT - prefill) / load paired {:.2f}{}\n",
                     ms(r["cold_ttft_copied_median"].get<double>()),
                     r["copied_paired_load_ratio_median"].get<double>(),
                     r["cold_starts_not_copied_from_dram"].get<int>() > 0
                         ? " (some NOT from DRAM)"
                         : "");
  out += fmt::format("cold TTFT, SSD   {} in place, {} copied (first start; {})\n",
                     ms(r["cold_ttft_ssd_seconds"].get<double>()),
                     ms(r["cold_ttft_ssd_copied_seconds"].get<double>()),
                     r["ssd_note"].get<std::string>());
  out += fmt::format("instance start   {} last copy from DRAM (node); alone: open {}, tokenizer {}, "
                     "runner {}\n",
                     ms(r["instance_load_seconds"].get<double>()),
                     ms(r["checkpoint_open_seconds"].get<double>()),
                     ms(r["tokenizer_load_seconds"].get<double>()),
                     ms(r["runner_create_seconds"].get<double>()));
  out += fmt::format("target           TTFT <= 1.2 x load + prefill = {}: {}\n",
                     ms(r["target_seconds"].get<double>()),
                     r["meets_target"].get<bool>() ? "met" : "NOT met");
  out += fmt::format("ratio            TTFT / (load + prefill) = {:.2f}; (TTFT - prefill) / load "
                     "= {:.2f}, paired round by round {:.2f} (target {:.1f})\n",
                     r["ratio"].get<double>(), r["load_ratio"].get<double>(),
                     r["paired_load_ratio_median"].get<double>(), r["target_ratio"].get<double>());
  return out;
}

} // namespace thaw::bench
