#pragma once
/// Tensor parallelism across the GPUs of one node through NCCL (ARCHITECTURE.md section 9).
///
/// A group of `world_size` ranks, one per GPU, made together in one process (ncclCommInitAll);
/// each rank's model runner is driven by a thread of its own and calls all_reduce in the same
/// order. The runner splits a layer Megatron-style:
///   column-parallel (q, k, v, gate, up): rank r computes rows [r n / N, (r + 1) n / N) of the
///     output, i.e. heads [r NH / N, ...) and KV heads [r NKV / N, ...); no communication;
///   row-parallel (o, down): rank r multiplies its slice of the inputs by the matching columns
///     of W (a strided view: lda = the full row), giving a partial sum of the whole output, and
///     all_reduce adds the partial sums before the residual add.
/// At world size 1 every split is the whole matrix and all_reduce is NCCL's own single-rank
/// reduction: the same code path, exercised on one GPU.

#include "runtime/common/error.hpp"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace thaw::cuda {

class communicator {
public:
  /// One communicator per GPU in `devices` (ordinals), ranks in that order. `invalid_argument`
  /// for an empty list or a repeated ordinal; NCCL's errors as device_error naming the call.
  [[nodiscard]] static expected<std::vector<std::unique_ptr<communicator>>>
  create_group(const std::vector<int>& devices);

  ~communicator();
  communicator(const communicator&) = delete;
  communicator& operator=(const communicator&) = delete;

  [[nodiscard]] int rank() const noexcept { return rank_; }
  [[nodiscard]] int world_size() const noexcept { return world_size_; }
  [[nodiscard]] int device() const noexcept { return device_; }

  /// Sums `n` floats in place across the group, enqueued on `stream` (this rank's GPU must be
  /// current). Every rank must make the same calls in the same order.
  [[nodiscard]] status all_reduce(float* data, std::size_t n, cudaStream_t stream);

  /// [begin, end) of `n` items that this rank owns in a split into world_size() equal parts;
  /// `n` must be divisible by the world size (the runner checks heads and widths up front).
  [[nodiscard]] std::int64_t share_begin(std::int64_t n) const noexcept {
    return n / world_size_ * rank_;
  }
  [[nodiscard]] std::int64_t share(std::int64_t n) const noexcept { return n / world_size_; }

  struct handle; ///< the NCCL communicator

private:
  communicator(std::unique_ptr<handle> h, int rank, int world_size, int device);
  std::unique_ptr<handle> handle_;
  int rank_ = 0;
  int world_size_ = 1;
  int device_ = 0;
};

} // namespace thaw::cuda
