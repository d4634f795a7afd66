#include "gpu/cuda/cuda_check.hpp"

#include <string>

namespace thaw::cuda {

error runtime_error(cudaError_t e, std::string_view call, const char* file, int line) {
  const errc code = e == cudaErrorMemoryAllocation ? errc::resource_exhausted : errc::device_error;
  return make_error(code, std::string(call) + " at " + file + ":" + std::to_string(line) + ": " +
                              cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

} // namespace thaw::cuda
