// BPE merges by rank over a linked list of symbols with a min-heap of candidate pairs, so a
// segment of n symbols costs O(n log n) instead of rescanning for the best pair after each merge.

#include "runtime/engine/tokenizer_impl.hpp"

#include <algorithm>
#include <functional>

namespace thaw {

namespace {

struct candidate {
  std::int32_t rank;
  std::int32_t left; // symbol index
  std::int32_t left_id;
  std::int32_t right_id;
  // Lowest rank first; among equal ranks the leftmost pair, as Hugging Face does.
  bool operator>(const candidate& o) const noexcept {
    return rank != o.rank ? rank > o.rank : left > o.left;
  }
};

} // namespace

void tokenizer::impl::bpe(std::vector<std::int32_t>& symbols) const {
  const auto n = static_cast<std::int32_t>(symbols.size());
  if (n < 2)
    return;
  thread_local std::vector<std::int32_t> next;
  thread_local std::vector<std::int32_t> prev;
  next.resize(static_cast<std::size_t>(n));
  prev.resize(static_cast<std::size_t>(n));
  for (std::int32_t i = 0; i < n; ++i) {
    next[static_cast<std::size_t>(i)] = i + 1 < n ? i + 1 : -1;
    prev[static_cast<std::size_t>(i)] = i - 1;
  }
  thread_local std::vector<candidate> heap; // reused: no allocation per word
  heap.clear();
  const auto push = [](const candidate& c) {
    heap.push_back(c);
    std::push_heap(heap.begin(), heap.end(), std::greater<>{});
  };
  auto consider = [&](std::int32_t left) {
    if (left < 0)
      return;
    const auto right = next[static_cast<std::size_t>(left)];
    if (right < 0)
      return;
    const auto a = symbols[static_cast<std::size_t>(left)];
    const auto b = symbols[static_cast<std::size_t>(right)];
    if (auto it = merges.find(pair_key(a, b)); it != merges.end())
      push({it->second.rank, left, a, b});
  };
  for (std::int32_t i = 0; i + 1 < n; ++i)
    consider(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const auto c = heap.back();
    heap.pop_back();
    const auto l = static_cast<std::size_t>(c.left);
    const auto r = next[l];
    // Stale entries: the left symbol changed, died, or got a different right neighbour.
    if (symbols[l] != c.left_id || r < 0 || symbols[static_cast<std::size_t>(r)] != c.right_id)
      continue;
    symbols[l] = merges.find(pair_key(c.left_id, c.right_id))->second.result;
    const auto rn = next[static_cast<std::size_t>(r)];
    symbols[static_cast<std::size_t>(r)] = -1;
    next[l] = rn;
    if (rn >= 0)
      prev[static_cast<std::size_t>(rn)] = c.left;
    consider(prev[l]);
    consider(c.left);
  }
  std::size_t w = 0;
  for (std::int32_t i = 0; i >= 0; i = next[static_cast<std::size_t>(i)])
    symbols[w++] = symbols[static_cast<std::size_t>(i)];
  symbols.resize(w);
}

namespace {

// Words repeat (" the", " of"): a bounded per-thread cache of their ids, keyed by the
// tokenizer's serial so that a tokenizer loaded at a reused address never sees stale entries.
struct word_cache {
  std::uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<std::int32_t>, tok_detail::string_hash, std::equal_to<>> ids;
};
constexpr std::size_t cache_limit = 1 << 16;
constexpr std::size_t cache_word_limit = 64; // bytes; longer words are rare and not reused

} // namespace

void tokenizer::impl::encode_word(std::string_view word, std::vector<std::int32_t>& out) const {
  thread_local word_cache cache;
  if (cache.owner != serial) {
    cache.ids.clear();
    cache.owner = serial;
  }
  if (auto it = cache.ids.find(word); it != cache.ids.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  thread_local std::vector<std::int32_t> symbols;
  symbols.clear();
  if (kind == model_kind::byte_level_bpe) {
    if (ignore_merges) {
      // A piece that is a whole token is that token, merges or not (Llama 3).
      std::string mapped;
      for (char ch : word)
        mapped += byte_chars[static_cast<unsigned char>(ch)];
      if (auto it = vocab.find(mapped); it != vocab.end())
        symbols.push_back(it->second);
    }
    if (symbols.empty()) {
      for (char ch : word)
        symbols.push_back(byte_token[static_cast<unsigned char>(ch)]);
      bpe(symbols);
    }
  } else {
    for (std::size_t i = 0; i < word.size();) {
      const auto b0 = static_cast<unsigned char>(word[i]);
      const std::size_t len = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
      const std::string_view ch = word.substr(i, len);
      if (auto it = vocab.find(ch); it != vocab.end()) {
        symbols.push_back(it->second);
      } else if (byte_fallback) {
        for (char byte : ch)
          symbols.push_back(byte_token[static_cast<unsigned char>(byte)]);
      } else if (symbols.empty() || symbols.back() != unk_id) {
        symbols.push_back(unk_id); // fuse_unk; split_words is only set when unk_id is usable
      }
      i += len;
    }
    bpe(symbols);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  if (word.size() <= cache_word_limit) {
    if (cache.ids.size() >= cache_limit)
      cache.ids.clear();
    cache.ids.emplace(std::string{word}, symbols);
  }
}

expected<void> tokenizer::impl::encode_segment(std::string_view text,
                                               std::vector<std::int32_t>& out) const {
  thread_local std::vector<std::int32_t> symbols;
  if (kind == model_kind::byte_level_bpe) {
    std::string normalized;
    if (nfc) {
      THAW_ASSIGN(normalized, tok_detail::nfc(text));
      text = normalized;
    }
    thread_local std::vector<std::pair<std::size_t, std::size_t>> pieces;
    if (split_regex)
      tok_detail::split_qwen(text, pieces, split_max_digits);
    else
      pieces.assign(1, {0, text.size()});
    for (const auto& [b, e] : pieces)
      encode_word(text.substr(b, e - b), out);
    return {};
  }

  // SentencePiece style: Prepend("▁") on a non-empty segment, then Replace(" " -> "▁"); the
  // whole segment is one word (no pre-tokenizer).
  if (text.empty())
    return {};
  std::string normalized = prepend;
  normalized.reserve(text.size() + 16);
  for (char ch : text) {
    if (ch == ' ' && !space_replacement.empty())
      normalized += space_replacement;
    else
      normalized += ch;
  }
  // Words start at a "▁" after another character. When no vocabulary token holds a "▁" after
  // another character (checked at load), no merge can cross such a start, so BPE over each word
  // gives the same ids as over the whole segment, and the heap stays small.
  const std::string_view norm{normalized};
  std::size_t word = 0;
  std::size_t i = 0;
  symbols.clear();
  while (i < norm.size()) {
    const auto b0 = static_cast<unsigned char>(norm[i]);
    const std::size_t len = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
    const std::string_view ch = norm.substr(i, len);
    if (split_words && i > word && ch == space_replacement &&
        norm.substr(i - space_replacement.size(), space_replacement.size()) != space_replacement) {
      encode_word(norm.substr(word, i - word), out);
      word = i;
    }
    if (split_words) {
      i += len;
      continue;
    }
    if (auto it = vocab.find(ch); it != vocab.end()) {
      symbols.push_back(it->second);
    } else if (byte_fallback) {
      for (char byte : ch)
        symbols.push_back(byte_token[static_cast<unsigned char>(byte)]);
    } else if (unk_id >= 0) {
      // fuse_unk: consecutive unknown characters become one <unk>.
      if (symbols.empty() || symbols.back() != unk_id)
        symbols.push_back(unk_id);
    } else {
      return make_error(errc::invalid_argument,
                        "text has a character that is not in the vocabulary and the tokenizer "
                        "has neither byte fallback nor an unknown token");
    }
    i += len;
  }
  if (split_words) {
    encode_word(norm.substr(word), out);
    return {};
  }
  bpe(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
  return {};
}

} // namespace thaw
