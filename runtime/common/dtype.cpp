#include "runtime/common/dtype.hpp"

#include <bit>
#include <cstring>
#include <string>

namespace thaw {

std::string_view to_string(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "f32";
    case dtype::f16: return "f16";
    case dtype::bf16: return "bf16";
  }
  return "?";
}

std::string_view safetensors_name(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "F32";
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
  }
  return "?";
}

expected<dtype> parse_dtype(std::string_view text) {
  if (text == "f32" || text == "fp32" || text == "float32" || text == "F32")
    return dtype::f32;
  if (text == "f16" || text == "fp16" || text == "float16" || text == "F16")
    return dtype::f16;
  if (text == "bf16" || text == "bfloat16" || text == "BF16")
    return dtype::bf16;
  return make_error(errc::unsupported,
                    "unsupported dtype '" + std::string{text} + "' (expected f32, f16 or bf16)");
}

float bf16_to_f32(std::uint16_t v) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(v) << 16);
}

std::uint16_t f32_to_bf16(float v) noexcept {
  auto bits = std::bit_cast<std::uint32_t>(v);
  if ((bits & 0x7fffffffu) > 0x7f800000u) // NaN: keep it a (quiet) NaN
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  std::uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

float f16_to_f32(std::uint16_t v) noexcept {
  std::uint32_t sign = (v & 0x8000u) << 16;
  std::uint32_t exp = (v >> 10) & 0x1fu;
  std::uint32_t mant = v & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else { // subnormal: normalise
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    bits = sign | (static_cast<std::uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

std::uint16_t f32_to_f16(float v) noexcept {
  auto bits = std::bit_cast<std::uint32_t>(v);
  auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  std::uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) // NaN
    return static_cast<std::uint16_t>(sign | 0x7e00u);
  if (abs >= 0x477ff000u) // rounds to >= 65520: infinity
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (abs < 0x38800000u) { // below the smallest normal half (2^-14): subnormal or zero
    if (abs < 0x33000000u) // below half of the smallest subnormal (2^-25): zero
      return sign;
    std::uint32_t exp = abs >> 23;
    std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    std::uint32_t shift = 126 - exp; // 14..24
    std::uint32_t half = mant >> shift;
    std::uint32_t rest = mant & ((1u << shift) - 1);
    std::uint32_t midpoint = 1u << (shift - 1);
    if (rest > midpoint || (rest == midpoint && (half & 1u)))
      ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  std::uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

void convert_elements(dtype from, const void* src, dtype to, void* dst,
                      std::size_t count) noexcept {
  if (from == to) {
    std::memcpy(dst, src, count * dtype_size(from));
    return;
  }
  auto load = [&](std::size_t i) -> float {
    switch (from) {
      case dtype::f32: return static_cast<const float*>(src)[i];
      case dtype::f16: return f16_to_f32(static_cast<const std::uint16_t*>(src)[i]);
      case dtype::bf16: return bf16_to_f32(static_cast<const std::uint16_t*>(src)[i]);
    }
    return 0.0f;
  };
  for (std::size_t i = 0; i < count; ++i) {
    float v = load(i);
    switch (to) {
      case dtype::f32: static_cast<float*>(dst)[i] = v; break;
      case dtype::f16: static_cast<std::uint16_t*>(dst)[i] = f32_to_f16(v); break;
      case dtype::bf16: static_cast<std::uint16_t*>(dst)[i] = f32_to_bf16(v); break;
    }
  }
}

float load_element(dtype t, const void* src, std::size_t i) noexcept {
  switch (t) {
  case dtype::f32: return static_cast<const float*>(src)[i];
  case dtype::bf16: return bf16_to_f32(static_cast<const std::uint16_t*>(src)[i]);
  case dtype::f16: return f16_to_f32(static_cast<const std::uint16_t*>(src)[i]);
  }
  return 0.0f;
}

} // namespace thaw
