#pragma once
/// Plain UCX RMA reads with no thaw protocol on top: the reference `thaw bench ucx` measures
/// data_plane::fetch against (bench/ucx_bench.hpp). One process holds a `raw_get_target` (a
/// region mapped for RMA and a worker), the other a `raw_get_reader` that connects to it from
/// the target's `connection_blob` (worker address, rkey, base and size) and reads the whole
/// region with big ucp_get_nbx calls, all outstanding at once. The target's region is allocated
/// by UCX (shared memory), like data_plane::allocate_memory's.

#include "runtime/common/error.hpp"

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

namespace thaw::bench {

class raw_get_target {
public:
  /// Allocates a region of `bytes` for RMA in a context and worker of its own.
  [[nodiscard]] static expected<std::unique_ptr<raw_get_target>> start(std::size_t bytes);
  ~raw_get_target();

  /// The region, for the caller to fill.
  [[nodiscard]] std::span<std::byte> region() const;

  /// What a reader needs to connect, as bytes to hand over (a pipe).
  [[nodiscard]] std::vector<std::byte> connection_blob() const;

  /// Progresses the worker (sleeping on its event fd) until `fd` becomes readable.
  [[nodiscard]] status serve_until_readable(int fd);

  struct state;

private:
  explicit raw_get_target(std::unique_ptr<state> s);
  std::unique_ptr<state> state_;
};

class raw_get_reader {
public:
  /// Connects to the target described by `blob`; reads will land in `destination`, which must
  /// be at least as large as the target's region.
  [[nodiscard]] static expected<std::unique_ptr<raw_get_reader>> connect(
      std::span<const std::byte> blob, std::span<std::byte> destination);
  ~raw_get_reader();

  /// Reads the whole region in `piece_bytes` gets, all posted before waiting; returns seconds.
  [[nodiscard]] expected<double> read_all(std::size_t piece_bytes);

  struct state;

private:
  explicit raw_get_reader(std::unique_ptr<state> s);
  std::unique_ptr<state> state_;
};

} // namespace thaw::bench
