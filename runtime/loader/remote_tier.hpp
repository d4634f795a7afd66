#pragma once
/// The remote tier over UCX (ARCHITECTURE.md sections 5 and 9): both ends of a pull through
/// transport::data_plane. The lending node publishes a model its DRAM tier holds in the pieces
/// the puller's pool chunks take (publish_for_pull); the pulling node reads them into its own
/// tier with loader::pull from a data_plane_source. What the puller needs to know first (the
/// manifest, the key, the lender's address and pool chunk size) travels on the control path.

#include "runtime/loader/dram_tier.hpp"
#include "runtime/loader/loader.hpp"
#include "transport/data_plane.hpp"

#include <cstdint>
#include <string>

namespace thaw {

/// Where a pull reads from: `key` on the data plane at host:port, whose node keeps chunks in
/// pool chunks of `chunk_bytes`.
struct remote_location {
  std::string node; ///< the lender's name, for messages
  std::string host;
  std::uint16_t port = 0;
  std::string key;
  std::uint64_t chunk_bytes = 0;
};

/// A peer's published model as loader::pull reads it, fetched through this node's `plane`.
class data_plane_source final : public remote_source {
public:
  data_plane_source(transport::data_plane& plane, remote_location where)
      : plane_(plane), where_(std::move(where)) {}
  [[nodiscard]] std::string name() const override;
  [[nodiscard]] std::uint64_t chunk_bytes() const override { return where_.chunk_bytes; }
  [[nodiscard]] status fetch(std::span<const std::span<std::byte>> destinations,
                             const piece_callback& on_piece, std::stop_token stop) override;

private:
  transport::data_plane& plane_;
  remote_location where_;
};

/// Publishes `model` (ready in `tier` and pinned by the caller until it unpublishes `key`) on
/// `plane` under `key`, cut into the pieces a puller whose pool chunks are `puller_chunk` bytes
/// fetches into. Errors: the data plane's (already_exists, memory outside the registered pool).
[[nodiscard]] status publish_for_pull(transport::data_plane& plane, const std::string& key,
                                      const cached_model& model, const chunk_pool& pool,
                                      std::uint64_t puller_chunk);

} // namespace thaw
