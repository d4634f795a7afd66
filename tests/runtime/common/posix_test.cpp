#include "runtime/common/posix.hpp"

#include "tests/support/temp_dir.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>

namespace thaw {
namespace {

TEST(Posix, MissingFileIsNotFoundAndNamesThePath) {
  testing::temp_dir dir;
  auto fd = open_file(dir / "nope.bin", O_RDONLY);
  ASSERT_FALSE(fd);
  EXPECT_EQ(fd.err().code, errc::not_found);
  EXPECT_NE(fd.err().message.find("nope.bin"), std::string::npos) << fd.err().message;
}

TEST(Posix, ShortReadIsTruncated) {
  testing::temp_dir dir;
  ASSERT_TRUE(write_text_file(dir / "f", "hello"));
  auto fd = open_file(dir / "f", O_RDONLY);
  ASSERT_TRUE(fd);
  char buf[16];
  auto s = pread_full(fd->get(), buf, sizeof buf, 0, dir / "f");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.err().code, errc::corrupt);
  EXPECT_NE(s.err().message.find("truncated"), std::string::npos);
  EXPECT_EQ(*read_text_file(dir / "f"), "hello");
}

TEST(Posix, PublishDirRefusesToReplace) {
  testing::temp_dir dir;
  auto target = dir / "ckpt";
  auto tmp = make_temp_dir(target);
  ASSERT_TRUE(tmp);
  ASSERT_TRUE(write_text_file(*tmp / "a", "1"));
  ASSERT_TRUE(publish_dir(*tmp, target));
  EXPECT_EQ(*read_text_file(target / "a"), "1");
  auto tmp2 = make_temp_dir(target);
  ASSERT_TRUE(tmp2);
  auto again = publish_dir(*tmp2, target);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.err().code, errc::already_exists);
  EXPECT_EQ(*read_text_file(target / "a"), "1");
}

} // namespace
} // namespace thaw
