#include "bench/engine_bench.hpp"

#include "bench/timing.hpp"
#include "gpu/host/host_ops.hpp"
#include "runtime/engine/engine.hpp"
#include "runtime/engine/host_model_runner.hpp"
#if THAW_HAVE_CUDA
#include "bench/gpu_reference.hpp"
#endif
#include "runtime/engine/sampler.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace thaw::bench {
namespace {

std::uint64_t sum_words_scalar(const std::byte* data, std::size_t b, std::size_t e) {
  std::uint64_t sum = 0;
  for (std::size_t i = b; i < e; ++i) {
    std::uint64_t w;
    std::memcpy(&w, data + i * 8, 8);
    sum += w;
  }
  return sum;
}

// Sums 64-bit words [b, e) of `data`; AVX2 where the processor has it, so that the reference
// read is not slower than the engine's own vector loads.
#if defined(__x86_64__)
__attribute__((target("avx2"))) std::uint64_t sum_words_avx2(const std::byte* data, std::size_t b,
                                                               std::size_t e) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  std::size_t i = b;
  for (; i + 16 <= e; i += 16) {
    const auto* p = reinterpret_cast<const __m256i*>(data + i * 8);
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(p));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(p + 1));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(p + 2));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(p + 3));
  }
  alignas(32) std::uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + sum_words_scalar(data, i, e);
}
#endif

std::uint64_t sum_words(const std::byte* data, std::size_t b, std::size_t e) {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2"))
    return sum_words_avx2(data, b, e);
#endif
  return sum_words_scalar(data, b, e);
}

// The bandwidth limit: `threads` threads each sum their share of the buffer, the same bytes a
// decode step reads. The sum is returned so the reads are not optimised away.
double read_seconds(const std::byte* data, std::size_t bytes, int threads, std::uint64_t& sink) {
  const std::size_t words = bytes / 8;
  const std::size_t per = (words + static_cast<std::size_t>(threads) - 1) / threads;
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(threads));
  auto start = clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      const std::size_t b = std::min(words, per * static_cast<std::size_t>(t));
      sums[static_cast<std::size_t>(t)] = sum_words(data, b, std::min(words, b + per));
    });
  for (auto& th : pool)
    th.join();
  double secs = since(start);
  for (auto s : sums)
    sink += s;
  return secs;
}

// The greedy pick a server's decode step makes: the engine's sampler at temperature 0.
expected<std::int32_t> greedy(const float* row, std::size_t n) {
  sampling_params p;
  p.temperature = 0.0f;
  rng_state rng;
  THAW_ASSIGN(auto r, sample({row, n}, p, rng));
  return r.token;
}

struct batch_result {
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// One run at batch size `b`: prefill every sequence's prompt in one forward, then `gen` greedy
// decode steps over all of them.
expected<batch_result> run_once(model_runner& r, int b, int prompt_len, int gen) {
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  const std::int32_t per_seq = kv_blocks_for(prompt_len + gen);
  std::vector<std::vector<std::int32_t>> prompts(static_cast<std::size_t>(b));
  std::vector<std::vector<std::int32_t>> tables(static_cast<std::size_t>(b));
  for (int s = 0; s < b; ++s) {
    auto& p = prompts[static_cast<std::size_t>(s)];
    // Deterministic ids spread over the vocabulary, different for each sequence.
    for (int i = 0; i < prompt_len; ++i)
      p.push_back(static_cast<std::int32_t>((1 + 7919ull * (i + 1) + 104729ull * s) % V));
    for (std::int32_t k = 0; k < per_seq; ++k)
      tables[static_cast<std::size_t>(s)].push_back(s * per_seq + k);
  }
  std::vector<float> logits(static_cast<std::size_t>(b) * V);
  std::vector<forward_item> items(static_cast<std::size_t>(b));
  for (int s = 0; s < b; ++s)
    items[static_cast<std::size_t>(s)] = {prompts[static_cast<std::size_t>(s)], 0,
                                          tables[static_cast<std::size_t>(s)], true};
  batch_result out;
  auto start = clock::now();
  THAW_TRY(r.forward(items, logits));
  out.prefill_seconds = since(start);

  std::vector<std::int32_t> next(static_cast<std::size_t>(b));
  start = clock::now();
  for (int step = 0; step < gen; ++step) {
    for (int s = 0; s < b; ++s) {
      auto& it = items[static_cast<std::size_t>(s)];
      THAW_ASSIGN(next[static_cast<std::size_t>(s)],
                  greedy(&logits[static_cast<std::size_t>(s) * V], V));
      it.start_pos = prompt_len + step;
      it.tokens = std::span<const std::int32_t>(&next[static_cast<std::size_t>(s)], 1);
    }
    THAW_TRY(r.forward(items, logits));
  }
  out.decode_seconds = since(start);
  return out;
}

// Time from add() to the first token of `prompt` in `e` (which must be idle).
expected<double> first_token_seconds(engine& e, std::vector<std::int32_t> prompt) {
  generation_request r;
  r.prompt = std::move(prompt);
  r.max_tokens = 1;
  r.sampling.temperature = 0.0f;
  auto start = clock::now();
  THAW_ASSIGN(auto id, e.add(std::move(r)));
  while (e.has_work())
    for (auto& ev : e.step())
      if (ev.id == id && ev.failure)
        return *ev.failure;
  return since(start);
}

// Prefix reuse: a request with `prefix_len` shared tokens plus 16 of its own, cold, then a
// second one after the first finished. A fresh engine (empty radix cache) per repeat.
expected<nlohmann::json> run_prefix_bench(model_runner& r, const engine_bench_options& o) {
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  auto make_prompt = [&](int salt) {
    std::vector<std::int32_t> p;
    for (int i = 0; i < o.prefix_len; ++i)
      p.push_back(static_cast<std::int32_t>((1 + 7919ull * (i + 1)) % V));
    for (int i = 0; i < 16; ++i)
      p.push_back(static_cast<std::int32_t>((3 + 104729ull * (i + 1) * salt) % V));
    return p;
  };
  std::vector<double> cold, warm;
  for (int k = 0; k < o.repeats; ++k) {
    engine_options eo;
    eo.max_batch_tokens = o.prefix_len + 16; // the whole prompt in one step, as a server would
    engine e(r, nullptr, eo);
    THAW_ASSIGN(double a, first_token_seconds(e, make_prompt(1)));
    THAW_ASSIGN(double b, first_token_seconds(e, make_prompt(2)));
    if (e.stats().prefix_hit_tokens == 0)
      return make_error(errc::internal, "bench engine: the second request found no cached prefix");
    cold.push_back(a);
    warm.push_back(b);
  }
  return nlohmann::json{{"prefix_len", o.prefix_len},
                        {"own_tokens", 16},
                        {"first_token_seconds_cold", median(cold)},
                        {"first_token_seconds_cached", median(warm)},
                        {"cached_over_cold", median(warm) / median(cold)}};
}

} // namespace

expected<nlohmann::json> run_engine_bench(const engine_bench_options& o) {
  if (o.prompt_len < 1 || o.gen < 1 || o.threads < 1 || o.repeats < 1 || o.batches.empty())
    return make_error(errc::invalid_argument,
                      "bench engine: prompt-len, gen, threads, repeats and batches must be >= 1");
  if (o.prefix_len < 0)
    return make_error(errc::invalid_argument, "bench engine: prefix-len must be >= 0");
  for (int b : o.batches)
    if (b < 1)
      return make_error(errc::invalid_argument, "bench engine: a batch size must be >= 1");
  const int max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  const std::int32_t kv_blocks = std::max(max_batch * kv_blocks_for(o.prompt_len + o.gen),
                                          2 * kv_blocks_for(o.prefix_len + 17));
  const bool gpu = o.device == "cuda"; // load_model_on refuses any other than host and cuda
  // The forced kernel path, for this run only.
  struct restore_path {
    host::kernel_path saved = host::active_kernel_path();
    ~restore_path() { host::set_kernel_path(saved); }
  } restore;
  if (!o.kernels.empty()) {
    bool known = false;
    for (const auto p : {host::kernel_path::scalar, host::kernel_path::avx2,
                         host::kernel_path::avx512, host::kernel_path::w16_emulated})
      if (host::kernel_path_name(p) == o.kernels) {
        host::set_kernel_path(p);
        known = true;
      }
    if (!known)
      return make_error(errc::invalid_argument,
                        "bench engine: kernels '" + o.kernels +
                            "' (scalar, avx2, avx512 or w16_emulated)");
  }
  host_runner_options ro;
  ro.threads = o.threads;
  ro.num_kv_blocks = kv_blocks;
  THAW_ASSIGN(auto m, load_model_on(o.device, o.checkpoint, ro));
  const auto& cfg = m.runner->config();
  if (static_cast<std::uint64_t>(std::max(o.prompt_len + o.gen, o.prefix_len + 17)) >
      cfg.max_position_embeddings)
    return make_error(errc::invalid_argument,
                      "bench engine: prompt-len + gen (or prefix-len + 17) exceeds the model's "
                      "max_position_embeddings (" +
                          std::to_string(cfg.max_position_embeddings) + ")");
  const std::uint64_t weight_bytes = m.ckpt->total_bytes();
  // A decode step reads every weight once, except the embedding table, of which it reads one
  // row a token (unless the lm_head is tied to it, when the lm_head reads it all).
  std::uint64_t step_bytes = 0;
  for (const auto& t : m.ckpt->info().tensors)
    if (t.name != "model.embed_tokens.weight" || cfg.tie_word_embeddings)
      step_bytes += t.bytes;

  // The limit is the best of reads made before and between the runs, so that a quiet moment
  // counts for the reference as much as for thaw: the ratio errs against thaw.
  std::uint64_t sink = 0;
  double best_read = 1e30;
  auto measure_read = [&]() -> status {
    if (gpu) {
#if THAW_HAVE_CUDA
      // The GPU's memory bandwidth (GB/s) over a copy of the weights' size, as seconds to read
      // the weights once.
      THAW_ASSIGN(const double gbps, device_copy_gbps(0, weight_bytes));
      best_read = std::min(best_read, static_cast<double>(weight_bytes) / (gbps * 1e9));
#endif
      return {};
    }
    for (int k = 0; k < 3; ++k)
      best_read = std::min(best_read, read_seconds(static_cast<const std::byte*>(m.weights->data()),
                                                   weight_bytes, o.threads, sink));
    return {};
  };
  if (gpu) {
    // Untimed: the first forward waits for the loader layer by layer, and each decode shape
    // runs eagerly once and is captured into a CUDA graph on its second step. Timed runs measure
    // the steady state, not the load or the captures.
    for (int b : o.batches) {
      THAW_ASSIGN(auto warm, run_once(*m.runner, b, o.prompt_len, std::min(o.gen, 3)));
      (void)warm;
    }
  }
  THAW_TRY(measure_read());

  nlohmann::json out;
  out["checkpoint"] = o.checkpoint.string();
  out["architecture"] = std::string{to_string(cfg.arch)};
  out["dtype"] = std::string{to_string(cfg.torch_dtype)};
  out["weight_bytes"] = weight_bytes;
  out["decode_step_bytes"] = step_bytes;
  out["threads"] = o.threads;
  out["prompt_len"] = o.prompt_len;
  out["gen"] = o.gen;
  out["repeats"] = o.repeats;
  auto& rows = out["batches"] = nlohmann::json::array();
  // Rounds run every batch size in turn, so that a batch's speed-up over batch 1 is taken
  // round by round, from runs a few seconds apart, not from medians minutes apart on a machine
  // whose speed drifts.
  const std::size_t nb = o.batches.size();
  std::vector<std::vector<double>> pre(nb), dec(nb);
  for (int k = 0; k < o.repeats; ++k)
    for (std::size_t i = 0; i < nb; ++i) {
      THAW_ASSIGN(auto r, run_once(*m.runner, o.batches[i], o.prompt_len, o.gen));
      THAW_TRY(measure_read());
      pre[i].push_back(r.prefill_seconds);
      dec[i].push_back(r.decode_seconds);
    }
  const auto one = std::find(o.batches.begin(), o.batches.end(), 1);
  for (std::size_t i = 0; i < nb; ++i) {
    const int b = o.batches[i];
    const double p = median(pre[i]), d = median(dec[i]);
    const double steps_per_s = o.gen / d;
    nlohmann::json row{{"batch", b},
                       {"prefill_tokens_per_s", b * o.prompt_len / p},
                       {"decode_tokens_per_s", b * steps_per_s},
                       {"decode_steps_per_s", steps_per_s},
                       {"prefill_seconds", pre[i]},
                       {"decode_seconds", dec[i]}};
    if (one != o.batches.end()) {
      // Decode tokens/s over batch 1's in the same round: b * t1 / tb.
      const auto& base = dec[static_cast<std::size_t>(one - o.batches.begin())];
      std::vector<double> ratios;
      for (std::size_t k = 0; k < base.size(); ++k)
        ratios.push_back(b * base[k] / dec[i][k]);
      row["decode_speedup_over_batch_1"] = median(ratios);
    }
    rows.push_back(std::move(row));
  }
  const double read_gbps = static_cast<double>(weight_bytes) / best_read / 1e9;
  // At the bandwidth limit a decode step takes step_bytes / bandwidth.
  const double limit_steps_per_s = read_gbps * 1e9 / static_cast<double>(step_bytes);
  for (auto& row : rows)
    row["decode_fraction_of_bandwidth_limit"] =
        row["decode_steps_per_s"].get<double>() / limit_steps_per_s;
  out["read_gbps"] = read_gbps;
  out["device"] = m.dev->name();
  if (!gpu)
    out["kernels"] = std::string(host::kernel_path_name(host::active_kernel_path()));
  if (gpu) {
#if THAW_HAVE_CUDA
    // Prefill as matrix work: 2 flops per weight of every matrix per prompt token (attention's
    // own products left out, so the figure errs low), against a plain GEMM in the same type.
    double matrix_weights = 0;
    for (const auto& t : m.ckpt->info().tensors)
      if (t.shape.size() == 2 && (t.name != "model.embed_tokens.weight" || cfg.tie_word_embeddings))
        matrix_weights += static_cast<double>(t.shape[0]) * static_cast<double>(t.shape[1]);
    THAW_ASSIGN(const double peak, gemm_tflops(0, cfg.torch_dtype, o.gemm_size, o.gemm_size,
                                               o.gemm_size));
    out["gemm_tflops"] = peak;
    out["gemm_size"] = o.gemm_size;
    for (auto& row : rows) {
      const double tokens_per_s = row["prefill_tokens_per_s"].get<double>();
      row["prefill_tflops"] = 2.0 * matrix_weights * tokens_per_s / 1e12;
      row["prefill_fraction_of_gemm_peak"] = row["prefill_tflops"].get<double>() / peak;
    }
#endif
  }
  if (o.prefix_len > 0) {
    THAW_ASSIGN(out["prefix_cache"], run_prefix_bench(*m.runner, o));
  }
  out["read_checksum"] = sink; // keeps the reference reads honest
  return out;
}

std::string format_engine_bench(const nlohmann::json& r) {
  std::string s;
  char line[256];
  std::snprintf(line, sizeof line,
                "thaw bench engine: %s (%s, %s, %.1f MB of weights), %d threads, prompt %d, gen %d\n",
                r["checkpoint"].get<std::string>().c_str(),
                r["architecture"].get<std::string>().c_str(), r["dtype"].get<std::string>().c_str(),
                r["weight_bytes"].get<double>() / 1e6, r["threads"].get<int>(),
                r["prompt_len"].get<int>(), r["gen"].get<int>());
  s += line;
  const std::string kernels =
      r.contains("kernels") ? " (" + r["kernels"].get<std::string>() + " kernels)" : "";
  std::snprintf(line, sizeof line, "  on %s%s; read bandwidth of the weights (limit): %.2f GB/s\n",
                r.value("device", std::string("host")).c_str(), kernels.c_str(),
                r["read_gbps"].get<double>());
  s += line;
  if (r.contains("gemm_tflops")) {
    std::snprintf(line, sizeof line, "  cuBLAS GEMM %d^3 (prefill's reference): %.1f TFLOP/s\n",
                  r["gemm_size"].get<int>(), r["gemm_tflops"].get<double>());
    s += line;
  }
  s += "  batch   prefill tok/s   decode tok/s   decode vs bandwidth limit   decode vs batch 1\n";
  for (const auto& row : r["batches"]) {
    std::snprintf(line, sizeof line, "  %5d   %13.1f   %12.1f   %25.2f", row["batch"].get<int>(),
                  row["prefill_tokens_per_s"].get<double>(), row["decode_tokens_per_s"].get<double>(),
                  row["decode_fraction_of_bandwidth_limit"].get<double>());
    s += line;
    if (row.contains("decode_speedup_over_batch_1")) {
      std::snprintf(line, sizeof line, "   %16.2fx",
                    row["decode_speedup_over_batch_1"].get<double>());
      s += line;
    }
    if (row.contains("prefill_tflops")) {
      std::snprintf(line, sizeof line, "   prefill %.1f TFLOP/s (%.2f of GEMM)",
                    row["prefill_tflops"].get<double>(),
                    row["prefill_fraction_of_gemm_peak"].get<double>());
      s += line;
    }
    s += "\n";
  }
  if (r.contains("prefix_cache")) {
    const auto& p = r["prefix_cache"];
    std::snprintf(line, sizeof line,
                  "  first token, %d-token prefix + %d own: cold %.3f s, prefix cached %.3f s "
                  "(%.3f of cold)\n",
                  p["prefix_len"].get<int>(), p["own_tokens"].get<int>(),
                  p["first_token_seconds_cold"].get<double>(),
                  p["first_token_seconds_cached"].get<double>(), p["cached_over_cold"].get<double>());
    s += line;
  }
  return s;
}

} // namespace thaw::bench
