#include "bench/gpu_reference.hpp"

#include "bench/timing.hpp"
#include "gpu/cuda/cuda_device.hpp"

#include "gpu/cuda/blas.hpp"
#include "gpu/cuda/cuda_check.hpp"

#include <algorithm>
#include <cstring>
#include <memory>

namespace thaw::bench {

namespace {

/// cudaMalloc'd memory, freed on scope exit.
struct device_memory {
  void* p = nullptr;
  ~device_memory() {
    if (p != nullptr)
      cudaFree(p);
  }
};

/// A stream and two events, destroyed on scope exit.
struct timing {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  ~timing() {
    if (start != nullptr)
      cudaEventDestroy(start);
    if (stop != nullptr)
      cudaEventDestroy(stop);
    if (stream != nullptr)
      cudaStreamDestroy(stream);
  }
  status init() {
    THAW_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    THAW_CUDA_CHECK(cudaEventCreate(&start));
    THAW_CUDA_CHECK(cudaEventCreate(&stop));
    return {};
  }
  /// Seconds between the two events once `stop` has completed.
  expected<double> seconds() {
    THAW_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    THAW_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return ms / 1e3;
  }
};

} // namespace

expected<double> device_copy_gbps(int ordinal, std::size_t bytes, int repeats) {
  THAW_CUDA_CHECK(cudaSetDevice(ordinal));
  device_memory a, b;
  THAW_CUDA_CHECK(cudaMalloc(&a.p, bytes));
  THAW_CUDA_CHECK(cudaMalloc(&b.p, bytes));
  THAW_CUDA_CHECK(cudaMemset(a.p, 1, bytes));
  // cudaMemset runs on the legacy stream, which the non-blocking timing stream does not wait for.
  THAW_CUDA_CHECK(cudaDeviceSynchronize());
  timing t;
  THAW_TRY(t.init());
  double best = 1e30;
  for (int r = 0; r < std::max(repeats, 1) + 1; ++r) { // the first copy warms up
    THAW_CUDA_CHECK(cudaEventRecord(t.start, t.stream));
    THAW_CUDA_CHECK(cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice, t.stream));
    THAW_CUDA_CHECK(cudaEventRecord(t.stop, t.stream));
    THAW_ASSIGN(const double s, t.seconds());
    if (r > 0)
      best = std::min(best, s);
  }
  return 2.0 * static_cast<double>(bytes) / best / 1e9;
}

expected<double> gemm_tflops(int ordinal, dtype type, std::int64_t m, std::int64_t n,
                             std::int64_t k, int repeats) {
  THAW_CUDA_CHECK(cudaSetDevice(ordinal));
  const auto esz = static_cast<std::size_t>(dtype_size(type));
  device_memory a, b, c;
  THAW_CUDA_CHECK(cudaMalloc(&a.p, static_cast<std::size_t>(m * k) * esz));
  THAW_CUDA_CHECK(cudaMalloc(&b.p, static_cast<std::size_t>(n * k) * esz));
  THAW_CUDA_CHECK(cudaMalloc(&c.p, static_cast<std::size_t>(m * n) * sizeof(float)));
  // Bytes of 0x3c: small finite numbers in f32, f16 and bf16 alike.
  THAW_CUDA_CHECK(cudaMemset(a.p, 0x3c, static_cast<std::size_t>(m * k) * esz));
  THAW_CUDA_CHECK(cudaMemset(b.p, 0x3c, static_cast<std::size_t>(n * k) * esz));
  THAW_CUDA_CHECK(cudaDeviceSynchronize()); // as above: the GEMM must not race the memsets
  timing t;
  THAW_TRY(t.init());
  THAW_ASSIGN(auto blas, cuda::blas::create(t.stream));
  double best = 1e30;
  for (int r = 0; r < std::max(repeats, 1) + 1; ++r) {
    THAW_CUDA_CHECK(cudaEventRecord(t.start, t.stream));
    THAW_TRY(blas.gemm(a.p, b.p, type, m, n, k, static_cast<float*>(c.p)));
    THAW_CUDA_CHECK(cudaEventRecord(t.stop, t.stream));
    THAW_ASSIGN(const double s, t.seconds());
    if (r > 0)
      best = std::min(best, s);
  }
  return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) / best /
         1e12;
}

expected<std::unique_ptr<pinned_h2d_copy>> pinned_h2d_copy::create(cuda::cuda_device& gpu,
                                                                   std::uint64_t bytes) {
  std::unique_ptr<pinned_h2d_copy> r{new pinned_h2d_copy(gpu, static_cast<std::size_t>(bytes))};
  THAW_TRY(gpu.make_current());
  THAW_CUDA_CHECK(cudaMallocHost(&r->host_, r->bytes_));
  std::memset(r->host_, 0x5a, r->bytes_);
  THAW_ASSIGN(r->dst_, gpu.allocate(r->bytes_));
  THAW_TRY(r->seconds());
  return r;
}

pinned_h2d_copy::~pinned_h2d_copy() {
  if (host_ != nullptr)
    (void)cudaFreeHost(host_);
}

expected<double> pinned_h2d_copy::seconds() {
  THAW_TRY(gpu_.make_current());
  const auto start = clock::now();
  THAW_CUDA_CHECK(cudaMemcpy(dst_->data(), host_, bytes_, cudaMemcpyHostToDevice));
  return since(start);
}

} // namespace thaw::bench
