#pragma once
/// What a node's actors share: the device, the slots' compute threads, the loader (its chunk
/// pool is the node's DRAM tier, its SSD readers the SSD tier), the metrics registry and the
/// node's settings. Owned by the node (shared_ptr, so that instances on detached threads keep it
/// alive until they exit). The loader and the metrics registry are thread-safe; the rest is
/// read-only once built.

#include "gpu/device.hpp"
#include "gpu/host/thread_pool.hpp"
#include "runtime/common/metrics.hpp"
#include "runtime/loader/loader.hpp"
#include "runtime/engine/tokenizer.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace thaw {

struct node_options {
  std::string name = "node-0";
  std::int32_t cpu_slots = 1;                   ///< node.cpu_slots
  std::uint64_t slot_memory_bytes = 8ull << 30; ///< node.slot_memory_bytes, per CPU slot
  std::int32_t threads = 2;                     ///< node.threads: compute threads per CPU slot
  loader_options loader;                        ///< loader.*: DRAM tier size, chunks, readers
};

struct node_context {
  node_options options;
  std::unique_ptr<device> dev;
  std::unique_ptr<loader> ld;
  std::shared_ptr<metrics::registry> metrics;
  /// One compute pool per CPU slot, made with the node: the instances placed in a slot share its
  /// threads (their forward passes take turns), and a cold start creates none.
  std::vector<std::shared_ptr<host::thread_pool>> slot_pools;

  /// Makes the host device and the loader. Errors name the bad option.
  [[nodiscard]] static expected<std::shared_ptr<node_context>>
  create(node_options options, std::shared_ptr<metrics::registry> metrics);

  /// The tokenizer of the checkpoint with `content_id` in `dir`, loaded once per node: parsing
  /// tokenizer.json costs tens of milliseconds of every cold start otherwise. Shared read-only
  /// by the instances of the model (a tokenizer's const methods keep no state). Thread-safe.
  [[nodiscard]] expected<std::shared_ptr<const tokenizer>>
  tokenizer_for(const std::string& content_id, const std::filesystem::path& dir);

private:
  std::mutex tokenizers_mutex_;
  std::map<std::string, std::shared_ptr<const tokenizer>> tokenizers_;
};

} // namespace thaw
