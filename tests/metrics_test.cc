// /metrics and the health endpoints, built from facts without a server (rpc/metrics.h): the
// exposition parses line by line as Prometheus reads it, histograms are cumulative, and each
// health endpoint answers 200 exactly in the states it promises.
#include "rpc/metrics.h"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "rpc/client.capnp.h"

namespace walship::rpc {
namespace {

struct Parsed {
  std::map<std::string, std::string> types;  // family -> TYPE
  std::map<std::string, double> samples;     // name{labels} -> value
};

// Parses the text format strictly: every line a HELP, a TYPE or a sample; every sample of a
// family whose TYPE came before it; no family declared twice; no series twice.
Parsed Parse(const std::string& text) {
  static const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) [^\n]*)");
  static const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
  // name{label="value",...} value, label values escaped (\\, \", \n).
  static const std::string label = R"([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")";
  static const std::regex sample(R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{)" + label + "(," + label +
                                 R"()*\})? (-?[0-9.e+-]+|NaN|\+Inf))");
  Parsed p;
  std::istringstream in(text);
  std::string line;
  std::smatch m;
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  while (std::getline(in, line)) {
    if (std::regex_match(line, m, help)) continue;
    if (std::regex_match(line, m, type)) {
      EXPECT_TRUE(p.types.emplace(m[1], m[2]).second) << "declared twice: " << line;
      continue;
    }
    if (!std::regex_match(line, m, sample)) {
      ADD_FAILURE() << "not the exposition format: " << line;
      continue;
    }
    std::string name = m[1];
    std::string family = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      std::string s = suffix;
      if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0 &&
          p.types.count(name.substr(0, name.size() - s.size())) &&
          p.types[name.substr(0, name.size() - s.size())] == "histogram") {
        family = name.substr(0, name.size() - s.size());
      }
    }
    EXPECT_TRUE(p.types.count(family)) << "sample before its TYPE: " << line;
    std::string series = line.substr(0, line.rfind(' '));
    EXPECT_TRUE(p.samples.emplace(series, std::stod(m[m.size() - 1])).second) << "twice: " << series;
  }
  return p;
}

// The parser itself refuses what Prometheus would: the tests below lean on it.
TEST(MetricsTest, TheParserRefusesWhatIsNotTheExpositionFormat) {
  EXPECT_NONFATAL_FAILURE(Parse("# TYPE x gauge\nx{a=\"1} 1\n"), "not the exposition format");
  EXPECT_NONFATAL_FAILURE(Parse("# TYPE x gauge\nx{a=\"\\q\"} 1\n"),
                          "not the exposition format");
  EXPECT_NONFATAL_FAILURE(Parse("# TYPE x gauge\nx 1 2 3\n"), "not the exposition format");
  EXPECT_NONFATAL_FAILURE(Parse("y 1\n"), "sample before its TYPE");
  EXPECT_NONFATAL_FAILURE(Parse("# TYPE x gauge\n# TYPE x gauge\n"), "declared twice");
  EXPECT_NONFATAL_FAILURE(Parse("# TYPE x gauge\nx 1\nx 2\n"), "twice");
  Parsed ok = Parse("# TYPE x gauge\nx{a=\"\\\"\"} 1.5\n");
  EXPECT_EQ(ok.samples.at("x{a=\"\\\"\"}"), 1.5);
}

NodeMetrics LeaderMetrics() {
  NodeMetrics m;
  m.status.node = "n1";
  m.status.cluster = "c\"1\\";  // a label value that must be escaped
  m.status.role = "leader";
  m.status.epoch = 3;
  m.status.latest_seq = 1000;
  m.staleness_us = 0;
  replication::FollowerInfo f;
  f.id = "n2";
  f.state = replication::FollowerState::kConnected;
  f.lag_seq = 10;
  f.lag_ms = 1500;
  f.bytes_shipped = 4096;
  f.batches_shipped = 7;
  for (int64_t us : {10, 40, 40, 700, 2'000'000, 90'000'000}) f.replication_latency.Observe(us);
  m.followers.push_back(f);
  FollowerStatusInfo st;
  st.id = "n2";
  st.heartbeat_ago_ms = 250;
  m.status.followers.push_back(st);
  m.requests.CountWrite(static_cast<uint16_t>(schema::ErrorCode::OK), 60);
  m.requests.CountWrite(static_cast<uint16_t>(schema::ErrorCode::NOT_REPLICATED), 10'000'000);
  m.requests.CountRefusedWrites(static_cast<uint16_t>(schema::ErrorCode::NOT_LEADER), 5);
  m.requests.CountRead(static_cast<uint16_t>(schema::ErrorCode::WRITE_LOST), 30);
  m.requests.CountRead(999, 30);  // a code newer than this build
  m.engine.stall_micros = 2'500'000;
  return m;
}

TEST(MetricsTest, TheLeadersExpositionParsesAndSaysWhatItKnows) {
  Parsed p = Parse(PrometheusText(LeaderMetrics()));
  EXPECT_EQ(p.types["walship_replication_lag_seconds"], "gauge");
  EXPECT_EQ(p.types["walship_writes_total"], "counter");
  EXPECT_EQ(p.types["walship_replication_latency_seconds"], "histogram");
  EXPECT_EQ(p.samples.at(R"(walship_node_info{node="n1",cluster="c\"1\\",database_id=""})"), 1);
  EXPECT_EQ(p.samples.at(R"(walship_role{role="leader"})"), 1);
  EXPECT_EQ(p.samples.at(R"(walship_role{role="follower"})"), 0);
  EXPECT_EQ(p.samples.at("walship_epoch"), 3);
  EXPECT_EQ(p.samples.at(R"(walship_replication_lag_seconds{follower="n2"})"), 1.5);
  EXPECT_EQ(p.samples.at(R"(walship_replication_lag_sequences{follower="n2"})"), 10);
  EXPECT_EQ(p.samples.at(R"(walship_shipped_batches_total{follower="n2"})"), 7);
  EXPECT_EQ(p.samples.at(R"(walship_follower_heartbeat_age_seconds{follower="n2"})"), 0.25);
  EXPECT_EQ(p.samples.at(R"(walship_writes_total{result="ok"})"), 1);
  EXPECT_EQ(p.samples.at(R"(walship_writes_total{result="notReplicated"})"), 1);
  EXPECT_EQ(p.samples.at(R"(walship_writes_total{result="notLeader"})"), 5);
  EXPECT_EQ(p.samples.at(R"(walship_reads_total{result="writeLost"})"), 1);
  EXPECT_EQ(p.samples.at(R"(walship_reads_total{result="other"})"), 1);
  // Only acknowledged writes are timed.
  EXPECT_EQ(p.samples.at("walship_write_latency_seconds_count"), 1);
  EXPECT_EQ(p.samples.at("walship_read_latency_seconds_count"), 0);
  EXPECT_EQ(p.samples.at("walship_rocksdb_stall_seconds_total"), 2.5);
  // No follower-only family on the leader.
  EXPECT_EQ(p.types.count("walship_applied_sequence"), 0u);
}

TEST(MetricsTest, HistogramBucketsAreCumulativeAndEndAtTheCount) {
  Parsed p = Parse(PrometheusText(LeaderMetrics()));
  const std::string prefix = R"(walship_replication_latency_seconds_bucket{follower="n2",le=")";
  int buckets = 0;
  for (const auto& [series, value] : p.samples) buckets += series.rfind(prefix, 0) == 0;
  EXPECT_EQ(buckets, static_cast<int>(LatencyHistogram::kBoundsUs.size() + 1));
  // In bound order (the map orders the series as text, so walk the bounds).
  double last = 0;
  for (size_t i = 0; i < LatencyHistogram::kBoundsUs.size(); ++i) {
    std::ostringstream le;
    le << LatencyHistogram::kBoundsUs[i] / 1e6;
    double v = p.samples.at(prefix + le.str() + "\"}");
    EXPECT_GE(v, last) << le.str();
    last = v;
  }
  EXPECT_EQ(p.samples.count(prefix + "1e-05\"}"), 0u);  // no bound of 10 us
  EXPECT_EQ(p.samples.at(prefix + "2.5e-05\"}"), 1);  // 10 us
  EXPECT_EQ(p.samples.at(prefix + "5e-05\"}"), 3);    // and 40 us twice
  EXPECT_EQ(p.samples.at(prefix + "0.001\"}"), 4);
  EXPECT_EQ(p.samples.at(prefix + "2.5\"}"), 5);
  EXPECT_EQ(p.samples.at(prefix + "30\"}"), 5);       // 90 s is past every bound ...
  EXPECT_EQ(p.samples.at(prefix + "+Inf\"}"), 6);     // ... and in +Inf, which is the count
  EXPECT_EQ(p.samples.at(R"(walship_replication_latency_seconds_count{follower="n2"})"), 6);
  EXPECT_NEAR(p.samples.at(R"(walship_replication_latency_seconds_sum{follower="n2"})"),
              92.00079, 1e-9);
}

TEST(MetricsTest, AFollowersExpositionHasItsOwnLagAndNoPerFollowerFamilies) {
  NodeMetrics m;
  m.status.node = "n2";
  m.status.role = "follower";
  m.status.applied_seq = 90;
  m.status.lag_seq = 10;
  m.status.lag_ms = 20;
  m.status.ready = true;
  m.staleness_us = -1;
  Parsed p = Parse(PrometheusText(m));
  EXPECT_EQ(p.samples.at("walship_applied_sequence"), 90);
  EXPECT_EQ(p.samples.at("walship_lag_sequences"), 10);
  EXPECT_EQ(p.samples.at("walship_lag_seconds"), 0.02);
  EXPECT_EQ(p.samples.at("walship_ready"), 1);
  EXPECT_EQ(p.samples.at("walship_staleness_seconds"), -1);
  EXPECT_EQ(p.types.count("walship_replication_lag_seconds"), 0u);
  EXPECT_EQ(p.types.count("walship_coordinator_reachable"), 0u);  // no [coordinator]
  m.coordinator_reachable = 0;
  EXPECT_EQ(Parse(PrometheusText(m)).samples.at("walship_coordinator_reachable"), 0);
  m.coordinator_reachable = 1;
  EXPECT_EQ(Parse(PrometheusText(m)).samples.at("walship_coordinator_reachable"), 1);
}

HealthFacts Leader() {
  HealthFacts f;
  f.node = "n1";
  f.role = "leader";
  f.epoch = 2;
  f.staleness_us = 0;
  return f;
}

HealthFacts Follower(int64_t staleness_us) {
  HealthFacts f;
  f.node = "n2";
  f.role = "follower";
  f.epoch = 2;
  f.staleness_us = staleness_us;
  f.write_refusal = "not the leader";
  f.leader_address = "127.0.0.1:7101";
  return f;
}

TEST(HealthTest, LeaderAnswersOnlyOnTheLeaderThatTakesWrites) {
  EXPECT_EQ(AnswerHealth(Leader(), "/leader", "").status, 200);
  HealthFacts handing = Leader();
  handing.write_refusal = "leadership is being handed over to n2";
  HttpAnswer a = AnswerHealth(handing, "/leader", "");
  EXPECT_EQ(a.status, 503);
  EXPECT_EQ(nlohmann::json::parse(a.body)["reason"], handing.write_refusal);
  EXPECT_EQ(AnswerHealth(Follower(0), "/leader", "").status, 503);
  HealthFacts recovering = Leader();
  recovering.role = "recovering";
  EXPECT_EQ(AnswerHealth(recovering, "/leader", "").status, 503);
  EXPECT_EQ(AnswerHealth(Leader(), "/leader", "x=1").status, 400);
}

TEST(HealthTest, ReplicaAnswersOnFollowersWithinTheLagAsked) {
  EXPECT_EQ(AnswerHealth(Follower(300'000), "/replica", "").status, 200);
  EXPECT_EQ(AnswerHealth(Follower(300'000), "/replica", "lag=0.5").status, 200);
  EXPECT_EQ(AnswerHealth(Follower(300'000), "/replica", "lag=0.3").status, 200);
  EXPECT_EQ(AnswerHealth(Follower(300'001), "/replica", "lag=0.3").status, 503);
  EXPECT_EQ(AnswerHealth(Follower(300'000), "/replica", "lag=0").status, 503);
  EXPECT_EQ(AnswerHealth(Follower(-1), "/replica", "lag=1000").status, 503);
  EXPECT_EQ(AnswerHealth(Follower(-1), "/replica", "").status, 200);
  EXPECT_EQ(AnswerHealth(Leader(), "/replica", "").status, 503);
  HealthFacts seeding = Follower(0);
  seeding.read_refusal = "seeding from a checkpoint";
  EXPECT_EQ(AnswerHealth(seeding, "/replica", "").status, 503);
  for (const char* bad : {"lag=", "lag=x", "lag=-1", "lag=1s", "lag=inf", "lag=nan", "lags=1",
                          "lag=1&x=2"}) {
    HttpAnswer a = AnswerHealth(Follower(0), "/replica", bad);
    EXPECT_EQ(a.status, 400) << bad;
    EXPECT_FALSE(nlohmann::json::parse(a.body)["reason"].get<std::string>().empty()) << bad;
  }
}

TEST(HealthTest, ALeaderOrReplicaWhoseStorageRefusesWritesIsNotOne) {
  HealthFacts leader = Leader();
  leader.storage_error = "IO error: No space left on device";
  EXPECT_EQ(AnswerHealth(leader, "/leader", "").status, 503);
  HealthFacts follower = Follower(0);
  follower.storage_error = "IO error: No space left on device";
  EXPECT_EQ(AnswerHealth(follower, "/replica", "").status, 503);
  EXPECT_EQ(AnswerHealth(follower, "/replica", "lag=10").status, 503);
}

TEST(HealthTest, ALeaderWhoseLeaseLapsedIsNotTheLeader) {
  HealthFacts lapsed = Leader();
  lapsed.write_refusal = "the leader's lease lapsed: it has not heard from a majority";
  HttpAnswer a = AnswerHealth(lapsed, "/leader", "");
  EXPECT_EQ(a.status, 503);
  EXPECT_EQ(nlohmann::json::parse(a.body)["reason"], lapsed.write_refusal);
}

TEST(HealthTest, AFollowerCutOffFromEtcdStillServesReadsAndSaysSo) {
  HealthFacts cut_off = Follower(0);
  cut_off.coordinator = "etcd http://127.0.0.1:2379: unreachable (connect(): refused \xff)";
  cut_off.coordinator_reachable = false;
  for (const char* path : {"/health", "/replica"}) {
    HttpAnswer a = AnswerHealth(cut_off, path, "");
    EXPECT_EQ(a.status, 200) << path;
    nlohmann::json body = nlohmann::json::parse(a.body);
    EXPECT_EQ(body["coordinator_reachable"], false) << path;
    EXPECT_NE(body["coordinator"].get<std::string>().find("unreachable"), std::string::npos);
  }
  HealthFacts reached = Leader();
  reached.coordinator = "etcd http://127.0.0.1:2379: leader key held by 'n1' (epoch 9)";
  reached.coordinator_reachable = true;
  EXPECT_EQ(nlohmann::json::parse(AnswerHealth(reached, "/health", "").body)
                ["coordinator_reachable"], true);
  // Without a coordinator the body does not mention one.
  EXPECT_FALSE(nlohmann::json::parse(AnswerHealth(Leader(), "/health", "").body)
                   .contains("coordinator"));
}

TEST(HealthTest, BytesThatAreNotUtf8InThePathStillGetAnAnswer) {
  HttpAnswer a = AnswerHealth(Leader(), "/\xff\xfe", "");
  EXPECT_EQ(a.status, 404);
  EXPECT_NO_THROW(nlohmann::json::parse(a.body));
  a = AnswerHealth(Follower(0), "/replica", "lag=\xff");
  EXPECT_EQ(a.status, 400);
  EXPECT_NO_THROW(nlohmann::json::parse(a.body));
}

TEST(MetricsTest, TimesNotKnownYetAreMinusOne) {
  NodeMetrics m = LeaderMetrics();
  m.followers[0].lag_ms = -1;
  m.status.followers[0].heartbeat_ago_ms = -1;
  Parsed p = Parse(PrometheusText(m));
  EXPECT_EQ(p.samples.at(R"(walship_replication_lag_seconds{follower="n2"})"), -1);
  EXPECT_EQ(p.samples.at(R"(walship_follower_heartbeat_age_seconds{follower="n2"})"), -1);
}

TEST(HealthTest, HealthAnswersWhenTheNodeServes) {
  EXPECT_EQ(AnswerHealth(Leader(), "/health", "").status, 200);
  EXPECT_EQ(AnswerHealth(Follower(-1), "/health", "").status, 200);
  HealthFacts broken = Leader();
  broken.storage_error = "IO error: No space left on device";
  HttpAnswer a = AnswerHealth(broken, "/health", "");
  EXPECT_EQ(a.status, 503);
  EXPECT_NE(nlohmann::json::parse(a.body)["reason"].get<std::string>().find("No space"),
            std::string::npos);
  HealthFacts seeding = Follower(0);
  seeding.role = "seeding";
  seeding.read_refusal = "seeding from a checkpoint";
  EXPECT_EQ(AnswerHealth(seeding, "/health", "").status, 503);
  EXPECT_EQ(AnswerHealth(Leader(), "/nope", "").status, 404);
  nlohmann::json body = nlohmann::json::parse(AnswerHealth(Follower(1500), "/health", "").body);
  EXPECT_EQ(body["role"], "follower");
  EXPECT_EQ(body["epoch"], 2);
  EXPECT_EQ(body["staleness_ms"], 1);
  EXPECT_EQ(body["leader_address"], "127.0.0.1:7101");
}

}  // namespace
}  // namespace walship::rpc
