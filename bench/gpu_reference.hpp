#pragma once
/// The GPU's own limits, measured in the same run as the figures compared with them
/// (BENCHMARKS.md): the device memory bandwidth of a plain device-to-device cudaMemcpy, the
/// throughput of a plain cuBLAS GEMM, and a pinned host-to-device cudaMemcpy. Built only with
/// the CUDA backend.

#include "gpu/device.hpp"
#include "runtime/common/dtype.hpp"
#include "runtime/common/error.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>

namespace thaw::cuda {
class cuda_device;
}

namespace thaw::bench {

/// Device memory bandwidth in GB/s: the best of `repeats` device-to-device copies of `bytes`
/// on GPU `ordinal`, counting each byte read and written (2 x bytes per copy), as memory
/// bandwidth tests do.
[[nodiscard]] expected<double> device_copy_gbps(int ordinal, std::size_t bytes, int repeats = 5);

/// Dense GEMM throughput in TFLOP/s: the best of `repeats` cuBLAS products of [m x k] by
/// [k x n] in `type` with f32 accumulation (2 m n k flops each) on GPU `ordinal`.
[[nodiscard]] expected<double> gemm_tflops(int ordinal, dtype type, std::int64_t m,
                                           std::int64_t n, std::int64_t k, int repeats = 5);

/// The limit of a load from the DRAM tier to a GPU: one cudaMemcpy of `bytes` from pinned host
/// memory (cudaMallocHost) into device memory, with nothing else to do. Holds both buffers, so
/// that every round times the same copy.
class pinned_h2d_copy {
public:
  /// Allocates both sides and makes one untimed copy (the first pays for mapping the
  /// destination).
  [[nodiscard]] static expected<std::unique_ptr<pinned_h2d_copy>>
  create(cuda::cuda_device& gpu, std::uint64_t bytes);
  ~pinned_h2d_copy();
  pinned_h2d_copy(const pinned_h2d_copy&) = delete;
  pinned_h2d_copy& operator=(const pinned_h2d_copy&) = delete;

  /// One copy's seconds. From pinned memory cudaMemcpy returns when the bytes have landed.
  [[nodiscard]] expected<double> seconds();

private:
  pinned_h2d_copy(cuda::cuda_device& gpu, std::size_t bytes) : gpu_(gpu), bytes_(bytes) {}
  cuda::cuda_device& gpu_;
  std::size_t bytes_;
  void* host_ = nullptr;
  std::unique_ptr<device_buffer> dst_;
};

} // namespace thaw::bench
