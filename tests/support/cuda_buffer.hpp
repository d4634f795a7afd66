#pragma once
/// Device buffers for GPU tests: RAII over cudaMalloc, copies checked call by call. A failed CUDA
/// call throws, which GoogleTest reports as a failure of the running test naming the call.

#include "runtime/common/dtype.hpp"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace thaw::testing {

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                             cudaGetErrorString(e) + ")");
}

/// n elements of T in device memory.
template <class T>
class device_buffer {
public:
  explicit device_buffer(std::size_t n) : n_(n) {
    cuda_ok(cudaMalloc(reinterpret_cast<void**>(&p_), (n ? n : 1) * sizeof(T)), "cudaMalloc");
  }
  explicit device_buffer(const std::vector<T>& host) : device_buffer(host.size()) { upload(host); }
  ~device_buffer() { cudaFree(p_); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;

  [[nodiscard]] T* get() const noexcept { return p_; }
  [[nodiscard]] std::size_t size() const noexcept { return n_; }

  void upload(const std::vector<T>& host) {
    if (host.size() != n_)
      throw std::runtime_error("device_buffer::upload: size mismatch");
    cuda_ok(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  [[nodiscard]] std::vector<T> download() const {
    std::vector<T> host(n_);
    cuda_ok(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return host;
  }

private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

/// Waits for the default stream and turns an asynchronous kernel fault into a test failure.
inline void cuda_sync() { cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

} // namespace thaw::testing
