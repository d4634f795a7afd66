#include "gpu/cuda/communicator.hpp"

#include "gpu/cuda/cuda_check.hpp"

#if THAW_HAVE_NCCL
#include <nccl.h>
#endif

#include <algorithm>
#include <string>

namespace thaw::cuda {

#if THAW_HAVE_NCCL

struct communicator::handle {
  ncclComm_t comm = nullptr;
  ~handle() {
    if (comm != nullptr)
      ncclCommDestroy(comm);
  }
};

namespace {

error nccl_error(ncclResult_t r, const char* call, const char* file, int line) {
  return make_error(errc::device_error, std::string(call) + " at " + file + ":" +
                                            std::to_string(line) + ": " + ncclGetErrorString(r));
}

} // namespace

#define THAW_NCCL_CHECK(call)                                                                      \
  do {                                                                                             \
    if (const ncclResult_t thaw_r_ = (call); thaw_r_ != ncclSuccess)                               \
      return ::thaw::unexpected(nccl_error(thaw_r_, #call, __FILE__, __LINE__));                   \
  } while (false)

communicator::communicator(std::unique_ptr<handle> h, int rank, int world_size, int device)
    : handle_(std::move(h)), rank_(rank), world_size_(world_size), device_(device) {}

communicator::~communicator() = default;

expected<std::vector<std::unique_ptr<communicator>>>
communicator::create_group(const std::vector<int>& devices) {
  if (devices.empty())
    return make_error(errc::invalid_argument, "communicator: no GPUs given");
  auto sorted = devices;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end() || sorted.front() < 0)
    return make_error(errc::invalid_argument,
                      "communicator: GPU ordinals must be distinct and >= 0");
  int count = 0;
  THAW_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (sorted.back() >= count)
    return make_error(errc::invalid_argument, "communicator: GPU " + std::to_string(sorted.back()) +
                                                  " does not exist (" + std::to_string(count) +
                                                  " visible)");
  std::vector<ncclComm_t> comms(devices.size());
  THAW_NCCL_CHECK(ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data()));
  std::vector<std::unique_ptr<communicator>> out;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    auto h = std::make_unique<handle>();
    h->comm = comms[i];
    out.push_back(std::unique_ptr<communicator>(new communicator(
        std::move(h), static_cast<int>(i), static_cast<int>(devices.size()), devices[i])));
  }
  return out;
}

status communicator::all_reduce(float* data, std::size_t n, cudaStream_t stream) {
  THAW_NCCL_CHECK(ncclAllReduce(data, data, n, ncclFloat32, ncclSum, handle_->comm, stream));
  return {};
}

#else // built without NCCL: no group can be made, so no communicator exists to call.

struct communicator::handle {};

communicator::communicator(std::unique_ptr<handle> h, int rank, int world_size, int device)
    : handle_(std::move(h)), rank_(rank), world_size_(world_size), device_(device) {}

communicator::~communicator() = default;

expected<std::vector<std::unique_ptr<communicator>>>
communicator::create_group(const std::vector<int>&) {
  return make_error(errc::unsupported, "communicator: thaw was built without NCCL");
}

status communicator::all_reduce(float*, std::size_t, cudaStream_t) {
  return make_error(errc::unsupported, "communicator: thaw was built without NCCL");
}

#endif

} // namespace thaw::cuda
