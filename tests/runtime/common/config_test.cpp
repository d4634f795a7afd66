#include "runtime/common/config.hpp"

#include <gtest/gtest.h>

namespace thaw {
namespace {

TEST(Config, ReadsTypedValuesWithDefaults) {
  auto cfg = config::parse(R"(
[loader]
chunk_bytes = "16MiB"
pool_bytes = 1048576
read_threads = 3
verify = false
[log]
level = "debug"
)");
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  EXPECT_EQ(*cfg->get_bytes("loader.chunk_bytes", 0), 16u << 20);
  EXPECT_EQ(*cfg->get_bytes("loader.pool_bytes", 0), 1u << 20);
  EXPECT_EQ(*cfg->get_int("loader.read_threads", 1), 3);
  EXPECT_EQ(*cfg->get_bool("loader.verify", true), false);
  EXPECT_EQ(*cfg->get_string("log.level", "info"), "debug");
  EXPECT_EQ(*cfg->get_int("loader.copy_threads", 2), 2);
  EXPECT_FALSE(cfg->contains("loader.copy_threads"));
}

TEST(Config, WrongTypeNamesTheKey) {
  auto cfg = config::parse("[loader]\nread_threads = \"many\"\n");
  ASSERT_TRUE(cfg);
  auto v = cfg->get_int("loader.read_threads", 1);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.err().code, errc::invalid_argument);
  EXPECT_NE(v.err().message.find("loader.read_threads"), std::string::npos);
  auto size = config::parse("x = \"12 parsecs\"")->get_bytes("x", 0);
  ASSERT_FALSE(size);
  EXPECT_NE(size.err().message.find("'x'"), std::string::npos);
}

TEST(Config, ParseErrorHasLocation) {
  auto cfg = config::parse("[loader\nx=1", "thaw.toml");
  ASSERT_FALSE(cfg);
  EXPECT_EQ(cfg.err().code, errc::parse_error);
  EXPECT_NE(cfg.err().message.find("thaw.toml:1:"), std::string::npos) << cfg.err().message;
}

TEST(Config, OverridesReplaceAndCreate) {
  auto cfg = config::parse("[loader]\nread_threads = 2\n");
  ASSERT_TRUE(cfg);
  ASSERT_TRUE(cfg->set("loader.read_threads=4"));
  ASSERT_TRUE(cfg->set("loader.pool_bytes=8GiB"));
  ASSERT_TRUE(cfg->set("server.http.port=8081"));
  EXPECT_EQ(*cfg->get_int("loader.read_threads", 0), 4);
  EXPECT_EQ(*cfg->get_bytes("loader.pool_bytes", 0), 8ull << 30);
  EXPECT_EQ(*cfg->get_int("server.http.port", 0), 8081);
  EXPECT_FALSE(cfg->set("no_equals_sign"));
  EXPECT_FALSE(cfg->set("loader.read_threads.x=1")); // read_threads is not a table
}

TEST(Config, Durations) {
  auto cfg = config::parse("a = \"5m\"\nb = 2.5\n");
  EXPECT_DOUBLE_EQ(*cfg->get_seconds("a", 0), 300.0);
  EXPECT_DOUBLE_EQ(*cfg->get_seconds("b", 0), 2.5);
}

TEST(Config, StringArraysAndArraysOfTables) {
  auto cfg = config::parse(R"(
names = ["a", "b"]
mixed = ["a", 1]
[[models]]
name = "m1"
kv_blocks = 8
[[models]]
name = "m2"
)");
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  EXPECT_EQ(*cfg->get_strings("names"), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(cfg->get_strings("absent")->empty());
  auto mixed = cfg->get_strings("mixed");
  ASSERT_FALSE(mixed);
  EXPECT_NE(mixed.err().message.find("mixed"), std::string::npos);
  auto models = cfg->get_tables("models");
  ASSERT_TRUE(models);
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ(*(*models)[0].get_string("name", ""), "m1");
  EXPECT_EQ(*(*models)[0].get_int("kv_blocks", 0), 8);
  EXPECT_EQ(*(*models)[1].get_string("name", ""), "m2");
  EXPECT_FALSE(cfg->get_tables("names")); // not tables: an error naming the key
  EXPECT_TRUE(cfg->get_tables("absent")->empty());
}

} // namespace
} // namespace thaw
