#pragma once
/// The GPU's own limits, measured in the same run as the figures compared with them
/// (BENCHMARKS.md): the device memory bandwidth of a plain device-to-device cudaMemcpy and the
/// throughput of a plain cuBLAS GEMM. Built only with the CUDA backend.

#include "runtime/common/dtype.hpp"
#include "runtime/common/error.hpp"

#include <cstddef>
#include <cstdint>

namespace thaw::bench {

/// Device memory bandwidth in GB/s: the best of `repeats` device-to-device copies of `bytes`
/// on GPU `ordinal`, counting each byte read and written (2 x bytes per copy), as memory
/// bandwidth tests do.
[[nodiscard]] expected<double> device_copy_gbps(int ordinal, std::size_t bytes, int repeats = 5);

/// Dense GEMM throughput in TFLOP/s: the best of `repeats` cuBLAS products of [m x k] by
/// [k x n] in `type` with f32 accumulation (2 m n k flops each) on GPU `ordinal`.
[[nodiscard]] expected<double> gemm_tflops(int ordinal, dtype type, std::int64_t m,
                                           std::int64_t n, std::int64_t k, int repeats = 5);

} // namespace thaw::bench
