// walship status: read from its Cap'n Proto form, and written as JSON (docs/cli.md lists the
// fields) and as text.
#include <sstream>
#include <string>

#include "absl/strings/str_format.h"
#include "replication/seeding.h"
#include "rpc/client.h"
#include "rpc/convert.h"

namespace walship::rpc {
namespace {

// Four significant digits: a small phi (0.0026 just after a heartbeat) stays above 0, which
// only a detector that has not seen enough heartbeats reports.
std::string JsonNumber(double v) { return absl::StrFormat("%.4g", v); }

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

}  // namespace

NodeStatusInfo StatusFromCapnp(schema::NodeStatus::Reader st) {
  NodeStatusInfo out;
  out.node = st.getNode();
  out.cluster = st.getCluster();
  out.role = st.getRole();
  out.latest_seq = st.getLatestSeq();
  out.data_bytes = st.getDataBytes();
  out.epoch = st.getEpoch();
  out.database_id = st.getDatabaseId();
  out.listen = st.getListen();
  out.leader_id = st.getLeaderId();
  out.leader_address = st.getLeaderAddress();
  out.handover_to = st.getHandoverTo();
  out.replication_mode = st.getReplicationMode();
  out.replication_acks = st.getReplicationAcks();
  out.ack_level = st.getAckLevel();
  out.sync_timeout_ms = st.getSyncTimeoutMs();
  out.on_sync_timeout = st.getOnSyncTimeout();
  out.degraded_for_ms = st.getDegradedForMs();
  out.writes_waiting = st.getWritesWaiting();
  out.writes_not_replicated = st.getWritesNotReplicated();
  out.writes_degraded = st.getWritesDegraded();
  for (auto f : st.getFollowers()) {
    FollowerStatusInfo fi;
    fi.id = f.getId();
    fi.state = f.getState();
    fi.sent_seq = f.getSentSeq();
    fi.received_seq = f.getReceivedSeq();
    fi.durable_seq = f.getDurableSeq();
    fi.applied_seq = f.getAppliedSeq();
    fi.lag_seq = f.getLagSeq();
    fi.lag_ms = f.getLagMs();
    fi.bytes_shipped = f.getBytesShipped();
    fi.last_ack_ago_ms = f.getLastAckAgoMs();
    fi.message = f.getMessage();
    fi.wal_pinned_bytes = f.getWalPinnedBytes();
    fi.voter = f.getVoter();
    fi.heartbeat_ago_ms = f.getHeartbeatAgoMs();
    fi.heartbeat_phi = f.getHeartbeatPhi();
    fi.silent = f.getSilent();
    out.followers.push_back(std::move(fi));
  }
  out.replication_state = st.getReplicationState();
  out.applied_seq = st.getAppliedSeq();
  out.leader_latest_seq = st.getLeaderLatestSeq();
  out.lag_seq = st.getLagSeq();
  out.lag_ms = st.getLagMs();
  out.message = st.getMessage();
  out.writes_accepted = st.getWritesAccepted();
  out.write_groups = st.getWriteGroups();
  out.client_connections = st.getClientConnections();
  out.peer_connections = st.getPeerConnections();
  out.connections_refused = st.getConnectionsRefused();
  out.accept_failures = st.getAcceptFailures();
  out.auth_failures = st.getAuthFailures();
  out.storage_error = st.getStorageError();
  out.phase = st.getPhase();
  out.ready = st.getReady();
  out.seed_done_bytes = st.getSeedDoneBytes();
  out.seed_total_bytes = st.getSeedTotalBytes();
  out.wal_bytes = st.getWalBytes();
  out.snapshots_serving = st.getSnapshotsServing();
  out.membership_version = st.getMembershipVersion();
  out.members = FromCapnp(st.getMembers());
  out.membership_waiting_for = st.getMembershipWaitingFor();
  out.failover = st.getFailover();
  out.leader_heartbeat_ago_ms = st.getLeaderHeartbeatAgoMs();
  out.leader_heartbeat_phi = st.getLeaderHeartbeatPhi();
  return out;
}

std::string StatusToJson(const NodeStatusInfo& s) {
  std::ostringstream o;
  o << "{\"node\":" << JsonString(s.node) << ",\"cluster\":" << JsonString(s.cluster)
    << ",\"role\":" << JsonString(s.role) << ",\"listen\":" << JsonString(s.listen)
    << ",\"latest_seq\":" << s.latest_seq << ",\"data_bytes\":" << s.data_bytes
    << ",\"epoch\":" << s.epoch << ",\"database_id\":" << JsonString(s.database_id)
    << ",\"writes_accepted\":" << s.writes_accepted << ",\"write_groups\":" << s.write_groups
    << ",\"client_connections\":" << s.client_connections
    << ",\"peer_connections\":" << s.peer_connections
    << ",\"connections_refused\":" << s.connections_refused
    << ",\"accept_failures\":" << s.accept_failures
    << ",\"auth_failures\":" << s.auth_failures
    << ",\"storage_error\":" << JsonString(s.storage_error)
    << ",\"replication_mode\":" << JsonString(s.replication_mode)
    << ",\"replication_acks\":" << s.replication_acks
    << ",\"ack_level\":" << JsonString(s.ack_level)
    << ",\"sync_timeout_ms\":" << s.sync_timeout_ms
    << ",\"on_sync_timeout\":" << JsonString(s.on_sync_timeout)
    << ",\"wal_bytes\":" << s.wal_bytes << ",\"snapshots_serving\":" << s.snapshots_serving
    << ",\"membership_version\":" << s.membership_version << ",\"members\":[";
  for (size_t i = 0; i < s.members.size(); ++i) {
    const auto& m = s.members[i];
    o << (i ? "," : "") << "{\"id\":" << JsonString(m.id) << ",\"address\":"
      << JsonString(m.address) << ",\"voter\":" << (m.voter ? "true" : "false") << "}";
  }
  o << "],\"failover\":" << JsonString(s.failover);
  if (s.role == "leader") {
    o << ",\"degraded_for_ms\":" << s.degraded_for_ms << ",\"writes_waiting\":"
      << s.writes_waiting << ",\"writes_not_replicated\":" << s.writes_not_replicated
      << ",\"writes_degraded\":" << s.writes_degraded;
    o << ",\"followers\":[";
    for (size_t i = 0; i < s.followers.size(); ++i) {
      const auto& f = s.followers[i];
      o << (i ? "," : "") << "{\"id\":" << JsonString(f.id) << ",\"state\":"
        << JsonString(f.state) << ",\"sent_seq\":" << f.sent_seq << ",\"received_seq\":"
        << f.received_seq << ",\"durable_seq\":" << f.durable_seq << ",\"applied_seq\":"
        << f.applied_seq << ",\"lag_seq\":" << f.lag_seq << ",\"lag_ms\":" << f.lag_ms
        << ",\"bytes_shipped\":" << f.bytes_shipped << ",\"last_ack_ago_ms\":"
        << f.last_ack_ago_ms << ",\"wal_pinned_bytes\":" << f.wal_pinned_bytes
        << ",\"voter\":" << (f.voter ? "true" : "false")
        << ",\"heartbeat_ago_ms\":" << f.heartbeat_ago_ms
        << ",\"heartbeat_phi\":" << JsonNumber(f.heartbeat_phi)
        << ",\"silent\":" << (f.silent ? "true" : "false")
        << ",\"message\":" << JsonString(f.message) << "}";
    }
    o << "]";
    o << ",\"handover_to\":" << JsonString(s.handover_to)
      << ",\"membership_waiting_for\":" << JsonString(s.membership_waiting_for);
  } else {
    o << ",\"leader\":" << JsonString(s.leader_id) << ",\"leader_address\":"
      << JsonString(s.leader_address) << ",\"replication_state\":"
      << JsonString(s.replication_state) << ",\"applied_seq\":" << s.applied_seq
      << ",\"leader_latest_seq\":" << s.leader_latest_seq << ",\"lag_seq\":" << s.lag_seq
      << ",\"lag_ms\":" << s.lag_ms << ",\"phase\":" << JsonString(s.phase)
      << ",\"ready\":" << (s.ready ? "true" : "false")
      << ",\"seed_done_bytes\":" << s.seed_done_bytes
      << ",\"seed_total_bytes\":" << s.seed_total_bytes
      << ",\"leader_heartbeat_ago_ms\":" << s.leader_heartbeat_ago_ms
      << ",\"leader_heartbeat_phi\":" << JsonNumber(s.leader_heartbeat_phi)
      << ",\"message\":" << JsonString(s.message);
  }
  o << "}";
  return o.str();
}

std::string StatusToText(const NodeStatusInfo& s) {
  std::ostringstream o;
  o << "node " << s.node << " (" << s.role << ") of cluster " << s.cluster << " at " << s.listen
    << "\n  latest seq " << s.latest_seq << ", epoch " << s.epoch << ", data "
    << s.data_bytes << " bytes\n"
    << "  connections: " << s.client_connections << " clients, " << s.peer_connections
    << " nodes; since start " << s.connections_refused << " refused, " << s.auth_failures
    << " without the cluster secret, " << s.accept_failures
    << " failed accepts\n"
    << "  WAL " << replication::HumanBytes(s.wal_bytes);
  if (s.snapshots_serving > 0) o << "; serving " << s.snapshots_serving << " checkpoint(s)";
  o << "\n";
  if (!s.storage_error.empty()) o << "  STORAGE ERROR: " << s.storage_error << "\n";
  o << "  members (version " << s.membership_version << "):";
  for (const auto& m : s.members) {
    o << " " << m.id << (m.voter ? "" : " (learner)");
  }
  o << "\n";
  if (!s.membership_waiting_for.empty()) {
    o << "  the last membership change waits for a majority of the voters: "
      << s.membership_waiting_for << " do not hold it yet\n";
  }
  if (!s.failover.empty()) o << "  failover: " << s.failover << "\n";
  o << "  replication " << s.replication_mode;
  if (s.replication_mode != "async") {
    if (s.replication_mode == "semi-sync") o << " (" << s.replication_acks << " of the followers)";
    o << ", ack level " << s.ack_level << ", on no ack within " << s.sync_timeout_ms
      << " ms: " << s.on_sync_timeout;
  }
  o << "\n";
  if (s.role == "leader") {
    o << "  writes accepted " << s.writes_accepted << " in " << s.write_groups
      << " RocksDB writes; " << s.writes_waiting << " waiting for followers; since start "
      << s.writes_not_replicated << " not replicated in time, " << s.writes_degraded
      << " acknowledged degraded\n";
    if (s.degraded_for_ms >= 0) {
      o << "  DEGRADED to async for " << s.degraded_for_ms
        << " ms: too few followers acknowledge in time; writes do not wait for them\n";
    }
    if (!s.handover_to.empty()) {
      o << "  HANDING LEADERSHIP TO " << s.handover_to << ": writes are refused\n";
    }
    if (s.followers.empty()) o << "  no followers have connected\n";
    for (const auto& f : s.followers) {
      o << absl::StrFormat(
          "  %-8s %-8s %-14s applied %d (received %d, durable %d), lag %d seq / %d ms, "
          "shipped %d bytes, pins %s of WAL",
          f.voter ? "follower" : "learner", f.id, f.state, f.applied_seq, f.received_seq, f.durable_seq, f.lag_seq, f.lag_ms,
          f.bytes_shipped, replication::HumanBytes(f.wal_pinned_bytes));
      if (f.heartbeat_ago_ms >= 0) {
        o << absl::StrFormat(", heartbeat answered %d ms ago (phi %.1f)", f.heartbeat_ago_ms,
                             f.heartbeat_phi);
      }
      if (f.silent) {
        o << "\n    SILENT: no heartbeat answered and no ack for the heartbeat time-out "
             "(cut off, stopped or overloaded)";
      }
      if (!f.message.empty()) o << "\n    " << f.message;
      o << "\n";
    }
  } else if (s.role == "recovering") {
    o << "  " << s.message << "\n";
  } else if (s.role == "seeding") {
    o << "  leader " << s.leader_id << " at " << s.leader_address << "\n  " << s.message << "\n";
  } else {
    o << "  leader " << s.leader_id << " at " << s.leader_address << ": "
      << s.replication_state << ", applied " << s.applied_seq;
    if (s.leader_latest_seq == 0 && s.lag_ms < 0) {
      o << "; no word from the leader since this node started, so its lag is unknown\n";
    } else {
      o << " of " << s.leader_latest_seq << ", lag " << s.lag_seq << " seq / "
        << (s.lag_ms < 0 ? std::string("unknown") : absl::StrCat(s.lag_ms, " ms")) << "\n";
    }
    if (s.leader_heartbeat_ago_ms >= 0) {
      o << absl::StrFormat("  leader's last heartbeat %d ms ago (phi %.1f)\n",
                           s.leader_heartbeat_ago_ms, s.leader_heartbeat_phi);
    }
    if (!s.phase.empty()) o << "  " << s.phase << "\n";
    if (!s.message.empty()) o << "  " << s.message << "\n";
  }
  return o.str();
}

}  // namespace walship::rpc
