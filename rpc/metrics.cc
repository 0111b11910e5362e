#include "rpc/metrics.h"

#include <capnp/schema.h>

#include <charconv>
#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "rpc/client.capnp.h"

namespace walship::rpc {
namespace {

// The name of error code `code` as the protocol spells it, or "other" for a code newer than
// this build.
std::string CodeName(size_t code) {
  auto enumerants = capnp::Schema::from<schema::ErrorCode>().getEnumerants();
  if (code < enumerants.size() && code + 1 < RequestCounters::kCodes) {
    return enumerants[static_cast<unsigned>(code)].getProto().getName();
  }
  return "other";
}

using Labels = std::vector<std::pair<std::string, std::string>>;

// Writes families in the exposition format: HELP and TYPE once per family, before its
// samples, label values escaped as the format asks.
class Exposition {
 public:
  void Family(const std::string& name, const char* type, const char* help) {
    std::string escaped;
    for (const char* c = help; *c != '\0'; ++c) {
      if (*c == '\\') {
        escaped += "\\\\";
      } else if (*c == '\n') {
        escaped += "\\n";
      } else {
        escaped += *c;
      }
    }
    absl::StrAppend(&out_, "# HELP ", name, " ", escaped, "\n# TYPE ", name, " ", type, "\n");
  }
  void Sample(const std::string& name, const Labels& labels, uint64_t v) {
    Line(name, labels, absl::StrCat(v));
  }
  void Sample(const std::string& name, const Labels& labels, int64_t v) {
    Line(name, labels, absl::StrCat(v));
  }
  void Sample(const std::string& name, const Labels& labels, double v) {
    Line(name, labels, std::isfinite(v) ? absl::StrFormat("%.9g", v) : std::string("NaN"));
  }
  // A gauge or counter family with one sample.
  template <typename T>
  void One(const std::string& name, const char* type, const char* help, T v) {
    Family(name, type, help);
    Sample(name, {}, v);
  }
  // The samples of one histogram (in seconds) of a family declared already.
  void Histogram(const std::string& name, const Labels& labels, const LatencyHistogram& h) {
    for (size_t i = 0; i <= LatencyHistogram::kBoundsUs.size(); ++i) {
      Labels with = labels;
      with.emplace_back("le", i < LatencyHistogram::kBoundsUs.size()
                                  ? absl::StrFormat("%g", LatencyHistogram::kBoundsUs[i] / 1e6)
                                  : std::string("+Inf"));
      Sample(name + "_bucket", with, h.CumulativeCount(i));
    }
    Sample(name + "_sum", labels, static_cast<double>(h.sum_us()) / 1e6);
    Sample(name + "_count", labels, h.count());
  }
  std::string Take() { return std::move(out_); }

 private:
  void Line(const std::string& name, const Labels& labels, const std::string& value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      for (size_t i = 0; i < labels.size(); ++i) {
        absl::StrAppend(&out_, i ? "," : "", labels[i].first, "=\"");
        for (char c : labels[i].second) {
          if (c == '\\') {
            out_ += "\\\\";
          } else if (c == '"') {
            out_ += "\\\"";
          } else if (c == '\n') {
            out_ += "\\n";
          } else {
            out_ += c;
          }
        }
        out_ += '"';
      }
      out_ += '}';
    }
    absl::StrAppend(&out_, " ", value, "\n");
  }

  std::string out_;
};

// Milliseconds as seconds; a negative figure (not known yet) as -1.
double Seconds(int64_t ms) { return ms < 0 ? -1.0 : static_cast<double>(ms) / 1e3; }

void NodeFamilies(Exposition& x, const NodeMetrics& m) {
  const NodeStatusInfo& s = m.status;
  x.Family("walship_node_info", "gauge",
           "Always 1; the labels name the node, its cluster and its database.");
  x.Sample("walship_node_info",
           {{"node", s.node}, {"cluster", s.cluster}, {"database_id", s.database_id}},
           uint64_t{1});
  x.Family("walship_role", "gauge", "1 for the role the node holds now, 0 for the others.");
  std::set<std::string> roles = {"leader", "follower", "seeding", "recovering", s.role};
  for (const std::string& r : roles) {
    x.Sample("walship_role", {{"role", r}}, uint64_t{r == s.role ? 1u : 0u});
  }
  x.One("walship_epoch", "gauge", "The epoch of the history this node follows or leads.",
        s.epoch);
  x.One("walship_latest_sequence", "gauge",
        "The last sequence number in this node's database.", s.latest_seq);
  x.One("walship_staleness_seconds", "gauge",
        "How long ago this node last knew itself caught up with its leader (0 on the leader "
        "that takes writes; -1 when it never knew): what a bounded-staleness read is held to.",
        m.staleness_us < 0 ? -1.0 : static_cast<double>(m.staleness_us) / 1e6);
  x.One("walship_storage_error", "gauge",
        "1 while RocksDB refuses writes after a storage error (status names it).",
        uint64_t{s.storage_error.empty() ? 0u : 1u});
  x.One("walship_data_bytes", "gauge", "Bytes of SSTables and memtables.", s.data_bytes);
  x.One("walship_wal_bytes", "gauge",
        "Bytes of WAL files kept, live and archived for followers.", s.wal_bytes);
  x.One("walship_membership_version", "gauge", "The version of the membership this node holds.",
        s.membership_version);
  x.Family("walship_members", "gauge", "Members of the cluster by kind, as this node knows them.");
  uint64_t voters = 0, learners = 0;
  for (const auto& member : s.members) (member.voter ? voters : learners)++;
  x.Sample("walship_members", {{"kind", "voter"}}, voters);
  x.Sample("walship_members", {{"kind", "learner"}}, learners);
  x.One("walship_client_connections", "gauge", "Client connections being served.",
        uint64_t{s.client_connections});
  x.One("walship_peer_connections", "gauge", "Node connections being served.",
        uint64_t{s.peer_connections});
  x.One("walship_connections_refused_total", "counter",
        "Connections refused over a cap since the node started.", s.connections_refused);
  x.One("walship_accept_failures_total", "counter", "Failed accepts since the node started.",
        s.accept_failures);
  x.One("walship_auth_failures_total", "counter",
        "Connections refused since the node started: no or a wrong cluster secret.",
        s.auth_failures);
  x.One("walship_snapshots_serving", "gauge", "Checkpoints being sent from this node.",
        uint64_t{s.snapshots_serving});
  x.One("walship_http_connections_refused_total", "counter",
        "Connections to this HTTP port closed unanswered: as many were open as it serves.",
        m.http_connections_refused);
  if (m.coordinator_reachable >= 0) {
    x.One("walship_coordinator_reachable", "gauge",
          "1 while etcd answers this node's reads of the leader key and lease calls, else 0.",
          uint64_t{m.coordinator_reachable == 1 ? 1u : 0u});
  }
}

void RequestFamilies(Exposition& x, const NodeMetrics& m) {
  const RequestCounters& r = m.requests;
  x.Family("walship_writes_total", "counter", "Client writes answered, by result.");
  for (size_t c = 0; c < RequestCounters::kCodes; ++c) {
    x.Sample("walship_writes_total", {{"result", CodeName(c)}}, r.writes[c]);
  }
  x.Family("walship_reads_total", "counter", "Client gets and scans answered, by result.");
  for (size_t c = 0; c < RequestCounters::kCodes; ++c) {
    x.Sample("walship_reads_total", {{"result", CodeName(c)}}, r.reads[c]);
  }
  x.Family("walship_write_latency_seconds", "histogram",
           "From when the node takes a write up to its acknowledgement, for writes acknowledged.");
  x.Histogram("walship_write_latency_seconds", {}, r.write_latency);
  x.Family("walship_read_latency_seconds", "histogram",
           "From when the node takes a read up to its answer, for reads served (a wait for "
           "its token or lag bound included).");
  x.Histogram("walship_read_latency_seconds", {}, r.read_latency);
  x.One("walship_write_groups_total", "counter", "RocksDB write groups this node wrote.",
        m.status.write_groups);
}

void LeaderFamilies(Exposition& x, const NodeMetrics& m) {
  const NodeStatusInfo& s = m.status;
  x.One("walship_writes_waiting", "gauge", "Writes waiting for their followers' acks.",
        uint64_t{s.writes_waiting});
  x.One("walship_degraded", "gauge",
        "1 while the leader runs async because its followers did not ack in time "
        "(on_sync_timeout = degrade).",
        uint64_t{s.degraded_for_ms >= 0 ? 1u : 0u});
  x.One("walship_writes_not_replicated_total", "counter",
        "Writes answered notReplicated: written here, not acked by the followers asked for.",
        s.writes_not_replicated);
  x.One("walship_writes_degraded_total", "counter",
        "Writes acknowledged without the followers they asked for (degraded).",
        s.writes_degraded);
  // One family per figure, each with a sample per follower the leader keeps a record of.
  using Info = replication::FollowerInfo;
  using Emit = std::function<void(const std::string& name, const Labels& l, const Info& info,
                                  const FollowerStatusInfo& st)>;
  struct PerFollower {
    const char* name;
    const char* type;
    const char* help;
    Emit emit;
  };
  const PerFollower families[] = {
      {"walship_follower_up", "gauge", "1 while the follower has a live session.",
       [&](auto& n, auto& l, const Info& i, auto&) {
         x.Sample(n, l, uint64_t{i.state == replication::FollowerState::kConnected ? 1u : 0u});
       }},
      {"walship_replication_lag_seconds", "gauge",
       "Age of the oldest write the follower has not applied.",
       [&](auto& n, auto& l, const Info& i, auto&) { x.Sample(n, l, Seconds(i.lag_ms)); }},
      {"walship_replication_lag_sequences", "gauge",
       "Sequence numbers the follower has yet to apply.",
       [&](auto& n, auto& l, const Info& i, auto&) { x.Sample(n, l, i.lag_seq); }},
      {"walship_follower_applied_sequence", "gauge", "The last sequence the follower applied.",
       [&](auto& n, auto& l, const Info& i, auto&) { x.Sample(n, l, i.applied); }},
      {"walship_follower_durable_sequence", "gauge",
       "The last sequence the follower has fsynced.",
       [&](auto& n, auto& l, const Info& i, auto&) { x.Sample(n, l, i.durable); }},
      {"walship_shipped_bytes_total", "counter", "Batch bytes shipped to the follower.",
       [&](auto& n, auto& l, const Info& i, auto&) { x.Sample(n, l, i.bytes_shipped); }},
      {"walship_shipped_batches_total", "counter", "Batches shipped to the follower.",
       [&](auto& n, auto& l, const Info& i, auto&) { x.Sample(n, l, i.batches_shipped); }},
      {"walship_acks_total", "counter", "Acks received from the follower in this epoch.",
       [&](auto& n, auto& l, const Info& i, auto&) { x.Sample(n, l, i.acks); }},
      {"walship_follower_wal_pinned_bytes", "gauge",
       "WAL bytes kept past the retention for the follower.",
       [&](auto& n, auto& l, auto&, const FollowerStatusInfo& st) {
         x.Sample(n, l, st.wal_pinned_bytes);
       }},
      {"walship_follower_heartbeat_age_seconds", "gauge",
       "Time since the follower last answered a heartbeat.",
       [&](auto& n, auto& l, auto&, const FollowerStatusInfo& st) {
         x.Sample(n, l, Seconds(st.heartbeat_ago_ms));
       }},
      {"walship_follower_heartbeat_phi", "gauge",
       "The phi-accrual suspicion of the follower's heartbeat answers.",
       [&](auto& n, auto& l, auto&, const FollowerStatusInfo& st) {
         x.Sample(n, l, st.heartbeat_phi);
       }},
  };
  for (const PerFollower& f : families) {
    x.Family(f.name, f.type, f.help);
    for (const Info& info : m.followers) {
      // Status lists the same records; one missing there (none is) reports zeros.
      FollowerStatusInfo st;
      for (const auto& candidate : s.followers) {
        if (candidate.id == info.id) st = candidate;
      }
      f.emit(f.name, {{"follower", info.id}}, info, st);
    }
  }
  x.Family("walship_replication_latency_seconds", "histogram",
           "From the leader's write of a message's first batch to the follower's ack that it "
           "applied the message.");
  for (const replication::FollowerInfo& info : m.followers) {
    x.Histogram("walship_replication_latency_seconds", {{"follower", info.id}},
                info.replication_latency);
  }
}

void FollowerFamilies(Exposition& x, const NodeMetrics& m) {
  const NodeStatusInfo& s = m.status;
  x.One("walship_applied_sequence", "gauge", "The last sequence number this follower applied.",
        s.applied_seq);
  x.One("walship_leader_latest_sequence", "gauge",
        "The leader's latest sequence number as its last message said.", s.leader_latest_seq);
  x.One("walship_lag_sequences", "gauge", "Sequence numbers this follower has yet to apply.",
        s.lag_seq);
  x.One("walship_lag_seconds", "gauge",
        "Age of the oldest write this follower has not applied, as its leader's messages tell.",
        Seconds(s.lag_ms));
  x.One("walship_ready", "gauge", "1 when the follower is within ready_lag of its leader.",
        uint64_t{s.ready ? 1u : 0u});
  x.One("walship_leader_heartbeat_age_seconds", "gauge",
        "Time since this follower last heard from its leader.",
        Seconds(s.leader_heartbeat_ago_ms));
  x.One("walship_leader_heartbeat_phi", "gauge",
        "The phi-accrual suspicion of the leader's heartbeats.", s.leader_heartbeat_phi);
  x.One("walship_seed_done_bytes", "gauge", "Checkpoint bytes received and verified so far.",
        s.seed_done_bytes);
  x.One("walship_seed_total_bytes", "gauge", "Checkpoint bytes in all (0: not seeding).",
        s.seed_total_bytes);
}

void RocksFamilies(Exposition& x, const engine::EngineFigures& e) {
  x.One("walship_rocksdb_sst_bytes", "gauge", "Bytes of SSTables.", e.sst_bytes);
  x.One("walship_rocksdb_memtable_bytes", "gauge", "Bytes of memtables.", e.memtable_bytes);
  x.One("walship_rocksdb_estimated_keys", "gauge", "RocksDB's estimate of the keys held.",
        e.estimated_keys);
  x.One("walship_rocksdb_pending_compaction_bytes", "gauge",
        "RocksDB's estimate of the bytes compaction has to rewrite.",
        e.pending_compaction_bytes);
  x.One("walship_rocksdb_running_compactions", "gauge", "Compactions running.",
        e.running_compactions);
  x.One("walship_rocksdb_running_flushes", "gauge", "Memtable flushes running.",
        e.running_flushes);
  x.One("walship_rocksdb_writes_stopped", "gauge", "1 while RocksDB stops writes.",
        uint64_t{e.writes_stopped ? 1u : 0u});
  x.One("walship_rocksdb_delayed_write_rate_bytes", "gauge",
        "Bytes per second RocksDB slows writes to (0: not slowed).", e.delayed_write_rate);
  x.One("walship_rocksdb_stall_seconds_total", "counter",
        "Time writes spent stalled since the database opened.",
        static_cast<double>(e.stall_micros) / 1e6);
  x.One("walship_rocksdb_slowdowns_total", "counter",
        "Write slowdowns since the database opened.", e.stalls_slowed);
  x.One("walship_rocksdb_stops_total", "counter", "Write stops since the database opened.",
        e.stalls_stopped);
  x.One("walship_rocksdb_wal_written_bytes_total", "counter",
        "WAL bytes written since the database opened.", e.wal_bytes_written);
  x.One("walship_rocksdb_wal_syncs_total", "counter",
        "WAL fsyncs since the database opened.", e.wal_syncs);
  x.One("walship_rocksdb_background_errors_total", "counter",
        "Background errors (flush, compaction) since the database opened.",
        e.background_errors);
}

// lag=SECONDS: a finite number of seconds, at least 0.
absl::StatusOr<double> LagBound(std::string_view query) {
  double lag = -1;
  bool found = false;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = pair.find('=');
    std::string_view name = pair.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? "" : pair.substr(eq + 1);
    if (name != "lag") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown query parameter '", std::string(name),
                       "'; /replica takes lag=SECONDS"));
    }
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), lag);
    if (value.empty() || ec != std::errc() || end != value.data() + value.size() ||
        !std::isfinite(lag) || lag < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("lag must be a number of seconds, at least 0 (as 0.5); got '",
                       std::string(value), "'"));
    }
    found = true;
  }
  return found ? lag : -1.0;
}

}  // namespace

void RequestCounters::CountWrite(uint16_t code, int64_t us) {
  ++writes[std::min<size_t>(code, kCodes - 1)];
  if (code == static_cast<uint16_t>(schema::ErrorCode::OK)) write_latency.Observe(us);
}

void RequestCounters::CountRefusedWrites(uint16_t code, uint64_t n) {
  writes[std::min<size_t>(code, kCodes - 1)] += n;
}

void RequestCounters::CountRead(uint16_t code, int64_t us) {
  ++reads[std::min<size_t>(code, kCodes - 1)];
  if (code == static_cast<uint16_t>(schema::ErrorCode::OK) ||
      code == static_cast<uint16_t>(schema::ErrorCode::NOT_FOUND)) {
    read_latency.Observe(us);
  }
}

std::string PrometheusText(const NodeMetrics& m) {
  Exposition x;
  NodeFamilies(x, m);
  RequestFamilies(x, m);
  if (m.status.role == "leader") {
    LeaderFamilies(x, m);
  } else {
    FollowerFamilies(x, m);
  }
  RocksFamilies(x, m.engine);
  return x.Take();
}

HttpAnswer AnswerHealth(const HealthFacts& f, std::string_view path, std::string_view query) {
  HttpAnswer a;
  nlohmann::json body = {{"node", f.node},
                         {"role", f.role},
                         {"epoch", f.epoch},
                         {"latest_seq", f.latest_seq},
                         {"staleness_ms", f.staleness_us < 0 ? -1 : f.staleness_us / 1000}};
  if (!f.leader_address.empty()) body["leader_address"] = f.leader_address;
  if (!f.coordinator.empty()) {
    body["coordinator"] = f.coordinator;
    body["coordinator_reachable"] = f.coordinator_reachable;
  }
  std::string why;
  if (path == "/health") {
    if (!query.empty()) {
      a.status = 400;
      why = "/health takes no query";
    } else if (!f.storage_error.empty()) {
      why = absl::StrCat("storage error: ", f.storage_error);
    } else if (!f.read_refusal.empty()) {
      why = f.read_refusal;
    }
  } else if (path == "/leader") {
    if (!query.empty()) {
      a.status = 400;
      why = "/leader takes no query";
    } else if (f.role != "leader") {
      why = absl::StrCat("this node is ", f.role);
    } else if (!f.storage_error.empty()) {
      why = absl::StrCat("storage error: ", f.storage_error);
    } else if (!f.write_refusal.empty()) {
      why = f.write_refusal;
    }
  } else if (path == "/replica") {
    absl::StatusOr<double> lag = LagBound(query);
    if (!lag.ok()) {
      a.status = 400;
      why = std::string(lag.status().message());
    } else if (f.role != "follower") {
      why = absl::StrCat("this node is ", f.role);
    } else if (!f.storage_error.empty()) {
      why = absl::StrCat("storage error: ", f.storage_error);
    } else if (!f.read_refusal.empty()) {
      why = f.read_refusal;
    } else if (*lag >= 0 && f.staleness_us < 0) {
      why = "this follower has not known itself caught up with a leader yet";
    } else if (*lag >= 0 && static_cast<double>(f.staleness_us) > *lag * 1e6) {
      why = absl::StrFormat("this follower last knew itself caught up %.3f s ago; lag=%g asked",
                            static_cast<double>(f.staleness_us) / 1e6, *lag);
    }
  } else {
    a.status = 404;
    why = absl::StrCat("no such endpoint '", std::string(path),
                       "'; there are /metrics, /health, /leader and /replica");
  }
  if (!why.empty() && a.status == 200) a.status = 503;
  if (!why.empty()) body["reason"] = why;
  // The path and query are the client's bytes: any that are not UTF-8 are replaced.
  a.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  return a;
}

}  // namespace walship::rpc
