#include "bench/actor_bench.hpp"

#include "actors/embedded.hpp"
#include "bench/timing.hpp"
#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/engine/engine.hpp"
#include "runtime/engine/host_model_runner.hpp"
#include "runtime/engine/tokenizer.hpp"
#include "transport/http_client.hpp"

#include <atomic>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <thread>

namespace thaw::bench {
namespace {

using json = nlohmann::json;

std::string prompt_text(int words) {
  std::string p;
  for (int i = 0; i < words; ++i)
    p += i ? " hello" : "hello";
  return p;
}

double percentile50(std::vector<double> v) {
  return median(std::move(v));
}

/// p50 of the engine alone's time to first token (tokenization included, as the gateway does it).
expected<double> engine_ttft(engine& e, const tokenizer& tok, const std::string& prompt,
                             int requests) {
  std::vector<double> ttft;
  for (int i = 0; i < requests; ++i) {
    const auto t0 = clock::now();
    THAW_ASSIGN(auto ids, tok.encode(prompt, true));
    generation_request r;
    r.prompt = std::move(ids);
    r.max_tokens = 1;
    r.sampling.temperature = 0;
    THAW_ASSIGN(auto id, e.add(std::move(r)));
    bool first = false;
    while (e.has_work()) {
      for (auto& ev : e.step()) {
        if (ev.id == id && !first && ev.token >= 0) {
          first = true;
          ttft.push_back(since(t0));
        }
      }
    }
  }
  return percentile50(std::move(ttft));
}

expected<double> http_ttft(http::client& c, const std::string& body, int requests) {
  std::vector<double> ttft;
  for (int i = 0; i < requests; ++i) {
    const auto t0 = clock::now();
    bool first = false;
    THAW_ASSIGN(auto r, c.stream("POST", "/v1/completions", body,
                                 {{"content-type", "application/json"}},
                                 [&](std::string_view d) {
                                   if (!first && d.find("data: {") != std::string_view::npos) {
                                     first = true;
                                     ttft.push_back(since(t0));
                                   }
                                   return true;
                                 }));
    if (r.status != 200)
      return make_error(errc::io_error, "bench: the server answered " + std::to_string(r.status));
  }
  return percentile50(std::move(ttft));
}

/// Requests/s of non-streaming completions from `clients` connections for `seconds`.
expected<double> http_throughput(std::uint16_t port, const std::string& body, int clients,
                                 double seconds) {
  std::atomic<long> done{0};
  std::atomic<long> failed{0};
  std::vector<std::thread> threads;
  const auto stop_at = clock::now() + std::chrono::duration_cast<clock::duration>(
                                          std::chrono::duration<double>(seconds));
  const auto t0 = clock::now();
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&] {
      auto c = http::client::connect("127.0.0.1", port);
      if (!c) {
        ++failed;
        return;
      }
      while (clock::now() < stop_at) {
        auto r = (*c)->request("POST", "/v1/completions", body,
                               {{"content-type", "application/json"}});
        if (r && r->status == 200)
          ++done;
        else
          ++failed;
      }
    });
  }
  for (auto& t : threads)
    t.join();
  const double elapsed = since(t0);
  if (failed > 0)
    return make_error(errc::io_error, fmt::format("bench: {} requests failed", failed.load()));
  return static_cast<double>(done) / elapsed;
}

} // namespace

expected<json> run_actor_bench(const actor_bench_options& o) {
  THAW_ASSIGN(auto tok, tokenizer::load(o.checkpoint / "tokenizer.json"));
  host_runner_options ro;
  ro.threads = o.threads;
  ro.num_kv_blocks = 64;
  THAW_ASSIGN(auto model, load_host_model(o.checkpoint, ro));
  engine alone(*model.runner, &tok);

  serve_options so;
  so.http.port = 0;
  so.node.threads = o.threads;
  // Pool chunks as large as the checkpoint's largest chunk: one pool chunk per checkpoint chunk.
  THAW_ASSIGN(auto ck, checkpoint::open(o.checkpoint));
  std::uint64_t chunk = 4096;
  for (const auto& c : ck.chunks())
    chunk = std::max<std::uint64_t>(chunk, (c.bytes + 4095) / 4096 * 4096);
  so.node.loader.chunk_bytes = chunk;
  so.node.loader.pool_bytes = chunk * (ck.chunks().size() + 1);
  model_spec spec;
  spec.name = "bench";
  spec.checkpoint = o.checkpoint.string();
  spec.min_instances = 1; // warm: the cold start is not what this measures
  spec.kv_blocks = 64;
  spec.queue_limit = 4096;
  spec.target_concurrency = 64;
  so.models.push_back(spec);
  THAW_ASSIGN(auto server, embedded_server::start(so));
  THAW_ASSIGN(auto client, http::client::connect("127.0.0.1", server->port()));

  const auto prompt = prompt_text(o.prompt_words);
  json req = {{"model", "bench"}, {"prompt", prompt}, {"max_tokens", 1}, {"temperature", 0}};
  const auto plain = req.dump();
  req["stream"] = true;
  const auto streamed = req.dump();
  // Warm both paths (the instance may still be loading).
  THAW_TRY(engine_ttft(alone, tok, prompt, 10));
  for (int i = 0; i < 200; ++i) {
    auto r = client->request("POST", "/v1/completions", plain,
                             {{"content-type", "application/json"}});
    if (r && r->status == 200)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  THAW_TRY(http_ttft(*client, streamed, 10));

  std::vector<double> engine_p50, actor_p50;
  for (int round = 0; round < o.rounds; ++round) {
    THAW_ASSIGN(auto e, engine_ttft(alone, tok, prompt, o.requests));
    THAW_ASSIGN(auto a, http_ttft(*client, streamed, o.requests));
    engine_p50.push_back(e);
    actor_p50.push_back(a);
  }
  // The engine alone, one request at a time, is the throughput reference.
  const auto t0 = clock::now();
  THAW_TRY(engine_ttft(alone, tok, prompt, o.requests));
  const double engine_rps = o.requests / since(t0);
  THAW_ASSIGN(auto rps, http_throughput(server->port(), plain, o.clients, o.seconds));
  server->stop();

  const double e50 = median(engine_p50), a50 = median(actor_p50);
  return json{{"checkpoint", o.checkpoint.string()},
              {"prompt_words", o.prompt_words},
              {"requests_per_round", o.requests},
              {"rounds", o.rounds},
              {"ttft_p50_engine_ms", e50 * 1e3},
              {"ttft_p50_actors_http_ms", a50 * 1e3},
              {"ttft_overhead_ms", (a50 - e50) * 1e3},
              {"ttft_rounds_engine_ms", engine_p50},
              {"ttft_rounds_actors_http_ms", actor_p50},
              {"throughput_clients", o.clients},
              {"throughput_requests_per_s", rps},
              {"engine_alone_requests_per_s", engine_rps},
              {"throughput_vs_engine_alone", rps / engine_rps}};
}

std::string format_actor_bench(const json& r) {
  return fmt::format(
      "time to first token, p50: engine alone {:.3f} ms, through HTTP + actors {:.3f} ms "
      "(+{:.3f} ms)\n"
      "throughput, max_tokens 1, {} clients: {:.0f} requests/s ({:.2f}x the engine alone, one "
      "at a time: {:.0f}/s)\n",
      r["ttft_p50_engine_ms"].get<double>(), r["ttft_p50_actors_http_ms"].get<double>(),
      r["ttft_overhead_ms"].get<double>(), r["throughput_clients"].get<int>(),
      r["throughput_requests_per_s"].get<double>(), r["throughput_vs_engine_alone"].get<double>(),
      r["engine_alone_requests_per_s"].get<double>());
}

} // namespace thaw::bench
