#pragma once
/// The host device: "device memory" is ordinary process memory and host-to-device copies are
/// memcpy on worker threads. It lets every layer above gpu/ (the loader, the engine) run and be
/// tested on a machine without a GPU, with the same asynchronous interface as the CUDA device.
///
/// Memory is mapped anonymously, 4096-byte aligned, and buffers of 2 MiB or more are 2 MiB
/// aligned and advised for transparent huge pages: on virtual machines a first touch of a 4 KiB
/// page can cost more than copying it, and huge pages cut the number of faults by 512.
///
/// For the same reason freed buffers are kept (up to a quarter of the limit) and handed out
/// again for an allocation of the same rounded size, as CUDA caching allocators do: loading a
/// model again, or another of the same size, then writes to memory that is already mapped.

#include "gpu/device.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace thaw {

/// Physical memory of this machine in bytes (sysconf); 0 when it cannot be determined.
[[nodiscard]] std::uint64_t physical_memory_bytes() noexcept;

class host_device final : public device {
public:
  /// `memory_limit`: the most bytes that buffers may hold at once; 0 means physical memory.
  explicit host_device(std::uint64_t memory_limit = 0);
  ~host_device() override;
  host_device(const host_device&) = delete;
  host_device& operator=(const host_device&) = delete;

  [[nodiscard]] device_kind kind() const noexcept override { return device_kind::host; }
  [[nodiscard]] std::string name() const override { return "host"; }
  [[nodiscard]] std::uint64_t memory_bytes() const noexcept override;

  /// Maps `bytes` (rounded up to the page or huge-page size), 4096-byte aligned, contents
  /// unspecified. `resource_exhausted` when the bytes held would exceed the limit, naming both;
  /// `invalid_argument` for 0 bytes; `device_error` when the kernel refuses the mapping.
  [[nodiscard]] expected<std::unique_ptr<device_buffer>> allocate(std::size_t bytes) override;

  /// An engine with max(lanes, 1) worker threads, each running one memcpy at a time.
  [[nodiscard]] std::unique_ptr<copy_engine> make_copy_engine(int lanes) override;

  /// Bytes currently held by live buffers (after rounding); buffers may outlive the device.
  [[nodiscard]] std::uint64_t allocated_bytes() const noexcept;
  /// Bytes of freed buffers kept for reuse.
  [[nodiscard]] std::uint64_t retained_bytes() const noexcept;
  /// Unmaps every retained buffer.
  void trim() noexcept;

  struct memory; ///< the accounting and the retained mappings; shared with the buffers

private:
  std::shared_ptr<memory> memory_;
};

} // namespace thaw
