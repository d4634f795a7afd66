#pragma once
// A plain scalar Llama-family forward pass, the independent oracle for the model runners: straight
// loops, one token at a time, weights converted to f32 with convert_elements, no KV paging (full
// causal attention recomputed over the whole sequence), double accumulation.

#include "runtime/checkpoint/checkpoint.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace thaw::testing {

namespace reference_detail {

inline std::vector<float> tensor(const checkpoint& ck, const std::byte* weights,
                                 const std::string& name) {
  const tensor_entry* t = ck.find_tensor(name);
  if (t == nullptr)
    throw std::runtime_error("reference: no tensor " + name);
  std::size_t n = 1;
  for (auto d : t->shape)
    n *= d;
  std::vector<float> out(n);
  convert_elements(t->type, weights + ck.file_base(t->file) + t->offset, dtype::f32, out.data(), n);
  return out;
}

// y[r] = sum_i W[r][i] x[i]
inline std::vector<float> matvec(const std::vector<float>& w, const std::vector<float>& x,
                                 std::size_t rows) {
  const std::size_t in = x.size();
  std::vector<float> y(rows);
  for (std::size_t r = 0; r < rows; ++r) {
    double acc = 0;
    for (std::size_t i = 0; i < in; ++i)
      acc += static_cast<double>(w[r * in + i]) * x[i];
    y[r] = static_cast<float>(acc);
  }
  return y;
}

inline std::vector<float> rmsnorm(const std::vector<float>& x, const std::vector<float>& w,
                                  double eps) {
  double ss = 0;
  for (float v : x)
    ss += static_cast<double>(v) * v;
  const double s = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  std::vector<float> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    out[i] = static_cast<float>(x[i] * s * w[i]);
  return out;
}

inline double inv_freq(const model_config& c, std::size_t i) {
  const auto d = static_cast<double>(c.head_dim);
  double f = 1.0 / std::pow(c.rope_theta, 2.0 * static_cast<double>(i) / d);
  const auto& s = c.rope_scaling;
  if (s.type == "linear")
    return f / s.factor;
  if (s.type == "llama3") {
    const double old = static_cast<double>(s.original_max_position_embeddings);
    const double wl = 2 * std::numbers::pi / f;
    if (wl < old / s.high_freq_factor)
      return f;
    if (wl > old / s.low_freq_factor)
      return f / s.factor;
    const double sm = (old / wl - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    return (1 - sm) * f / s.factor + sm * f;
  }
  return f;
}

// Rotate-half RoPE of every head in x at position pos.
inline void rope(std::vector<float>& x, const model_config& c, std::size_t pos) {
  const std::size_t hd = c.head_dim, half = hd / 2;
  for (std::size_t h = 0; h < x.size() / hd; ++h)
    for (std::size_t i = 0; i < half; ++i) {
      const double a = static_cast<double>(pos) * inv_freq(c, i);
      const double x0 = x[h * hd + i], x1 = x[h * hd + i + half];
      x[h * hd + i] = static_cast<float>(x0 * std::cos(a) - x1 * std::sin(a));
      x[h * hd + i + half] = static_cast<float>(x1 * std::cos(a) + x0 * std::sin(a));
    }
}

} // namespace reference_detail

/// Logits for every position of `tokens`: [tokens.size()][vocab].
inline std::vector<float> reference_logits(const checkpoint& ck, const std::byte* weights,
                                           std::span<const std::int32_t> tokens) {
  using namespace reference_detail;
  const model_config& c = ck.config();
  const std::size_t H = c.hidden_size, NH = c.num_heads, NKV = c.num_kv_heads, HD = c.head_dim,
                    V = c.vocab_size, T = tokens.size();
  const auto embed = tensor(ck, weights, "model.embed_tokens.weight");
  const auto lm_head = ck.find_tensor("lm_head.weight") != nullptr
                           ? tensor(ck, weights, "lm_head.weight")
                           : embed;
  std::vector<std::vector<float>> x(T);
  for (std::size_t t = 0; t < T; ++t)
    x[t].assign(embed.begin() + static_cast<std::ptrdiff_t>(tokens[t] * H),
                embed.begin() + static_cast<std::ptrdiff_t>((tokens[t] + 1) * H));
  for (std::size_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto wq = tensor(ck, weights, p + "self_attn.q_proj.weight");
    const auto wk = tensor(ck, weights, p + "self_attn.k_proj.weight");
    const auto wv = tensor(ck, weights, p + "self_attn.v_proj.weight");
    const auto wo = tensor(ck, weights, p + "self_attn.o_proj.weight");
    const auto wg = tensor(ck, weights, p + "mlp.gate_proj.weight");
    const auto wu = tensor(ck, weights, p + "mlp.up_proj.weight");
    const auto wd = tensor(ck, weights, p + "mlp.down_proj.weight");
    const auto n1 = tensor(ck, weights, p + "input_layernorm.weight");
    const auto n2 = tensor(ck, weights, p + "post_attention_layernorm.weight");
    std::vector<std::vector<float>> q(T), k(T), v(T);
    for (std::size_t t = 0; t < T; ++t) {
      const auto xn = rmsnorm(x[t], n1, c.rms_norm_eps);
      q[t] = matvec(wq, xn, NH * HD);
      k[t] = matvec(wk, xn, NKV * HD);
      v[t] = matvec(wv, xn, NKV * HD);
      if (c.attention_bias) {
        const auto bq = tensor(ck, weights, p + "self_attn.q_proj.bias");
        const auto bk = tensor(ck, weights, p + "self_attn.k_proj.bias");
        const auto bv = tensor(ck, weights, p + "self_attn.v_proj.bias");
        for (std::size_t i = 0; i < q[t].size(); ++i)
          q[t][i] += bq[i];
        for (std::size_t i = 0; i < k[t].size(); ++i) {
          k[t][i] += bk[i];
          v[t][i] += bv[i];
        }
      }
      rope(q[t], c, t);
      rope(k[t], c, t);
    }
    for (std::size_t t = 0; t < T; ++t) {
      std::vector<float> att(NH * HD, 0.0f);
      const std::size_t lo =
          c.sliding_window > 0 && t + 1 > c.sliding_window ? t + 1 - c.sliding_window : 0;
      for (std::size_t h = 0; h < NH; ++h) {
        const std::size_t kh = h / (NH / NKV);
        std::vector<double> s;
        double m = -1e300;
        for (std::size_t j = lo; j <= t; ++j) {
          double d = 0;
          for (std::size_t i = 0; i < HD; ++i)
            d += static_cast<double>(q[t][h * HD + i]) * k[j][kh * HD + i];
          s.push_back(d / std::sqrt(static_cast<double>(HD)));
          m = std::max(m, s.back());
        }
        double sum = 0;
        for (auto& e : s)
          sum += (e = std::exp(e - m));
        for (std::size_t i = 0; i < HD; ++i) {
          double acc = 0;
          for (std::size_t j = lo; j <= t; ++j)
            acc += s[j - lo] / sum * v[j][kh * HD + i];
          att[h * HD + i] = static_cast<float>(acc);
        }
      }
      const auto o = matvec(wo, att, H);
      for (std::size_t i = 0; i < H; ++i)
        x[t][i] += o[i];
    }
    for (std::size_t t = 0; t < T; ++t) {
      const auto xn = rmsnorm(x[t], n2, c.rms_norm_eps);
      auto g = matvec(wg, xn, c.intermediate_size);
      const auto u = matvec(wu, xn, c.intermediate_size);
      for (std::size_t i = 0; i < g.size(); ++i)
        g[i] = static_cast<float>(g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i]);
      const auto d = matvec(wd, g, H);
      for (std::size_t i = 0; i < H; ++i)
        x[t][i] += d[i];
    }
  }
  const auto nf = tensor(ck, weights, "model.norm.weight");
  std::vector<float> out;
  out.reserve(T * V);
  for (std::size_t t = 0; t < T; ++t) {
    const auto lg = matvec(lm_head, rmsnorm(x[t], nf, c.rms_norm_eps), V);
    out.insert(out.end(), lg.begin(), lg.end());
  }
  return out;
}

} // namespace thaw::testing
