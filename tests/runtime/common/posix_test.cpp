#include "runtime/common/posix.hpp"

#include "tests/support/temp_dir.hpp"

#include <fcntl.h>
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace thaw {
namespace {

TEST(Posix, SocketAddressesAsText) {
  sockaddr_storage v4{};
  auto* a = reinterpret_cast<sockaddr_in*>(&v4);
  a->sin_family = AF_INET;
  a->sin_port = htons(7070);
  ASSERT_EQ(::inet_pton(AF_INET, "10.1.2.3", &a->sin_addr), 1);
  EXPECT_EQ(socket_host(v4), "10.1.2.3");
  EXPECT_EQ(socket_port(v4), 7070);

  sockaddr_storage v6{};
  auto* b = reinterpret_cast<sockaddr_in6*>(&v6);
  b->sin6_family = AF_INET6;
  b->sin6_port = htons(443);
  ASSERT_EQ(::inet_pton(AF_INET6, "fe80::1", &b->sin6_addr), 1);
  EXPECT_EQ(socket_host(v6), "fe80::1");
  EXPECT_EQ(socket_port(v6), 443);

  sockaddr_storage unix_socket{};
  unix_socket.ss_family = AF_UNIX;
  EXPECT_EQ(socket_host(unix_socket), "");
  EXPECT_EQ(socket_port(unix_socket), 0);
}

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
