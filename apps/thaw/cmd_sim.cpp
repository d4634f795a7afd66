// thaw sim: the placement policies of runtime/sched on a simulated cluster driven by a virtual
// clock (runtime/sched/sim.hpp), replaying an Azure trace with models drawn from a popularity
// file. Prints latency percentiles, SLO attainment, cold starts per tier, migrations and slot
// utilisation per policy, side by side; --plot draws the latency CDFs with gnuplot.
//
// Defaults and where they come from (each can be set with a flag or a [sim] key of --config;
// per-model values with [[sim.model]] tables, cycled over the models by popularity rank):
//   model bytes 16 GB        Llama-3.1-8B in bf16, the model of ServerlessLLM's headline
//                            figure (BENCHMARKS.md "Loading")
//   DRAM tier 8 GB/s         `thaw bench load /work/models/stories110m-ck --copies 3` on this
//                            machine (2026-11-23): DRAM-tier loads 8.3 GB/s (memcpy 9.8)
//   SSD tier 1.7 GB/s        the same run: cold loads 1.73 GB/s (raw O_DIRECT 2.34 GB/s)
//   network 1.25 GB/s        a 10 GbE peer; UCX on loopback does 11 GB/s (shared memory), which
//                            no network between nodes gives
//   prefill 8000 tok/s,      an 8B model on one modern GPU; thaw's CPU engine on stories110M
//   decode 40 tok/s/seq      does 748 / 83 (BENCHMARKS.md): use --prefill-tps/--decode-tps for a
//                            CPU cluster
//   concurrency 8, max 4 instances, keep-alive 60 s, min 0: the model_spec defaults scaled to a
//                            GPU slot (target_concurrency 8)
//   DRAM 256 GB, SSD 2 TB per node, one SSD copy of each checkpoint; bandwidth jitter +-20%.

#include "apps/thaw/commands.hpp"

#include "runtime/common/log.hpp"
#include "runtime/sched/sim.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <unistd.h>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace thaw::app {
namespace {

struct sim_args {
  common_options common;
  std::string trace, popularity, policy = "all", plot;
  std::uint32_t nodes = 4, models = 64;
  std::int32_t slots = 8;
  double duration = 0, time_scale = 1, slo_ttft = 10;
  std::uint64_t seed = 1;
  bool json = false;
  // cluster and models
  double model_gb = 16, dram_gb = 256, ssd_gb = 2000, dram_bw = 8, ssd_bw = 1.7, net_bw = 1.25;
  double jitter = 0.2, setup_s = 0.05, prefill_tps = 8000, decode_tps = 40, keep_alive = 60;
  std::int32_t concurrency = 8, min_instances = 0, max_instances = 4, ssd_replicas = 1;
  std::int32_t handoff_steps = 2;
  /// [[sim.model]] tables: model i (by popularity rank) takes table i mod their number, each
  /// key overriding the flags: bytes_gb, prefill_tps, decode_tps, concurrency, min_instances,
  /// max_instances, keep_alive.
  std::vector<config> model_tables;
};

// Flags beat the [sim] table of --config, which beats the defaults above.
status apply_config(CLI::App& cmd, const config& cfg, sim_args& a) {
  auto num = [&](const char* flag, const char* key, double& v) -> status {
    if (cmd.count(flag) == 0 && cfg.contains(key)) {
      THAW_ASSIGN(v, cfg.get_double(key, v));
    }
    return {};
  };
  auto integer = [&](const char* flag, const char* key, auto& v) -> status {
    if (cmd.count(flag) == 0 && cfg.contains(key)) {
      THAW_ASSIGN(auto x, cfg.get_int(key, static_cast<std::int64_t>(v)));
      v = static_cast<std::remove_reference_t<decltype(v)>>(x);
    }
    return {};
  };
  THAW_TRY(num("--model-gb", "sim.model_gb", a.model_gb));
  THAW_TRY(num("--dram-gb", "sim.dram_gb", a.dram_gb));
  THAW_TRY(num("--ssd-gb", "sim.ssd_gb", a.ssd_gb));
  THAW_TRY(num("--dram-bw", "sim.dram_bw", a.dram_bw));
  THAW_TRY(num("--ssd-bw", "sim.ssd_bw", a.ssd_bw));
  THAW_TRY(num("--net-bw", "sim.net_bw", a.net_bw));
  THAW_TRY(num("--jitter", "sim.jitter", a.jitter));
  THAW_TRY(num("--setup", "sim.setup_seconds", a.setup_s));
  THAW_TRY(num("--prefill-tps", "sim.prefill_tps", a.prefill_tps));
  THAW_TRY(num("--decode-tps", "sim.decode_tps", a.decode_tps));
  THAW_TRY(num("--keep-alive", "sim.keep_alive", a.keep_alive));
  THAW_TRY(num("--slo-ttft", "sim.slo_ttft", a.slo_ttft));
  THAW_TRY(num("--time-scale", "sim.time_scale", a.time_scale));
  THAW_TRY(num("--duration", "sim.duration", a.duration));
  THAW_TRY(integer("--concurrency", "sim.concurrency", a.concurrency));
  THAW_TRY(integer("--min-instances", "sim.min_instances", a.min_instances));
  THAW_TRY(integer("--max-instances", "sim.max_instances", a.max_instances));
  THAW_TRY(integer("--ssd-replicas", "sim.ssd_replicas", a.ssd_replicas));
  THAW_TRY(integer("--handoff-steps", "sim.handoff_steps", a.handoff_steps));
  THAW_TRY(integer("--nodes", "sim.nodes", a.nodes));
  THAW_TRY(integer("--slots-per-node", "sim.slots_per_node", a.slots));
  THAW_TRY(integer("--models", "sim.models", a.models));
  THAW_ASSIGN(a.model_tables, cfg.get_tables("sim.model"));
  return {};
}

expected<sched::sim_model> model_from_table(const config& t, sched::sim_model m) {
  THAW_ASSIGN(auto gb, t.get_double("bytes_gb", m.bytes / 1e9));
  m.bytes = gb * 1e9;
  THAW_ASSIGN(m.prefill_tps, t.get_double("prefill_tps", m.prefill_tps));
  THAW_ASSIGN(m.decode_tps, t.get_double("decode_tps", m.decode_tps));
  THAW_ASSIGN(auto conc, t.get_int("concurrency", m.concurrency));
  THAW_ASSIGN(auto lo, t.get_int("min_instances", m.min_instances));
  THAW_ASSIGN(auto hi, t.get_int("max_instances", m.max_instances));
  THAW_ASSIGN(m.keep_alive, t.get_double("keep_alive", m.keep_alive));
  m.concurrency = static_cast<std::int32_t>(conc);
  m.min_instances = static_cast<std::int32_t>(lo);
  m.max_instances = static_cast<std::int32_t>(hi);
  if (!(m.bytes > 0) || !(m.prefill_tps > 0) || !(m.decode_tps > 0) || m.concurrency < 1 ||
      m.max_instances < 1 || m.min_instances < 0 || m.min_instances > m.max_instances ||
      m.keep_alive < 0)
    return make_error(errc::invalid_argument,
                      "[[sim.model]]: bytes_gb, prefill_tps and decode_tps must be above 0, "
                      "concurrency and max_instances at least 1, 0 <= min_instances <= "
                      "max_instances, keep_alive >= 0");
  return m;
}

status validate(const sim_args& a) {
  auto bad = [](const std::string& what) { return make_error(errc::invalid_argument, what); };
  if (a.nodes < 1 || a.slots < 1 || a.models < 1)
    return bad("--nodes, --slots-per-node and --models must be at least 1");
  if (!(a.time_scale > 0))
    return bad("--time-scale must be above 0");
  if (!(a.model_gb > 0) || !(a.dram_bw > 0) || !(a.ssd_bw > 0) || !(a.net_bw > 0))
    return bad("--model-gb and the bandwidths must be above 0");
  if (!(a.prefill_tps > 0) || !(a.decode_tps > 0))
    return bad("--prefill-tps and --decode-tps must be above 0");
  if (a.jitter < 0 || a.jitter >= 1)
    return bad("--jitter must be in [0, 1)");
  if (a.concurrency < 1 || a.max_instances < 1 || a.min_instances < 0 ||
      a.min_instances > a.max_instances)
    return bad("--concurrency and --max-instances must be at least 1, 0 <= --min-instances <= max");
  return {};
}

expected<sched::sim_config> make_config(const sim_args& a, sched::policy_kind p) {
  sched::sim_config c;
  c.nodes = a.nodes;
  c.slots_per_node = a.slots;
  c.dram_bytes = a.dram_gb * 1e9;
  c.ssd_bytes = a.ssd_gb * 1e9;
  c.ssd_replicas = a.ssd_replicas;
  c.bandwidth.dram = a.dram_bw * 1e9;
  c.bandwidth.ssd = a.ssd_bw * 1e9;
  c.bandwidth.remote = a.net_bw * 1e9;
  c.bandwidth_jitter = a.jitter;
  c.setup_seconds = a.setup_s;
  c.handoff_steps = a.handoff_steps;
  // The scheduler starts from the same configured figures; each node's jitter it must learn.
  c.estimator_bandwidth = c.bandwidth;
  c.migration_prior_a = 1.0 / a.prefill_tps;
  c.migration_prior_b = a.handoff_steps / a.decode_tps;
  sched::sim_model m;
  m.bytes = a.model_gb * 1e9;
  m.prefill_tps = a.prefill_tps;
  m.decode_tps = a.decode_tps;
  m.concurrency = a.concurrency;
  m.min_instances = a.min_instances;
  m.max_instances = a.max_instances;
  m.keep_alive = a.keep_alive;
  c.models.assign(a.models, m);
  if (!a.model_tables.empty()) {
    std::vector<sched::sim_model> classes;
    for (const auto& t : a.model_tables) {
      THAW_ASSIGN(auto x, model_from_table(t, m));
      classes.push_back(x);
    }
    for (std::size_t i = 0; i < c.models.size(); ++i)
      c.models[i] = classes[i % classes.size()];
  }
  c.policy = p;
  c.seed = a.seed;
  return c;
}

struct run {
  sched::sim_result result;
  sched::sim_summary summary;
  double wall_seconds = 0;
};

nlohmann::json to_json(const run& r) {
  const auto& s = r.summary;
  const auto& x = r.result;
  return {
      {"policy", sched::to_string(x.policy)},
      {"requests", x.requests},
      {"completed", x.completed},
      {"ttft_s", {{"p50", s.ttft_p50}, {"p90", s.ttft_p90}, {"p99", s.ttft_p99}}},
      {"e2e_s", {{"p50", s.e2e_p50}, {"p90", s.e2e_p90}, {"p99", s.e2e_p99}}},
      {"slo_attainment", s.slo_attainment},
      {"cold_starts",
       {{"dram", x.cold_starts[1]}, {"ssd", x.cold_starts[2]}, {"remote", x.cold_starts[3]}}},
      {"migrations", x.migrations},
      {"migrated_tokens", x.migrated_tokens},
      {"evictions", x.evictions},
      {"scale_to_zero", x.scale_to_zero},
      {"slot_utilisation", s.slot_utilisation},
      {"slot_occupancy", s.slot_occupancy},
      {"simulated_s", x.simulated_seconds},
      {"events", x.events},
      {"learned_migration", {{"a", x.learned_migration_a}, {"b", x.learned_migration_b}}},
      {"wall_s", r.wall_seconds},
  };
}

void print_table(const std::vector<run>& runs, double slo) {
  auto row = [&](const char* name, auto&& cell) {
    std::printf("%-22s", name);
    for (const auto& r : runs)
      std::printf(" %17s", cell(r).c_str());
    std::printf("\n");
  };
  auto f = [](double v, const char* fmt = "%.2f") {
    char b[64];
    std::snprintf(b, sizeof b, fmt, v);
    return std::string{b};
  };
  auto u = [](std::uint64_t v) { return std::to_string(v); };
  row("policy", [](const run& r) { return std::string{sched::to_string(r.result.policy)}; });
  row("requests", [&](const run& r) { return u(r.result.completed) + "/" + u(r.result.requests); });
  row("TTFT p50 (s)", [&](const run& r) { return f(r.summary.ttft_p50); });
  row("TTFT p90 (s)", [&](const run& r) { return f(r.summary.ttft_p90); });
  row("TTFT p99 (s)", [&](const run& r) { return f(r.summary.ttft_p99); });
  row("E2E p50 (s)", [&](const run& r) { return f(r.summary.e2e_p50); });
  row("E2E p90 (s)", [&](const run& r) { return f(r.summary.e2e_p90); });
  row("E2E p99 (s)", [&](const run& r) { return f(r.summary.e2e_p99); });
  const std::string slo_name = "SLO TTFT<=" + f(slo, "%g") + "s";
  row(slo_name.c_str(), [&](const run& r) { return f(100 * r.summary.slo_attainment, "%.1f%%"); });
  row("cold starts dram", [&](const run& r) { return u(r.result.cold_starts[1]); });
  row("cold starts ssd", [&](const run& r) { return u(r.result.cold_starts[2]); });
  row("cold starts remote", [&](const run& r) { return u(r.result.cold_starts[3]); });
  row("migrations", [&](const run& r) { return u(r.result.migrations); });
  row("idle evictions", [&](const run& r) { return u(r.result.evictions); });
  row("scale to zero", [&](const run& r) { return u(r.result.scale_to_zero); });
  row("slot utilisation", [&](const run& r) { return f(100 * r.summary.slot_utilisation, "%.1f%%"); });
  row("slot occupancy", [&](const run& r) { return f(100 * r.summary.slot_occupancy, "%.1f%%"); });
  row("wall (s)", [&](const run& r) { return f(r.wall_seconds, "%.3f"); });
}

// CDFs of TTFT and E2E latency of every run, one chart each, side by side.
status plot(const std::vector<run>& runs, const std::string& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto dir = fs::temp_directory_path(ec) / ("thaw-sim-plot-" + std::to_string(::getpid()));
  fs::create_directories(dir, ec);
  if (ec)
    return make_error(errc::io_error, dir.string() + ": " + ec.message());
  auto write_cdf = [&](const std::vector<double>& v, const fs::path& p) {
    auto s = v;
    std::sort(s.begin(), s.end());
    std::ofstream f{p};
    // At most ~2000 points: enough for a smooth curve, small enough for gnuplot.
    const std::size_t step = std::max<std::size_t>(1, s.size() / 2000);
    for (std::size_t i = 0; i < s.size(); i += step)
      f << std::max(s[i], 1e-3) << ' ' << static_cast<double>(i + 1) / s.size() << '\n';
    if (!s.empty())
      f << std::max(s.back(), 1e-3) << " 1\n";
  };
  std::string script = "set terminal pngcairo size 1400,560 font ',11'\nset output '" + out +
                       "'\nset multiplot layout 1,2\nset logscale x\nset grid\n"
                       "set key bottom right\nset ylabel 'fraction of requests'\n";
  for (int which = 0; which < 2; ++which) {
    script += which == 0 ? "set title 'TTFT'\nset xlabel 'seconds'\nplot "
                         : "set title 'End-to-end latency'\nset xlabel 'seconds'\nplot ";
    for (std::size_t i = 0; i < runs.size(); ++i) {
      auto p = dir / (std::to_string(which) + "-" + std::to_string(i) + ".dat");
      write_cdf(which == 0 ? runs[i].result.ttft : runs[i].result.e2e, p);
      script += (i ? ", '" : "'") + p.string() + "' using 1:2 with lines lw 2 title '" +
                sched::to_string(runs[i].result.policy) + "'";
    }
    script += "\n";
  }
  script += "unset multiplot\n";
  const auto script_path = dir / "plot.gp";
  std::ofstream{script_path} << script;
  const std::string cmd = "gnuplot '" + script_path.string() + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  fs::remove_all(dir, ec);
  if (rc != 0)
    return make_error(errc::io_error,
                      "--plot: gnuplot failed (is gnuplot installed? scripts/setup.sh installs "
                      "gnuplot-nox); exit status " + std::to_string(rc));
  return {};
}

int run_sim(CLI::App& cmd, sim_args a) {
  if (auto s = init_logging(a.common.log_level); !s)
    return report_error("sim", s.err());
  auto cfg = a.common.load_config();
  if (!cfg)
    return report_error("sim", cfg.err());
  if (auto s = apply_config(cmd, *cfg, a); !s)
    return report_error("sim", s.err());
  if (auto s = validate(a); !s)
    return report_error("sim", s.err());
  std::vector<sched::policy_kind> policies;
  if (a.policy == "all") {
    policies.assign(std::begin(sched::all_policies), std::end(sched::all_policies));
  } else {
    auto p = sched::parse_policy(a.policy);
    if (!p)
      return report_error("sim", p.err());
    policies.push_back(*p);
  }
  auto trace = sched::load_azure_trace(a.trace);
  if (!trace)
    return report_error("sim", trace.err());
  std::vector<double> popularity;
  if (!a.popularity.empty()) {
    auto p = sched::load_popularity(a.popularity);
    if (!p)
      return report_error("sim", p.err());
    popularity = std::move(*p);
  }
  const auto weights = sched::model_weights(popularity, a.models);
  const auto requests =
      sched::make_requests(*trace, weights, a.time_scale, a.duration, a.seed);
  if (requests.empty())
    return report_error("sim", make_error(errc::invalid_argument,
                                          "no requests in the chosen window (--duration)"));
  std::vector<run> runs;
  for (auto p : policies) {
    const auto t0 = std::chrono::steady_clock::now();
    auto c = make_config(a, p);
    if (!c)
      return report_error("sim", c.err());
    auto r = sched::simulate(*c, requests);
    if (!r)
      return report_error("sim", r.err());
    run x;
    x.wall_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    x.summary = sched::summarize(*r, a.slo_ttft);
    x.result = std::move(*r);
    runs.push_back(std::move(x));
  }
  if (a.json) {
    nlohmann::json j;
    j["requests"] = requests.size();
    j["trace_seconds"] = requests.back().arrival;
    j["nodes"] = a.nodes;
    j["slots_per_node"] = a.slots;
    j["models"] = a.models;
    j["time_scale"] = a.time_scale;
    j["slo_ttft_s"] = a.slo_ttft;
    j["zipf_exponent"] = sched::fitted_zipf_exponent(popularity);
    for (const auto& r : runs)
      j["policies"].push_back(to_json(r));
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("thaw sim: %zu requests over %.0f s, %u nodes x %d slots, %u models, "
                "time scale %g\n",
                requests.size(), requests.back().arrival, a.nodes, a.slots, a.models,
                a.time_scale);
    print_table(runs, a.slo_ttft);
  }
  if (!a.plot.empty()) {
    if (auto s = plot(runs, a.plot); !s)
      return report_error("sim", s.err());
  }
  return 0;
}

} // namespace

void add_sim_command(CLI::App& app) {
  auto args = std::make_shared<sim_args>();
  auto* cmd = app.add_subcommand("sim", "Simulate the placement policies on a trace-driven virtual cluster");
  cmd->add_option("--trace", args->trace, "Azure LLM inference trace CSV (arrivals and lengths)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--popularity", args->popularity, "model_id,requests CSV (Alibaba GenAI)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--nodes", args->nodes, "Nodes")->capture_default_str();
  cmd->add_option("--slots-per-node", args->slots, "Slots (GPUs) per node")->capture_default_str();
  cmd->add_option("--models", args->models, "Models (popularity stretched by a Zipf tail)")->capture_default_str();
  cmd->add_option("--policy", args->policy, "random, least-loaded, locality, locality-migrate or all")->capture_default_str();
  cmd->add_option("--duration", args->duration, "Seconds to simulate (the trace repeats); 0: the trace once")->capture_default_str();
  cmd->add_option("--time-scale", args->time_scale, "Arrival rate multiplier (2: the trace twice as fast)")->capture_default_str();
  cmd->add_option("--slo-ttft", args->slo_ttft, "TTFT SLO in seconds")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of model draws, jitter and the random policy")->capture_default_str();
  cmd->add_flag("--json", args->json, "Print JSON");
  cmd->add_option("--plot", args->plot, "Write latency CDFs of the policies to this PNG (gnuplot)");
  cmd->add_option("--model-gb", args->model_gb, "Checkpoint size, GB")->capture_default_str();
  cmd->add_option("--dram-gb", args->dram_gb, "DRAM tier per node, GB")->capture_default_str();
  cmd->add_option("--ssd-gb", args->ssd_gb, "SSD tier per node, GB")->capture_default_str();
  cmd->add_option("--ssd-replicas", args->ssd_replicas, "Nodes with each checkpoint on SSD at start")->capture_default_str();
  cmd->add_option("--dram-bw", args->dram_bw, "DRAM tier to slot, GB/s")->capture_default_str();
  cmd->add_option("--ssd-bw", args->ssd_bw, "SSD to slot, GB/s")->capture_default_str();
  cmd->add_option("--net-bw", args->net_bw, "Peer or storage over the network, GB/s")->capture_default_str();
  cmd->add_option("--jitter", args->jitter, "Per-node bandwidth spread (0.2: +-20%)")->capture_default_str();
  cmd->add_option("--setup", args->setup_s, "Per-load fixed cost, s")->capture_default_str();
  cmd->add_option("--prefill-tps", args->prefill_tps, "Prefill tokens/s")->capture_default_str();
  cmd->add_option("--decode-tps", args->decode_tps, "Decode tokens/s per sequence")->capture_default_str();
  cmd->add_option("--concurrency", args->concurrency, "Sequences per instance")->capture_default_str();
  cmd->add_option("--min-instances", args->min_instances, "Instances per model kept warm")->capture_default_str();
  cmd->add_option("--max-instances", args->max_instances, "Instances per model at most")->capture_default_str();
  cmd->add_option("--keep-alive", args->keep_alive, "Idle seconds before scale-down")->capture_default_str();
  cmd->add_option("--handoff-steps", args->handoff_steps, "Pause of a migrated sequence, decode steps")->capture_default_str();
  add_common_options(*cmd, args->common);
  cmd->callback([cmd, args] { run_result = run_sim(*cmd, *args); });
}

} // namespace thaw::app
