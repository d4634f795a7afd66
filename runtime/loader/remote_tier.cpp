#include "runtime/loader/remote_tier.hpp"

namespace thaw {

std::string data_plane_source::name() const {
  return "node " + where_.node + " (" + where_.host + ":" + std::to_string(where_.port) + ")";
}

status data_plane_source::fetch(std::span<const std::span<std::byte>> destinations,
                                const piece_callback& on_piece, std::stop_token stop) {
  return plane_.fetch(where_.host, where_.port, where_.key, destinations, on_piece, stop);
}

status publish_for_pull(transport::data_plane& plane, const std::string& key,
                        const cached_model& model, const chunk_pool& pool,
                        std::uint64_t puller_chunk) {
  std::vector<std::span<const std::byte>> pieces;
  for (std::size_t i = 0; i < model.segment_count(); ++i)
    for (const auto& p : pull_destinations(model, i, pool.chunk_bytes(), puller_chunk))
      pieces.emplace_back(p);
  return plane.publish(key, std::move(pieces));
}

} // namespace thaw
