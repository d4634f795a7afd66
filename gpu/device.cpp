#include "gpu/device.hpp"

namespace thaw {

const char* to_string(device_kind k) noexcept {
  switch (k) {
    case device_kind::host: return "host";
    case device_kind::cuda: return "cuda";
  }
  return "?";
}

} // namespace thaw
