#pragma once
/// The CUDA device behind gpu/'s interface (gpu/device.hpp): device memory from a caching
/// allocator (weights and KV blocks), copy engines whose lanes are CUDA streams, and
/// registration of the loader's chunk pool as pinned memory (cudaHostRegister), so that every
/// host-to-device copy is a DMA from pinned memory.
///
/// Headers of the CUDA toolkit only: no CAF, no actors. On a machine without a GPU or driver
/// (CI) everything here compiles and links; device_count() is 0 and make_cuda_device fails with
/// an error that says why.

#include "gpu/device.hpp"

#include <cstdint>
#include <memory>
#include <string>

namespace thaw::cuda {

/// CUDA devices this process can use; 0 when there is no driver or no GPU.
[[nodiscard]] int device_count() noexcept;

/// Why no device can be used ("CUDA driver: cudaErrorNoDevice (no CUDA-capable device is
/// detected)"), or "" when device_count() > 0. Tests print it when they skip.
[[nodiscard]] std::string unavailable_reason();

struct device_options {
  int ordinal = 0; ///< which GPU (cudaSetDevice)
  /// The most bytes buffers may hold at once; 0: the memory free when the device is made, less
  /// a reserve of 5 % (at least 512 MiB) for cuBLAS workspaces, graphs and the driver.
  std::uint64_t memory_limit = 0;
};

/// One GPU. Thread-safe: allocate, make_copy_engine and register_host_memory may be called from
/// any thread (each makes the device current on the calling thread first).
class cuda_device final : public device {
public:
  ~cuda_device() override;
  cuda_device(const cuda_device&) = delete;
  cuda_device& operator=(const cuda_device&) = delete;

  [[nodiscard]] device_kind kind() const noexcept override { return device_kind::cuda; }
  /// "cuda:0 (NVIDIA H100 80GB HBM3)".
  [[nodiscard]] std::string name() const override;
  /// The memory limit (device_options::memory_limit or the default above).
  [[nodiscard]] std::uint64_t memory_bytes() const noexcept override;

  /// Device memory, 4096-byte aligned, contents unspecified. Sizes are rounded up (to 2 MiB for
  /// 1 MiB and more, else to 4 KiB) and freed blocks are kept per rounded size and handed out
  /// again, so a model loaded again (or KV blocks re-made) costs no cudaMalloc. When the limit or
  /// the GPU is full, the kept blocks are released and the allocation retried once; then
  /// `resource_exhausted`, naming the request, the bytes held and the limit.
  [[nodiscard]] expected<std::unique_ptr<device_buffer>> allocate(std::size_t bytes) override;

  /// An engine of max(lanes, 1) non-blocking streams. submit() issues cudaMemcpyAsync on the
  /// next lane (round robin) and records an event behind it; a completion thread waits for each
  /// lane's events in order and runs `done` when its copy has finished, so the loader recycles
  /// a pinned chunk as soon as its bytes are on the device. A copy whose source is not pinned
  /// still works (the driver stages it).
  [[nodiscard]] std::unique_ptr<copy_engine> make_copy_engine(int lanes) override;

  /// cudaHostRegister (portable, mapped): the loader's chunk pool becomes pinned memory.
  [[nodiscard]] status register_host_memory(void* ptr, std::size_t bytes) override;
  void unregister_host_memory(void* ptr) noexcept override;

  [[nodiscard]] int ordinal() const noexcept;
  /// Makes this device current on the calling thread (cudaSetDevice).
  [[nodiscard]] status make_current() const;
  /// Bytes held by live buffers (after rounding).
  [[nodiscard]] std::uint64_t allocated_bytes() const noexcept;
  /// Bytes of freed blocks kept for reuse.
  [[nodiscard]] std::uint64_t cached_bytes() const noexcept;
  /// Frees every kept block (cudaFree).
  void trim() noexcept;

  struct state; ///< allocator, limits and properties; shared with the buffers it hands out

private:
  friend expected<std::unique_ptr<cuda_device>> make_cuda_device(const device_options&);
  explicit cuda_device(std::shared_ptr<state> s);
  std::shared_ptr<state> state_;
};

/// Opens GPU `opt.ordinal`: `unavailable`-style `device_error` naming the reason when there is no
/// driver or no such GPU; `invalid_argument` for a negative ordinal or a limit above the GPU's
/// memory.
[[nodiscard]] expected<std::unique_ptr<cuda_device>> make_cuda_device(const device_options& opt);

} // namespace thaw::cuda
