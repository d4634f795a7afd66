#include "runtime/engine/host_model_runner.hpp"

#include "gpu/host/host_device.hpp"
#include "gpu/host/host_ops.hpp"
#include "runtime/loader/loader.hpp"
#if THAW_HAVE_CUDA
#include "runtime/engine/cuda_model_runner.hpp"
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace thaw {

namespace {

using std::int64_t;

struct layer_weights {
  weight q, k, v, o, gate, up, down;
  std::vector<float> attn_norm, mlp_norm, q_bias, k_bias, v_bias;
};

class host_model_runner final : public model_runner {
public:
  host_model_runner(const model_config& cfg, std::int32_t blocks,
                    std::shared_ptr<host::thread_pool> pool)
      : cfg_(cfg), blocks_(blocks), pool_(std::move(pool)) {}

  [[nodiscard]] const model_config& config() const noexcept override { return cfg_; }
  [[nodiscard]] std::int32_t num_kv_blocks() const noexcept override { return blocks_; }

  status init(const checkpoint& ckpt, const weight_files& buf, device* kv_device);
  status forward(std::span<const forward_item> batch, std::span<float> logits) override {
    status result;
    pool_->run([&] { result = compute(batch, logits); });
    return result;
  }

private:
  status compute(std::span<const forward_item> batch, std::span<float> logits);
  float* k_at(int64_t layer, int64_t block, int64_t kvh, int64_t slot) {
    const auto hd = static_cast<int64_t>(cfg_.head_dim);
    const auto nkv = static_cast<int64_t>(cfg_.num_kv_heads);
    return k_cache_ + (((layer * blocks_ + block) * nkv + kvh) * kv_block_tokens + slot) * hd;
  }
  float* v_at(int64_t layer, int64_t block, int64_t kvh, int64_t slot) {
    return k_at(layer, block, kvh, slot) + (v_cache_ - k_cache_);
  }

  model_config cfg_;
  std::int32_t blocks_;
  std::shared_ptr<host::thread_pool> pool_;
  weight embed_, lm_head_;
  std::vector<float> final_norm_;
  std::vector<layer_weights> layers_;
  std::vector<double> inv_freq_;
  // Keys then values, in one allocation: `kv_memory_` from the device or `kv_heap_`. Left
  // uninitialised: attention reads only positions some forward has written, so a new runner
  // spends no time zeroing blocks it may never use (zeroing stories15m's 64 blocks took most of
  // its 8 ms build).
  std::unique_ptr<device_buffer> kv_memory_;
  std::unique_ptr<float[]> kv_heap_;
  float* k_cache_ = nullptr;
  float* v_cache_ = nullptr;
};

/// A small tensor (a norm's weights, a bias) as f32 on the host.
std::vector<float> to_f32(const weight& w, std::uint64_t n) {
  std::vector<float> out(n);
  convert_elements(w.type, w.data, dtype::f32, out.data(), n);
  return out;
}

status host_model_runner::init(const checkpoint& ckpt, const weight_files& buf,
                               device* kv_device) {
  const auto& c = cfg_;
  THAW_TRY(check_runner_config(c, blocks_, "host runner"));
  THAW_ASSIGN(const model_tensors t, find_model_tensors(ckpt, buf, "host runner"));
  const std::uint64_t h = c.hidden_size, qd = c.num_heads * c.head_dim,
                      kd = c.num_kv_heads * c.head_dim;
  embed_ = t.embed;
  lm_head_ = t.lm_head;
  final_norm_ = to_f32(t.final_norm, h);
  for (const auto& tl : t.layers) {
    layer_weights w{tl.q, tl.k, tl.v, tl.o, tl.gate, tl.up, tl.down};
    w.attn_norm = to_f32(tl.attn_norm, h);
    w.mlp_norm = to_f32(tl.mlp_norm, h);
    if (c.attention_bias) {
      w.q_bias = to_f32(tl.q_bias, qd);
      w.k_bias = to_f32(tl.k_bias, kd);
      w.v_bias = to_f32(tl.v_bias, kd);
    }
    layers_.push_back(std::move(w));
  }
  inv_freq_ = host::rope_inv_freq(c);
  const std::size_t cache = c.num_layers * static_cast<std::uint64_t>(blocks_) * kd *
                            static_cast<std::uint64_t>(kv_block_tokens);
  if (kv_device != nullptr && kv_device->kind() != device_kind::host)
    return make_error(errc::invalid_argument, "host runner: the KV cache needs host memory, not " +
                                                  kv_device->name());
  if (kv_device != nullptr) {
    auto mem = kv_device->allocate(2 * cache * sizeof(float));
    if (!mem)
      return with_context(std::move(mem).err(), "host runner: KV cache");
    kv_memory_ = std::move(*mem);
    k_cache_ = static_cast<float*>(kv_memory_->data());
  } else {
    kv_heap_ = std::make_unique_for_overwrite<float[]>(2 * cache);
    k_cache_ = kv_heap_.get();
  }
  v_cache_ = k_cache_ + cache;
  return {};
}

status host_model_runner::compute(std::span<const forward_item> batch, std::span<float> logits) {
  const auto& c = cfg_;
  const auto vocab = static_cast<int64_t>(c.vocab_size);
  // Validate everything before computing anything.
  THAW_ASSIGN(const forward_shape shape, validate_forward(c, blocks_, batch, logits.size()));
  const int64_t total = shape.tokens, want = shape.want_logits;
  const auto h = static_cast<int64_t>(c.hidden_size);
  const auto nh = static_cast<int64_t>(c.num_heads);
  const auto nkv = static_cast<int64_t>(c.num_kv_heads);
  const auto hd = static_cast<int64_t>(c.head_dim);
  const auto f = static_cast<int64_t>(c.intermediate_size);
  const int64_t group = nh / nkv;
  const auto window = static_cast<int64_t>(c.sliding_window);

  // Per token: its item, position and block table.
  struct token_ref {
    const forward_item* item;
    int64_t pos;
  };
  std::vector<token_ref> refs;
  refs.reserve(static_cast<std::size_t>(total));
  for (const auto& it : batch)
    for (std::size_t i = 0; i < it.tokens.size(); ++i)
      refs.push_back({&it, it.start_pos + static_cast<int64_t>(i)});

  host::activations x(total * h), xn(total * h), q(total * nh * hd), k(total * nkv * hd),
      v(total * nkv * hd), att(total * nh * hd), tmp(total * h), g(total * f), u(total * f);
  {
    int64_t t = 0;
    for (const auto& it : batch)
      for (auto tok : it.tokens)
        host::embedding(embed_.data, embed_.type, h, tok, x.data() + (t++) * h);
  }
  // RoPE's cos and sin for each token's position, shared by every layer.
  std::vector<float> angles(static_cast<std::size_t>(total * hd));
  for (int64_t t = 0; t < total; ++t)
    host::rope_angles(refs[static_cast<std::size_t>(t)].pos, inv_freq_, angles.data() + t * hd);
  host::thread_pool* pool = pool_.get();
  for (int64_t l = 0; l < static_cast<int64_t>(layers_.size()); ++l) {
    const auto& w = layers_[static_cast<std::size_t>(l)];
    for (int64_t t = 0; t < total; ++t)
      host::rmsnorm(x.data() + t * h, w.attn_norm.data(), h, c.rms_norm_eps, xn.data() + t * h);
    auto bias = [](const std::vector<float>& b) { return b.empty() ? nullptr : b.data(); };
    const host::matmul_job qkv[] = {
        {w.q.data, w.q.type, nh * hd, h, xn.data(), total, q.data(), bias(w.q_bias)},
        {w.k.data, w.k.type, nkv * hd, h, xn.data(), total, k.data(), bias(w.k_bias)},
        {w.v.data, w.v.type, nkv * hd, h, xn.data(), total, v.data(), bias(w.v_bias)}};
    host::matmul_group(pool, qkv);
    for (int64_t t = 0; t < total; ++t) {
      const auto& r = refs[static_cast<std::size_t>(t)];
      const float* cs = angles.data() + t * hd;
      host::rope(q.data() + t * nh * hd, nh, hd, cs);
      host::rope(k.data() + t * nkv * hd, nkv, hd, cs);
      const int64_t block = r.item->block_table[static_cast<std::size_t>(r.pos / kv_block_tokens)];
      const int64_t slot = r.pos % kv_block_tokens;
      for (int64_t kh = 0; kh < nkv; ++kh) {
        std::copy_n(k.data() + (t * nkv + kh) * hd, hd, k_at(l, block, kh, slot));
        std::copy_n(v.data() + (t * nkv + kh) * hd, hd, v_at(l, block, kh, slot));
      }
    }
    // Attention: one (token, head) pair per unit of work. Positions [lo, pos] are walked as runs
    // of consecutive slots within a KV block, where one head's keys (and values) lie back to back.
    // Runs of one head are a block apart (all heads' slots sit between them), a jump the hardware
    // prefetcher does not follow, so each run's successor is prefetched before the run is used.
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const auto run_bytes = [&](int64_t len) {
      return static_cast<std::size_t>(len * hd) * sizeof(float);
    };
    pool->parallel_for(total * nh, [&](int64_t b, int64_t e) {
      std::vector<float> scores;
      struct kv_run {
        const float* keys;
        const float* values;
        int64_t at, len;
      };
      std::vector<kv_run> runs;
      for (int64_t i = b; i < e; ++i) {
        const int64_t t = i / nh, head = i % nh, kh = head / group;
        const auto& r = refs[static_cast<std::size_t>(t)];
        const int64_t lo = window > 0 ? std::max<int64_t>(0, r.pos - window + 1) : 0;
        const int64_t n = r.pos + 1 - lo;
        scores.resize(static_cast<std::size_t>(n));
        runs.clear();
        for (int64_t p = lo; p <= r.pos;) {
          const int64_t block = r.item->block_table[static_cast<std::size_t>(p / kv_block_tokens)];
          const int64_t slot = p % kv_block_tokens;
          const int64_t len = std::min<int64_t>(kv_block_tokens - slot, r.pos + 1 - p);
          runs.push_back({k_at(l, block, kh, slot), v_at(l, block, kh, slot), p - lo, len});
          p += len;
        }
        const float* qv = q.data() + (t * nh + head) * hd;
        for (std::size_t j = 0; j < runs.size(); ++j) {
          const auto& run = runs[j];
          if (j + 1 < runs.size())
            host::prefetch(runs[j + 1].keys, run_bytes(runs[j + 1].len));
          else
            host::prefetch(runs[0].values, run_bytes(runs[0].len));
          host::dot_rows(qv, run.keys, run.len, hd, scale, scores.data() + run.at);
        }
        host::softmax(scores.data(), n);
        float* out = att.data() + (t * nh + head) * hd;
        std::fill_n(out, hd, 0.0f);
        for (std::size_t j = 0; j < runs.size(); ++j) {
          const auto& run = runs[j];
          if (j + 1 < runs.size())
            host::prefetch(runs[j + 1].values, run_bytes(runs[j + 1].len));
          host::axpy_rows(scores.data() + run.at, run.values, run.len, hd, out);
        }
      }
    });
    host::matmul(pool, w.o.data, w.o.type, h, nh * hd, att.data(), total, tmp.data());
    host::add(x.data(), tmp.data(), total * h);
    for (int64_t t = 0; t < total; ++t)
      host::rmsnorm(x.data() + t * h, w.mlp_norm.data(), h, c.rms_norm_eps, xn.data() + t * h);
    const host::matmul_job gate_up[] = {
        {w.gate.data, w.gate.type, f, h, xn.data(), total, g.data(), nullptr},
        {w.up.data, w.up.type, f, h, xn.data(), total, u.data(), nullptr}};
    host::matmul_group(pool, gate_up);
    host::silu_mul(g.data(), u.data(), total * f);
    host::matmul(pool, w.down.data, w.down.type, h, f, g.data(), total, tmp.data());
    host::add(x.data(), tmp.data(), total * h);
  }
  // Final norm and lm_head for the last token of each item that wants logits.
  host::activations last(static_cast<std::size_t>(want * h));
  {
    int64_t t = 0, row = 0;
    for (const auto& it : batch) {
      t += static_cast<int64_t>(it.tokens.size());
      if (it.want_logits)
        host::rmsnorm(x.data() + (t - 1) * h, final_norm_.data(), h, c.rms_norm_eps,
                      last.data() + (row++) * h);
    }
  }
  if (want > 0)
    host::matmul(pool, lm_head_.data, lm_head_.type, vocab, h, last.data(), want, logits.data());
  return {};
}

} // namespace

expected<std::unique_ptr<model_runner>>
make_host_model_runner(const checkpoint& ckpt, const device_buffer& weights,
                       const host_runner_options& opt) {
  if (weights.size() < ckpt.total_bytes())
    return make_error(errc::invalid_argument,
                      "host runner: the weight buffer holds " + std::to_string(weights.size()) +
                          " bytes, the checkpoint " + std::to_string(ckpt.total_bytes()));
  return make_host_model_runner(ckpt, weights_in(ckpt, weights), opt);
}

expected<std::unique_ptr<model_runner>>
make_host_model_runner(const checkpoint& ckpt, const weight_files& weights,
                       const host_runner_options& opt) {
  if (opt.pool == nullptr && opt.threads < 1)
    return make_error(errc::invalid_argument, "host runner: threads must be at least 1");
  auto pool = opt.pool != nullptr ? opt.pool : std::make_shared<host::thread_pool>(opt.threads);
  auto r = std::make_unique<host_model_runner>(ckpt.config(), opt.num_kv_blocks, std::move(pool));
  THAW_TRY(r->init(ckpt, weights, opt.kv_device));
  return std::unique_ptr<model_runner>(std::move(r));
}

expected<loaded_model> load_host_model(const std::filesystem::path& dir,
                                       const host_runner_options& opt) {
  loaded_model m;
  THAW_ASSIGN(auto ck, checkpoint::open(dir));
  m.ckpt = std::make_unique<checkpoint>(std::move(ck));
  m.dev = std::make_unique<host_device>();
  loader_options lo;
  // The pool holds the whole model as the DRAM tier: one pool chunk per checkpoint chunk.
  std::uint64_t chunk = 4096;
  for (const auto& c : m.ckpt->chunks())
    chunk = std::max(chunk, (c.bytes + 4095) / 4096 * 4096);
  lo.chunk_bytes = chunk;
  lo.pool_bytes = chunk * std::max<std::uint64_t>(1, m.ckpt->chunks().size());
  THAW_ASSIGN(auto ld, loader::create(lo, *m.dev));
  THAW_ASSIGN(auto handle, ld->load(*m.ckpt));
  THAW_TRY(handle.wait());
  THAW_ASSIGN(m.weights, handle.take_buffer());
  THAW_ASSIGN(m.runner, make_host_model_runner(*m.ckpt, *m.weights, opt));
  return m;
}

expected<loaded_model> load_model_on(std::string_view device, const std::filesystem::path& dir,
                                     const host_runner_options& opt) {
  if (device == "host")
    return load_host_model(dir, opt);
  if (device != "cuda")
    return make_error(errc::invalid_argument,
                      "device '" + std::string(device) + "' (host or cuda)");
#if THAW_HAVE_CUDA
  return load_cuda_model(dir, {.num_kv_blocks = opt.num_kv_blocks});
#else
  return make_error(errc::unsupported, "device cuda: this thaw was built without CUDA");
#endif
}

} // namespace thaw
