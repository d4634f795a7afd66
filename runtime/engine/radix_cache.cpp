#include "runtime/engine/radix_cache.hpp"

#include "runtime/engine/model_runner.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <queue>
#include <string>

namespace thaw {

using block_key = std::array<std::int32_t, kv_block_tokens>;

struct radix_cache::node {
  block_key key{};
  std::int32_t block = -1; ///< -1 only at the root
  node* parent = nullptr;
  std::uint64_t last_use = 0;
  // Ordered map: a node has few children (forks), and ordering keeps eviction deterministic.
  std::map<block_key, std::unique_ptr<node>> children;
};

namespace {

block_key key_at(std::span<const std::int32_t> tokens, std::size_t block) {
  block_key k;
  std::copy_n(tokens.begin() + static_cast<std::ptrdiff_t>(block) * kv_block_tokens,
              kv_block_tokens, k.begin());
  return k;
}

} // namespace

radix_cache::radix_cache(kv_blocks& blocks) : blocks_(&blocks), root_(std::make_unique<node>()) {}

radix_cache::~radix_cache() {
  // One iterative pass (a long chain of blocks must not recurse per level): each node gives
  // back its block and hands its children on before it is freed.
  std::vector<std::unique_ptr<node>> pending;
  for (auto& [k, child] : root_->children)
    pending.push_back(std::move(child));
  while (!pending.empty()) {
    auto n = std::move(pending.back());
    pending.pop_back();
    (void)blocks_->release(n->block); // the tree's own reference
    for (auto& [k, child] : n->children)
      pending.push_back(std::move(child));
  }
}

radix_cache::match radix_cache::lookup(std::span<const std::int32_t> tokens) {
  match m;
  const std::uint64_t now = ++clock_;
  node* at = root_.get();
  const std::size_t full = tokens.size() / kv_block_tokens;
  for (std::size_t i = 0; i < full; ++i) {
    auto it = at->children.find(key_at(tokens, i));
    if (it == at->children.end())
      break;
    at = it->second.get();
    at->last_use = now;
    (void)blocks_->retain(at->block); // held by the tree, so retain cannot fail
    m.blocks.push_back(at->block);
  }
  m.tokens = static_cast<std::int32_t>(m.blocks.size()) * kv_block_tokens;
  return m;
}

status radix_cache::insert(std::span<const std::int32_t> tokens,
                           std::span<const std::int32_t> blocks) {
  const std::uint64_t now = ++clock_;
  node* at = root_.get();
  const std::size_t full = std::min(tokens.size() / kv_block_tokens, blocks.size());
  for (std::size_t i = 0; i < full; ++i) {
    auto key = key_at(tokens, i);
    auto it = at->children.find(key);
    if (it == at->children.end()) {
      if (auto s = blocks_->retain(blocks[i]); !s)
        return with_context(std::move(s).err(),
                            "radix_cache::insert: block " + std::to_string(i) + " of the sequence");
      auto child = std::make_unique<node>();
      child->key = key;
      child->block = blocks[i];
      child->parent = at;
      it = at->children.emplace(key, std::move(child)).first;
      ++size_;
    }
    at = it->second.get();
    at->last_use = now;
  }
  return {};
}

std::int32_t radix_cache::evict(std::int32_t n) {
  if (n <= 0)
    return 0;
  // Min-heap of evictable leaves by last use; ties broken by block id so runs are repeatable.
  using entry = std::pair<std::pair<std::uint64_t, std::int32_t>, node*>;
  auto later = [](const entry& a, const entry& b) { return a.first > b.first; };
  std::priority_queue<entry, std::vector<entry>, decltype(later)> heap(later);
  auto evictable_leaf = [this](const node* x) {
    return x != root_.get() && x->children.empty() && blocks_->ref_count(x->block) == 1;
  };
  std::vector<node*> stack{root_.get()};
  while (!stack.empty()) {
    node* x = stack.back();
    stack.pop_back();
    if (evictable_leaf(x))
      heap.push({{x->last_use, x->block}, x});
    for (auto& [k, child] : x->children)
      stack.push_back(child.get());
  }
  std::int32_t freed = 0;
  while (freed < n && !heap.empty()) {
    node* x = heap.top().second;
    heap.pop();
    node* parent = x->parent;
    (void)blocks_->release(x->block); // ref_count was 1: the block is free now
    parent->children.erase(x->key);   // destroys x
    --size_;
    ++freed;
    if (evictable_leaf(parent))
      heap.push({{parent->last_use, parent->block}, parent});
  }
  return freed;
}

std::int32_t radix_cache::cached_blocks() const noexcept { return size_; }

std::int32_t radix_cache::evictable_blocks() const {
  // A node is evictable when only the cache holds it and its whole subtree is evictable:
  // count bottom-up over a post-order walk.
  std::int32_t count = 0;
  struct frame {
    const node* n;
    bool expanded;
  };
  std::vector<frame> stack{{root_.get(), false}};
  std::map<const node*, bool> all_free; // subtree evictable
  while (!stack.empty()) {
    auto [n, expanded] = stack.back();
    stack.pop_back();
    if (!expanded) {
      stack.push_back({n, true});
      for (auto& [k, child] : n->children)
        stack.push_back({child.get(), false});
      continue;
    }
    bool ok = n == root_.get() || blocks_->ref_count(n->block) == 1;
    for (auto& [k, child] : n->children)
      ok = ok && all_free[child.get()];
    all_free[n] = ok;
    if (ok && n != root_.get())
      ++count;
  }
  return count;
}

} // namespace thaw
