#include "runtime/common/dtype.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <gtest/gtest.h>
#include <limits>
#include <vector>

namespace thaw {
namespace {

// Independent references: round-to-nearest-even via long double arithmetic on the exact value.
std::uint16_t ref_to_bf16(float v) {
  if (std::isnan(v))
    return 0x7fc0;
  // Enumerate the two bf16 neighbours and pick the nearest (ties to even mantissa).
  auto bits = std::bit_cast<std::uint32_t>(v);
  std::uint16_t lo = static_cast<std::uint16_t>(bits >> 16);
  std::uint16_t hi = static_cast<std::uint16_t>(lo + 1);
  long double flo = bf16_to_f32(lo), fhi = bf16_to_f32(hi);
  long double dlo = std::fabs(static_cast<long double>(v) - flo);
  long double dhi = std::fabs(fhi - static_cast<long double>(v));
  if ((bits & 0xffff) == 0)
    return lo;
  if (dlo < dhi)
    return lo;
  if (dhi < dlo)
    return hi;
  return (lo & 1) ? hi : lo;
}

TEST(Dtype, Names) {
  EXPECT_EQ(*parse_dtype("bf16"), dtype::bf16);
  EXPECT_EQ(*parse_dtype("F16"), dtype::f16);
  EXPECT_EQ(*parse_dtype("float32"), dtype::f32);
  auto bad = parse_dtype("int8");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.err().code, errc::unsupported);
  EXPECT_NE(bad.err().message.find("int8"), std::string::npos);
  EXPECT_EQ(safetensors_name(dtype::bf16), "BF16");
  EXPECT_EQ(dtype_size(dtype::f32), 4u);
  EXPECT_EQ(dtype_size(dtype::bf16), 2u);
}

TEST(Dtype, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly between 0x3f80 and 0x3f81: ties to even -> 0x3f80.
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);
  // 0x3f818000 is between 0x3f81 and 0x3f82: ties to even -> 0x3f82.
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  std::uint32_t state = 12345;
  for (int i = 0; i < 200000; ++i) {
    state = state * 1664525u + 1013904223u;
    float v = std::bit_cast<float>(state & 0xbf7fffffu); // finite values of both signs
    ASSERT_EQ(f32_to_bf16(v), ref_to_bf16(v)) << "bits " << std::hex << (state & 0xbf7fffffu);
  }
}

TEST(Dtype, F16RoundTripsEveryHalf) {
  // Every finite half converts to float exactly and back to the same bits.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    std::uint16_t v = static_cast<std::uint16_t>(h);
    if ((v & 0x7c00) == 0x7c00 && (v & 0x3ff) != 0)
      continue; // NaN payloads are not preserved bit for bit
    ASSERT_EQ(f32_to_f16(f16_to_f32(v)), v) << std::hex << h;
  }
}

TEST(Dtype, F16KnownValues) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24)); // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00); // overflow -> inf
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000); // tie -> even (zero)
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  // 1 + 2^-11 is exactly halfway between 1.0 and the next half: ties to even -> 1.0.
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
}

TEST(Dtype, ConvertElements) {
  std::vector<float> src = {0.5f, -1.25f, 3.0f, 1e-3f};
  std::vector<std::uint16_t> bf(4), hf(4);
  std::vector<float> back(4);
  convert_elements(dtype::f32, src.data(), dtype::bf16, bf.data(), 4);
  convert_elements(dtype::bf16, bf.data(), dtype::f16, hf.data(), 4);
  convert_elements(dtype::f16, hf.data(), dtype::f32, back.data(), 4);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(back[i], src[i]);
  EXPECT_EQ(hf[3], f32_to_f16(bf16_to_f32(bf[3])));
}

TEST(Dtype, LoadElementReadsEachType) {
  const float f[2] = {1.5f, -2.25f};
  const std::uint16_t b[2] = {f32_to_bf16(1.5f), f32_to_bf16(-2.25f)};
  const std::uint16_t h[2] = {f32_to_f16(1.5f), f32_to_f16(-2.25f)};
  EXPECT_EQ(load_element(dtype::f32, f, 1), -2.25f);
  EXPECT_EQ(load_element(dtype::bf16, b, 1), -2.25f);
  EXPECT_EQ(load_element(dtype::f16, h, 0), 1.5f);
}

} // namespace
} // namespace thaw
