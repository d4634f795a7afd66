#include "runtime/common/error.hpp"

#include <gtest/gtest.h>

namespace thaw {
namespace {

expected<int> half(int v) {
  if (v % 2 != 0)
    return make_error(errc::invalid_argument, std::to_string(v) + " is odd");
  return v / 2;
}

expected<int> quarter(int v) {
  THAW_ASSIGN(int h, half(v));
  THAW_ASSIGN(int q, half(h));
  return q;
}

status check_even(int v) {
  THAW_TRY(half(v));
  return {};
}

TEST(Error, ExpectedCarriesValueOrError) {
  auto ok = quarter(8);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 2);
  auto bad = quarter(6);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.err().code, errc::invalid_argument);
  EXPECT_EQ(bad.err().message, "3 is odd");
  EXPECT_EQ(bad.err().to_string(), "invalid_argument: 3 is odd");
}

TEST(Error, TryPropagatesIntoStatus) {
  EXPECT_TRUE(check_even(4));
  auto s = check_even(5);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::invalid_argument);
}

TEST(Error, WithContextKeepsCode) {
  auto e = with_context(make_error(errc::corrupt, "chunk 3 checksum"), "data-00000.bin");
  EXPECT_EQ(e.code, errc::corrupt);
  EXPECT_EQ(e.message, "data-00000.bin: chunk 3 checksum");
}

TEST(Error, EveryCodeHasAName) {
  for (int c = 0; c <= static_cast<int>(errc::internal); ++c)
    EXPECT_NE(to_string(static_cast<errc>(c)), "unknown");
}

} // namespace
} // namespace thaw
