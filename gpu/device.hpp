#pragma once
/// The device abstraction (ggml-backend style, CONVENTIONS.md rule 5): what the loader and the
/// engine need from a place that holds weights. The host device implements it with ordinary
/// memory and memcpy worker threads; the CUDA device (gpu/cuda) with device memory and streams.
/// No CAF, no actors here.

#include "runtime/common/error.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace thaw {

enum class device_kind : std::uint8_t { host = 0, cuda = 1 };
[[nodiscard]] const char* to_string(device_kind k) noexcept;

/// A block of device memory. Destroying it frees the memory.
class device_buffer {
public:
  virtual ~device_buffer() = default;
  /// Start of the buffer in the device's address space (host: a CPU pointer).
  [[nodiscard]] virtual void* data() noexcept = 0;
  [[nodiscard]] virtual std::size_t size() const noexcept = 0;
};

/// Asynchronous host-to-device copies on one or more lanes (host: worker threads; CUDA:
/// streams). Copies on different lanes may run concurrently and complete out of order.
class copy_engine {
public:
  using completion = std::function<void(status)>;
  virtual ~copy_engine() = default;
  /// Copies `n` bytes from host memory `src` to `dst` at `offset`. `src` must stay valid and
  /// unchanged until `done` runs. `done` is called exactly once, from an engine thread, with the
  /// copy's result; a copy outside the buffer fails with invalid_argument without copying.
  virtual void submit(device_buffer& dst, std::uint64_t offset, const void* src, std::size_t n,
                      completion done) = 0;
  /// Blocks until every submitted copy has completed (and its `done` has returned).
  virtual void drain() = 0;
};

class device {
public:
  virtual ~device() = default;
  [[nodiscard]] virtual device_kind kind() const noexcept = 0;
  /// "host", "cuda:0 (NVIDIA H100 80GB HBM3)".
  [[nodiscard]] virtual std::string name() const = 0;
  /// Bytes of memory this device may hand out (host: configured limit or physical memory).
  [[nodiscard]] virtual std::uint64_t memory_bytes() const noexcept = 0;
  /// Allocates `bytes` of device memory, 4096-byte aligned; `resource_exhausted` when it does
  /// not fit.
  [[nodiscard]] virtual expected<std::unique_ptr<device_buffer>> allocate(std::size_t bytes) = 0;
  /// A copy engine with `lanes` concurrent lanes (at least 1).
  [[nodiscard]] virtual std::unique_ptr<copy_engine> make_copy_engine(int lanes) = 0;
  /// Optional: registers host memory for fast transfers (CUDA: cudaHostRegister, making the
  /// loader's chunk pool pinned). The host device needs nothing and returns success.
  [[nodiscard]] virtual status register_host_memory(void* ptr, std::size_t bytes) {
    (void)ptr;
    (void)bytes;
    return {};
  }
  /// Optional: undoes register_host_memory.
  virtual void unregister_host_memory(void* ptr) noexcept { (void)ptr; }
};

} // namespace thaw
