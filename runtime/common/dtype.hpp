#pragma once
/// Element types of stored weights and their conversions. Conversions to the narrower types
/// round to nearest, ties to even (as PyTorch's `.to(torch.bfloat16)` / `.half()` do); NaN stays
/// NaN, overflow becomes infinity.

#include "runtime/common/error.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace thaw {

enum class dtype : std::uint8_t { f32 = 0, f16 = 1, bf16 = 2 };

/// Bytes per element.
[[nodiscard]] constexpr std::size_t dtype_size(dtype t) noexcept {
  return t == dtype::f32 ? 4 : 2;
}

/// Lower-case name: "f32", "f16", "bf16".
[[nodiscard]] std::string_view to_string(dtype t) noexcept;

/// Safetensors' name: "F32", "F16", "BF16".
[[nodiscard]] std::string_view safetensors_name(dtype t) noexcept;

/// Parses "f32"/"fp32"/"float32"/"F32", "f16"/"fp16"/"float16"/"F16", "bf16"/"bfloat16"/"BF16".
/// Anything else is `unsupported`, naming the text.
[[nodiscard]] expected<dtype> parse_dtype(std::string_view text);

[[nodiscard]] float bf16_to_f32(std::uint16_t v) noexcept;
[[nodiscard]] float f16_to_f32(std::uint16_t v) noexcept;
[[nodiscard]] std::uint16_t f32_to_bf16(float v) noexcept;
[[nodiscard]] std::uint16_t f32_to_f16(float v) noexcept;

/// Element `i` of an array of type `t`, as f32. Out of line on purpose: kernels compiled for
/// different instruction sets share it without one copy's instructions leaking into another.
[[nodiscard]] float load_element(dtype t, const void* src, std::size_t i) noexcept;

/// Converts `count` elements from `src` (type `from`) to `dst` (type `to`). Same type: a copy.
void convert_elements(dtype from, const void* src, dtype to, void* dst, std::size_t count) noexcept;

} // namespace thaw
