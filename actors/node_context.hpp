#pragma once
/// What a node's actors share: the device, the loader (its chunk pool is the node's DRAM tier, its
/// SSD readers the SSD tier), the metrics registry and the node's settings. Owned by the node
/// (shared_ptr, so that instances on detached threads keep it alive until they exit). The loader
/// and the metrics registry are thread-safe; the rest is read-only once built.

#include "gpu/device.hpp"
#include "gpu/host/thread_pool.hpp"
#include "runtime/common/metrics.hpp"
#include "runtime/loader/loader.hpp"
#include "runtime/engine/tokenizer.hpp"
#include "transport/data_plane.hpp"

#include <chrono>
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
  /// node.gpus: GPU slots, one for each of GPUs 0 .. gpus - 1 (a build with the CUDA backend).
  /// Their instances load from the node's one DRAM tier onto their GPU and run the CUDA runner.
  std::int32_t gpus = 0;
  loader_options loader;                        ///< loader.*: DRAM tier size, chunks, readers
  /// node.data_plane: a UCX data plane through which peers read this node's DRAM tier and this
  /// node pulls models it lacks on disk from theirs (the remote tier). Cluster nodes only: an
  /// embedded `thaw serve` has no peers.
  bool data_plane = true;
  /// node.data_address: where the data plane listens and what peers are told to reach; ""
  /// (default): the address this machine reaches the head from (127.0.0.1 without a head).
  std::string data_address;
  std::uint16_t data_port = 0;            ///< node.data_port: its port; 0 picks a free one
  /// node.pull_room_wait: how long a pull waits for room in the DRAM tier while models in use
  /// fill it; then the start fails (resource_exhausted), and the scheduler tries another node.
  std::chrono::milliseconds pull_room_wait{30'000};
};

struct node_context {
  node_options options;
  std::unique_ptr<device> dev;
  /// The node's GPUs (node.gpus), each a further target of the loader; destroyed after it.
  std::vector<std::unique_ptr<device>> gpus;
  /// Null without node.data_plane. When present, the loader's chunk pool is memory it allocated
  /// (UCX shared memory where it can: a peer on the same host then reads it with one copy), so
  /// it must outlive the loader: declared first, destroyed last.
  std::unique_ptr<transport::data_plane> plane;
  std::unique_ptr<loader> ld;
  std::shared_ptr<metrics::registry> metrics;

  /// Makes the host device, the data plane when `with_data_plane` and options.data_plane, the
  /// loader and the GPUs of node.gpus. Errors name the bad option (or the data plane's or the
  /// GPU's failure: node.gpus on a machine without them says why).
  [[nodiscard]] static expected<std::shared_ptr<node_context>>
  create(node_options options, std::shared_ptr<metrics::registry> metrics,
         bool with_data_plane = false);

  /// The tokenizer of the checkpoint with `content_id` in `dir`, loaded once per node: parsing
  /// tokenizer.json costs tens of milliseconds of every cold start otherwise. Shared read-only
  /// by the instances of the model (a tokenizer's const methods keep no state). Thread-safe.
  [[nodiscard]] expected<std::shared_ptr<const tokenizer>>
  tokenizer_for(const std::string& content_id, const std::filesystem::path& dir);

  /// Keeps `tok` as the tokenizer of `content_id` (a model pulled from a peer has no
  /// tokenizer.json on this node's disk); returns the copy kept.
  std::shared_ptr<const tokenizer> add_tokenizer(const std::string& content_id, tokenizer tok);

private:
  std::mutex tokenizers_mutex_;
  std::map<std::string, std::shared_ptr<const tokenizer>> tokenizers_;
};

} // namespace thaw
