#pragma once
// Driving a model_runner the way the runner tests compare runners: deterministic prompts,
// contiguous block tables, logits at every position by decoding one token at a time, logits
// after chunked prefill, and the relative difference of two logits rows.

#include "runtime/engine/model_runner.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

namespace thaw::testing {

/// `n` token ids below `vocab`, a function of `seed`.
inline std::vector<std::int32_t> some_tokens(std::size_t n, std::int32_t vocab,
                                             std::int32_t seed = 7) {
  std::vector<std::int32_t> t(n);
  for (std::size_t i = 0; i < n; ++i)
    t[i] = static_cast<std::int32_t>((i * 37 + static_cast<std::size_t>(seed) * 11 + 3) %
                                     static_cast<std::size_t>(vocab));
  return t;
}

/// Blocks first .. first + n - 1.
inline std::vector<std::int32_t> iota_blocks(std::int32_t first, std::int32_t n) {
  std::vector<std::int32_t> b(static_cast<std::size_t>(n));
  std::iota(b.begin(), b.end(), first);
  return b;
}

/// Logits at every position by decoding one token at a time.
inline std::vector<float> decode_all(model_runner& r, std::span<const std::int32_t> tokens,
                                     std::span<const std::int32_t> blocks) {
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  std::vector<float> out(tokens.size() * V);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    forward_item it{tokens.subspan(i, 1), static_cast<std::int32_t>(i), blocks, true};
    auto s = r.forward({&it, 1}, {out.data() + i * V, V});
    EXPECT_TRUE(s) << s.err().to_string();
  }
  return out;
}

/// Logits after the last token of each chunk of `chunk` tokens.
inline std::vector<float> prefill_chunks(model_runner& r, std::span<const std::int32_t> tokens,
                                         std::span<const std::int32_t> blocks, std::size_t chunk) {
  const auto V = static_cast<std::size_t>(r.config().vocab_size);
  std::vector<float> last(V);
  for (std::size_t i = 0; i < tokens.size(); i += chunk) {
    const auto n = std::min(chunk, tokens.size() - i);
    forward_item it{tokens.subspan(i, n), static_cast<std::int32_t>(i), blocks, true};
    auto s = r.forward({&it, 1}, last);
    EXPECT_TRUE(s) << s.err().to_string();
  }
  return last;
}

/// The largest |a - ref| / max(1, |ref|).
inline float max_rel_diff(std::span<const float> a, std::span<const float> ref) {
  float m = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(a[i] - ref[i]) / std::max(1.0f, std::abs(ref[i])));
  return m;
}

} // namespace thaw::testing
