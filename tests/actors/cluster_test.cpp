// The cluster's control plane in one test process: cluster.* options, `cluster init`'s files,
// and the head's admission check over a real middleman connection on 127.0.0.1 (a second actor
// system plays the node and sends join_cluster by hand, so it can send what a node never would).

#include "actors/cluster.hpp"

#include "tests/support/temp_dir.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <gtest/gtest.h>

#include <fstream>

namespace thaw {
namespace {

config parse(const std::string& text) {
  auto c = config::parse(text);
  EXPECT_TRUE(c) << c.err().to_string();
  return c ? std::move(*c) : config{};
}

TEST(ClusterOptions, ASecretIsRequiredAndComesFromTheKeyOrTheDirectory) {
  auto none = cluster_options::from_config(parse(""));
  ASSERT_FALSE(none);
  EXPECT_NE(none.err().message.find("thaw cluster init"), std::string::npos);

  auto direct = cluster_options::from_config(parse("[cluster]\nsecret = \"s\"\nport = 0\n"));
  ASSERT_TRUE(direct) << direct.err().to_string();
  EXPECT_EQ(direct->secret, "s");
  EXPECT_FALSE(direct->tls);

  testing::temp_dir dir;
  ASSERT_TRUE(init_cluster_dir(dir / "c"));
  auto again = init_cluster_dir(dir / "c");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.err().code, errc::already_exists);
  // The certificates there: TLS unless turned off.
  const auto from_dir = cluster_options::from_config(
      parse("[cluster]\ndir = \"" + (dir / "c").string() + "\"\n"));
  ASSERT_TRUE(from_dir) << from_dir.err().to_string();
  EXPECT_EQ(from_dir->secret.size(), 64u);
  EXPECT_TRUE(from_dir->tls);
  const auto plain = cluster_options::from_config(
      parse("[cluster]\ndir = \"" + (dir / "c").string() + "\"\ntls = false\n"));
  ASSERT_TRUE(plain) << plain.err().to_string();
  EXPECT_FALSE(plain->tls);

  auto no_certs = cluster_options::from_config(parse("[cluster]\nsecret = \"s\"\ntls = true\n"));
  ASSERT_FALSE(no_certs);
  EXPECT_NE(no_certs.err().message.find("cluster.tls"), std::string::npos);
  auto bad_timeout = cluster_options::from_config(
      parse("[cluster]\nsecret = \"s\"\nheartbeat = 5\ntimeout = 2\n"));
  ASSERT_FALSE(bad_timeout);
  EXPECT_NE(bad_timeout.err().message.find("cluster.timeout"), std::string::npos);
}

class HeadAdmission : public ::testing::Test {
protected:
  void SetUp() override {
    cluster_.port = 0;
    cluster_.secret = "the-secret";
    serve_options serve;
    serve.http.port = 0;
    auto head = head_server::start(serve, cluster_);
    ASSERT_TRUE(head) << head.err().to_string();
    head_ = std::move(*head);
    cfg_ = make_cluster_system_config(cluster_, cluster_role::node);
    sys_ = std::make_unique<caf::actor_system>(*cfg_);
    auto remote =
        sys_->middleman().remote_actor<head_actor>("127.0.0.1", head_->control_port());
    ASSERT_TRUE(remote) << sys_->render(remote.error());
    remote_ = *remote;
  }

  /// The head's answer to `j`: its scheduler, or the error it refused with.
  expected<caf::actor> join(join_cluster j) {
    caf::scoped_actor self{*sys_};
    expected<caf::actor> out = make_error(errc::internal, "no answer");
    self->request(remote_, std::chrono::seconds(30), std::move(j))
        .receive([&](caf::actor& a) { out = std::move(a); },
                 [&](caf::error& e) { out = from_caf(e); });
    return out;
  }

  cluster_options cluster_;
  std::unique_ptr<head_server> head_;
  std::unique_ptr<caf::actor_system_config> cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  head_actor remote_;
};

TEST_F(HeadAdmission, AnotherProtocolVersionIsRefusedWithBothVersions) {
  auto r = join({cluster_protocol_version + 1, "the-secret", "future-node"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::unsupported);
  EXPECT_NE(r.err().message.find(std::to_string(cluster_protocol_version + 1)), std::string::npos)
      << r.err().message;
  EXPECT_NE(r.err().message.find("future-node"), std::string::npos);
}

TEST_F(HeadAdmission, AWrongOrEmptySecretIsRefusedTheRightOneGetsTheScheduler) {
  for (const char* s : {"", "the-secreT", "the-secret-and-more"}) {
    auto r = join({cluster_protocol_version, s, "n"});
    ASSERT_FALSE(r) << "secret '" << s << "' was accepted";
    EXPECT_NE(r.err().message.find("wrong cluster secret"), std::string::npos);
  }
  auto ok = join({cluster_protocol_version, "the-secret", "n"});
  ASSERT_TRUE(ok) << ok.err().to_string();
  EXPECT_TRUE(*ok);
}

TEST(NodeJoin, AHeadOfAnotherProtocolIsNamedNotRetried) {
  // What a head of protocol 9 or older published: an untyped actor.
  cluster_options cluster;
  cluster.port = 0;
  cluster.secret = "the-secret";
  auto cfg = make_cluster_system_config(cluster, cluster_role::head);
  caf::actor_system sys{*cfg};
  auto old_head = sys.spawn([]() -> caf::behavior {
    return {[](join_cluster&) -> caf::actor { return {}; }};
  });
  auto port = sys.middleman().publish(old_head, 0, "127.0.0.1", true);
  ASSERT_TRUE(port) << sys.render(port.error());

  node_options node;
  node.name = "new-node";
  node.data_plane = false;
  node.loader.pool_bytes = 1 << 20;
  node.loader.chunk_bytes = 64 << 10;
  const auto t0 = std::chrono::steady_clock::now();
  auto joined = node_server::start(node, cluster, "127.0.0.1", *port);
  ASSERT_FALSE(joined);
  EXPECT_EQ(joined.err().code, errc::unsupported) << joined.err().to_string();
  EXPECT_NE(joined.err().message.find("cluster protocol"), std::string::npos)
      << joined.err().message;
  // Refused at once, not after cluster.connect_timeout's retries.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(cluster.connect_ms));
  caf::anon_send_exit(old_head, caf::exit_reason::user_shutdown);
}

} // namespace
} // namespace thaw
