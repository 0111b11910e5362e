// What walship writes in etcd and reads back, and the etcd URLs the config takes.
#include "rpc/coordinator.h"

#include <gtest/gtest.h>

namespace walship::rpc {
namespace {

TEST(CoordinatorValuesTest, TheLeaderKeyRoundTrips) {
  std::string v = EncodeLeaderValue("n1", "127.0.0.1:7001", "orders");
  EXPECT_EQ(v, R"({"address":"127.0.0.1:7001","cluster":"orders","node":"n1"})");
  absl::StatusOr<replication::LeaderKey> k = DecodeLeaderValue(v);
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->node, "n1");
  EXPECT_EQ(k->address, "127.0.0.1:7001");
  EXPECT_EQ(k->cluster, "orders");
}

TEST(CoordinatorValuesTest, AForeignLeaderKeyIsNamedNotTrusted) {
  for (const char* bad : {"", "n1", "[]", R"({"node":"n1"})",
                          R"({"node":1,"address":"a","cluster":"c"})"}) {
    absl::StatusOr<replication::LeaderKey> k = DecodeLeaderValue(bad);
    ASSERT_FALSE(k.ok()) << bad;
    EXPECT_EQ(k.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(k.status().message().find("as walship writes it"), absl::string_view::npos);
  }
}

TEST(CoordinatorValuesTest, ACandidacyRoundTrips) {
  replication::LogPosition p{123456789012ULL, 77, "n3"};
  absl::StatusOr<replication::Candidacy> c = DecodeCandidacy(EncodeCandidacy("n2", p));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node, "n2");
  EXPECT_EQ(c->position.seq, p.seq);
  EXPECT_EQ(c->position.epoch, p.epoch);
  EXPECT_EQ(c->position.leader, "n3");
  for (const char* bad : {"{}", R"({"node":"n2","seq":-1,"epoch":1,"epoch_leader":""})",
                          R"({"node":"n2","seq":1,"epoch":"1","epoch_leader":""})"}) {
    EXPECT_FALSE(DecodeCandidacy(bad).ok()) << bad;
  }
}

TEST(EtcdEndpointTest, OnlyPlainHttpHostAndPort) {
  EXPECT_TRUE(CheckEtcdEndpoint("http://127.0.0.1:2379").ok());
  EXPECT_TRUE(CheckEtcdEndpoint("http://etcd-1.example:2379").ok());
  for (const char* bad : {"https://127.0.0.1:2379", "127.0.0.1:2379", "http://127.0.0.1",
                          "http://127.0.0.1:2379/v3", "http://:2379", "http://h:0",
                          "http://h:65536", "http://h:23x9", "http://"}) {
    absl::Status s = CheckEtcdEndpoint(bad);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.message().find(bad), absl::string_view::npos) << s.message();
  }
}

}  // namespace
}  // namespace walship::rpc
