// What walship writes in etcd and reads back, the etcd URLs the config takes, and answers
// of another shape than etcd's (from a canned HTTP server on 127.0.0.1).
#include "rpc/coordinator.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/compat/http.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "rpc/etcd_client.h"

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

// Answers every request with `answer`, as etcd's gateway would with HTTP 200.
class CannedEtcd final : public kj::HttpService {
 public:
  explicit CannedEtcd(const kj::HttpHeaderTable& table) : table_(table) {}
  std::string answer;

  kj::Promise<void> request(kj::HttpMethod, kj::StringPtr, const kj::HttpHeaders&,
                            kj::AsyncInputStream& body, Response& response) override {
    return body.readAllBytes().then([this, &response](kj::Array<kj::byte>) {
      kj::HttpHeaders headers(table_);
      auto text = kj::heapString(answer.data(), answer.size());
      auto out = response.send(200, "OK", headers, text.size());
      auto written = out->write(text.begin(), text.size());
      return written.attach(kj::mv(out), kj::mv(text));
    });
  }

 private:
  const kj::HttpHeaderTable& table_;
};

TEST(EtcdClientTest, AnswersOfAnotherShapeAreErrorsThatNameWhatIsWrong) {
  auto io = kj::setupAsyncIo();
  kj::HttpHeaderTable table;
  CannedEtcd etcd(table);
  kj::HttpServer server(io.provider->getTimer(), table, etcd);
  auto listener =
      io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope)->listen();
  auto serving = server.listenHttp(*listener).eagerlyEvaluate(nullptr);
  EtcdClient client(io, {absl::StrCat("http://127.0.0.1:", listener->getPort())}, 2000);

  struct Case {
    const char* answer;
    const char* named;  // in the error's message
  };
  const Case cases[] = {
      {R"([1, 2])", "not a JSON object"},
      {R"({"kvs": [7]})", "not an object"},
      {R"({"kvs": [{"key": "!!", "value": "dg==", "create_revision": "5"}]})",
       "'key' is not base64"},
      {R"({"kvs": [{"key": "a2V5", "value": {"x": 1}, "create_revision": "5"}]})",
       "'value' is not base64"},
      {R"({"kvs": [{"key": "a2V5", "value": "dg=="}]})", "create_revision"},
      {R"({"error": {"message": 5}})", "etcd: "},
  };
  for (const Case& c : cases) {
    etcd.answer = c.answer;
    absl::StatusOr<std::optional<EtcdKv>> got = client.Get("/walship/t/leader").wait(io.waitScope);
    ASSERT_FALSE(got.ok()) << c.answer;
    EXPECT_NE(got.status().message().find(c.named), std::string::npos)
        << c.answer << " gave " << got.status();
  }
  etcd.answer = R"({"succeeded": "yes", "header": {"revision": "9"}})";
  absl::StatusOr<EtcdCreate> created =
      client.CreateIfAbsent("/walship/t/leader", "v", 7).wait(io.waitScope);
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.status().message().find("'succeeded'"), std::string::npos);

  // etcd's own shape reads as it should, after all that.
  etcd.answer = R"({"kvs": [{"key": "a2V5", "value": "dg==", "create_revision": "5",
                             "lease": "7"}]})";
  absl::StatusOr<std::optional<EtcdKv>> got = client.Get("/walship/t/leader").wait(io.waitScope);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->key, "key");
  EXPECT_EQ((*got)->value, "v");
  EXPECT_EQ((*got)->create_revision, 5);
  EXPECT_EQ((*got)->lease, 7);
  etcd.answer = R"({"result": {"ID": "7"}})";  // no TTL: the lease is gone
  absl::StatusOr<int64_t> ttl = client.KeepAlive(7).wait(io.waitScope);
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  EXPECT_EQ(*ttl, 0);
}

}  // namespace
}  // namespace walship::rpc
