#include "runtime/common/hash.hpp"

#include <gtest/gtest.h>
#include <vector>
#include <xxhash.h> // the library's own exported XXH3: the independent reference

namespace thaw {
namespace {

TEST(Hash, MatchesLibxxhash) {
  EXPECT_EQ(xxh3_64("", 0), 0x2D06800538D394C2ull); // XXH3-64 of nothing, seed 0
  std::vector<unsigned char> data(1 << 20);
  for (std::size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<unsigned char>(i * 2654435761u >> 13);
  // Every length class of XXH3 (0-16, 17-128, 129-240, long) up to 1 MiB.
  for (std::size_t n : {0, 1, 3, 4, 8, 9, 16, 17, 100, 128, 129, 200, 240, 241, 1000, 4096, 65537,
                        1 << 20})
    EXPECT_EQ(xxh3_64(data.data(), n), XXH3_64bits(data.data(), n)) << n;
}

TEST(Hash, PiecesEqualOneShot) {
  std::vector<std::byte> data(3 << 20);
  for (std::size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<std::byte>(i * 131 + (i >> 9));
  auto whole = xxh3_64(data.data(), data.size());
  std::span<std::byte> all(data);
  std::vector<std::span<std::byte>> parts = {all.subspan(0, 1000), all.subspan(1000, 1 << 20),
                                             all.subspan(1000 + (1 << 20))};
  EXPECT_EQ(xxh3_64(parts, data.size()), whole);
  // Only the first `bytes` count.
  EXPECT_EQ(xxh3_64(parts, 5000), xxh3_64(data.data(), 5000));
  std::vector<std::span<std::byte>> one = {all};
  EXPECT_EQ(xxh3_64(one, 77), xxh3_64(data.data(), 77));
  EXPECT_TRUE(std::string{xxh3_implementation()} == "avx2" ||
              std::string{xxh3_implementation()} == "sse2");
}

} // namespace
} // namespace thaw
