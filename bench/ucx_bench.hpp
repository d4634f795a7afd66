#pragma once
/// `thaw bench ucx`: the data plane (transport/data_plane.hpp) against the UCX limit, in one run.
/// A forked server process fills a region from data_plane::allocate_memory and publishes it in
/// segments, and fills a region of the same size allocated by UCX in a plain context of its own
/// (UCX memory of a second context cannot be handed out through the first). The parent then
/// alternates, for each round:
///   raw: plain ucp_get_nbx of the whole raw region in big pieces, all outstanding (UCX's limit);
///   data plane: data_plane::fetch of the published entry (request, pinned RMA reads, release);
///   optionally the same fetch of a copy published from malloc'd, registered memory;
/// into the same pre-touched destination (allocated by the parent's data plane), checking the
/// bytes each time; and, given a checkpoint, the remote tier as a node uses it:
///   remote tier: loader::pull of the checkpoint from the server's DRAM tier (a loader whose
///     pool the server's data plane allocated, the model read in with load_mode::tier_only and
///     published with publish_for_pull) into the parent's DRAM tier, checksums verified, the
///     parent's tier emptied before each round.
/// It reports the medians in GB/s and their ratios to the raw gets, and a one-thread memcpy of
/// the same size for scale.
///
/// Transports are UCX's choice (between two processes of one host: CMA or shared memory); the
/// UCX_TLS in effect, if any, is reported.

#include "runtime/common/error.hpp"

#include <cstddef>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace thaw::bench {

struct ucx_bench_options {
  std::size_t bytes = std::size_t{512} << 20;       ///< the published region
  std::size_t segment_bytes = std::size_t{16} << 20; ///< published segments
  std::size_t piece_bytes = std::size_t{4} << 20;    ///< data_plane gets
  std::size_t pieces_in_flight = 8;                  ///< data_plane gets outstanding
  std::size_t raw_piece_bytes = std::size_t{64} << 20; ///< raw gets
  int rounds = 5;
  /// Also fetch a copy published from malloc'd memory registered with register_memory (the slow
  /// path: UCX-emulated gets), reported separately.
  bool registered = true;
  /// A checkpoint directory: also measure the remote tier's pull of it ("" : not).
  std::string checkpoint;
  std::size_t pool_chunk_bytes = std::size_t{16} << 20; ///< both loaders' pool chunks
  std::function<void(const std::string&)> log; ///< progress lines for a person
};

/// Runs the benchmark; the result is the JSON document `thaw bench ucx --json` prints. Must be
/// called before the process has used UCX (it forks).
[[nodiscard]] expected<nlohmann::json> run_ucx_bench(const ucx_bench_options& options);

/// A readable table of a result.
[[nodiscard]] std::string format_ucx_bench(const nlohmann::json& result);

} // namespace thaw::bench
