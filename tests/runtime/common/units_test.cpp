#include "runtime/common/units.hpp"

#include <gtest/gtest.h>

namespace thaw {
namespace {

TEST(Units, ParseBytes) {
  EXPECT_EQ(*parse_bytes("4096"), 4096u);
  EXPECT_EQ(*parse_bytes("16MiB"), 16u << 20);
  EXPECT_EQ(*parse_bytes("2 GB"), 2'000'000'000u);
  EXPECT_EQ(*parse_bytes("1.5kib"), 1536u);
  EXPECT_FALSE(parse_bytes("MiB"));
  EXPECT_FALSE(parse_bytes("3 parsecs"));
}

TEST(Units, Format) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(3u << 29), "1.50 GiB");
  EXPECT_EQ(format_rate(1.5e9), "1.50 GB/s");
  EXPECT_DOUBLE_EQ(*parse_seconds("250ms"), 0.25);
  EXPECT_DOUBLE_EQ(*parse_seconds("2h"), 7200.0);
  EXPECT_FALSE(parse_seconds("soon"));
}

} // namespace
} // namespace thaw
