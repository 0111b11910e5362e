// walship: the client and admin command line.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "rpc/client.h"
#include "rpc/cluster_client.h"
#include "rpc/convert.h"
#include "rpc/tls.h"
#include "tools/cli.h"
#include "tools/config.h"
#include "tools/escape.h"
#include "tools/session.h"
#include "tools/top.h"

namespace {

using namespace walship::cli;  // NOLINT: the command line's own pieces
using walship::engine::OpType;
using walship::engine::WriteOp;

absl::StatusOr<std::string> Arg(const std::string& text) { return walship::tools::Unescape(text); }

// --session: what a read saw, so that later reads never show an older state (monotonic reads).
void SaveReadPosition(const Target& t, const walship::rpc::Client& c) {
  if (t.session_path.empty()) return;
  if (absl::Status s = walship::tools::SaveSession(t.session_path, c.last_read()); !s.ok()) {
    std::fprintf(stderr, "walship: %s\n", std::string(s.message()).c_str());
  }
}

// A write, through rpc::ClusterClient: with --cluster it goes to the leader, found by asking
// the file's nodes and following the leader their refusals name, and it is sent again while
// it certainly was not applied (no node reached; the node reached does not take writes: not
// the leader, or a leader without its lease yet): a failover under way, waited out for up to
// --leader-wait-ms. An answer that never came is in doubt (exit 6) and is not sent again
// without a request id; with one it is, with the same id, for up to --retry-for-ms: the
// leader answers a write it made before with that write's outcome, so the write is applied
// at most once. With --endpoint alone only that node is asked, once (or, with a request id,
// again for up to --retry-for-ms).
int DoWrite(Target& t, const std::vector<WriteOp>& ops) {
  auto endpoint = Resolve(t);
  if (!endpoint.ok()) return Fail(endpoint.status());
  std::vector<std::string> endpoints = {*endpoint};
  for (std::string& other : OtherNodes(t, *endpoint)) endpoints.push_back(std::move(other));
  walship::rpc::ClusterClientOptions o;
  o.follow_hints = t.config.has_value();
  o.leader_wait = absl::Milliseconds(t.config.has_value() ? t.leader_wait_ms : 0);
  o.retry_for = absl::Milliseconds(t.retry_for_ms);
  o.connect_fn = [&t](const std::string& e) { return ConnectTo(t, e); };
  o.on_refusal = [](const std::string& line) {
    std::fprintf(stderr, "walship: %s\n", line.c_str());
  };
  walship::rpc::ClusterClient cluster(std::move(endpoints), std::move(o));
  auto r = t.request_id.empty() ? cluster.Write(ops) : cluster.WriteWithId(ops, t.request_id);
  if (!r.ok()) return Fail(r.status());
  if (!t.session_path.empty()) {
    if (absl::Status s = walship::tools::SaveSession(t.session_path, {r->epoch, r->last_seq});
        !s.ok()) {
      std::fprintf(stderr, "walship: the write is done, but %s\n",
                   std::string(s.message()).c_str());
    }
  }
  std::printf("OK seq %llu epoch %llu%s%s\n", static_cast<unsigned long long>(r->last_seq),
              static_cast<unsigned long long>(r->epoch),
              r->degraded ? " (degraded: not waited for the followers)" : "",
              r->duplicate ? " (already written with this request id: its first outcome)" : "");
  return 0;
}

// Parses `walship write` input: one op per line, blank lines and # comments skipped.
absl::StatusOr<std::vector<WriteOp>> ParseBatch(std::istream& in) {
  std::vector<WriteOp> ops;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    std::vector<std::string> f = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.empty() || f[0][0] == '#') continue;
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat("stdin:", line_no, ": ", why));
    };
    WriteOp op;
    size_t want = 0;
    if (f[0] == "put") {
      op.type = OpType::kPut;
      want = 3;
    } else if (f[0] == "del") {
      op.type = OpType::kDelete;
      want = 2;
    } else if (f[0] == "delrange") {
      op.type = OpType::kDeleteRange;
      want = 3;
    } else {
      return bad(absl::StrCat("unknown op '", f[0], "' (expected put, del or delrange)"));
    }
    if (f.size() != want) {
      return bad(absl::StrCat("'", f[0], "' takes ", want - 1, " argument(s), got ", f.size() - 1));
    }
    auto key = Arg(f[1]);
    if (!key.ok()) return bad(std::string(key.status().message()));
    op.key = *key;
    if (want == 3) {
      auto value = Arg(f[2]);
      if (!value.ok()) return bad(std::string(value.status().message()));
      op.value = *value;
    }
    ops.push_back(std::move(op));
  }
  if (ops.empty()) return absl::InvalidArgumentError("stdin: no ops to write");
  return ops;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"walship: client and admin tool for a walship cluster"};
  app.footer(
      "Keys and values are bytes. On the command line and in output, printable ASCII stands "
      "for itself and these escapes stand for the rest: \\\\ (backslash), \\n, \\t, \\r, \\0, "
      "\\s (space, for `write` input), \\xHH (any byte).\n"
      "Exit status: 0 ok, 1 not found, 2 bad usage or input, 3 other errors (unreachable, "
      "refused), 4 condition failed, 5 not replicated as asked, 6 in doubt (a write sent whose "
      "answer never came: it may or may not have been applied), 7 write lost (a read's "
      "position names a write that a later leader's history replaced: docs/reads.md).");
  Target t;
  app.add_option("--cluster", t.cluster_path, "cluster config file; talks to the leader")
      ->check(CLI::ExistingFile);
  app.add_option("--node", t.node, "with --cluster: talk to this node id instead");
  app.add_option("--endpoint", t.endpoint, "HOST:PORT of the node to talk to");
  app.add_option("--secret-file", t.secret_path,
                 "the cluster secret, for --endpoint (with --cluster the config names it); a "
                 "file only its owner may read");
  app.add_option("--tls-ca", t.tls_flags.ca_file,
                 "connect with TLS, trusting the CA certificates in FILE (with --cluster the "
                 "config's [tls] section gives them)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", t.tls_flags.cert_file,
                 "with --tls-ca: the client certificate to present (nodes that verify clients)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", t.tls_flags.key_file, "with --tls-cert: its private key")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-server-name", t.tls_flags.server_name,
                 "with --tls-ca: the name the node's certificate must carry (default: the "
                 "host dialed)");
  app.add_option("--timeout-ms", t.timeout_ms, "bound on connecting and on each call")
      ->capture_default_str();
  app.add_option("--session", t.session_path,
                 "read your writes across commands: writes and reads record their position in "
                 "FILE, and reads at any node wait until they hold it (docs/reads.md)");
  std::string after;
  app.require_subcommand(1);
  std::string mode, level, if_key, if_value;
  bool if_absent = false;
  auto* write_opts = app.add_option_group("write options", "for put, del, delrange and write");
  write_opts->add_option("--mode", mode, "async | semi-sync | sync (default: the cluster's)");
  write_opts->add_option("--acks", t.write.acks,
                         "semi-sync: acknowledged once N followers have the write");
  write_opts->add_option("--level", level,
                         "received | flushed | applied: how far each follower must have taken "
                         "it (default: the cluster's)");
  write_opts->add_option("--if-key", if_key,
                         "the key the condition is on (default: the command's KEY)");
  auto* if_value_opt = write_opts->add_option(
      "--if-value", if_value, "write only if the key holds exactly this value (exit 4 if not)");
  write_opts->add_flag("--if-absent", if_absent, "write only if the key is absent (exit 4 if not)")
      ->excludes(if_value_opt);
  write_opts->add_option("--request-id", t.request_id,
                         "the write's id (1-64 bytes, unique per write): the leader answers it "
                         "again with its first outcome instead of writing twice, so an answer "
                         "lost (in doubt), an unreachable node or no leader yet is asked again "
                         "with the same id");
  write_opts
      ->add_option("--retry-for-ms", t.retry_for_ms, "with --request-id: how long to keep asking")
      ->capture_default_str();
  write_opts
      ->add_option("--leader-wait-ms", t.leader_wait_ms,
                   "with --cluster: how long to keep asking while no node takes the write (no "
                   "node reachable, no leader yet: a failover under way); 0 asks once")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);

  std::string key, value, end;
  auto* put = app.add_subcommand("put", "write KEY = VALUE");
  put->add_option("KEY", key)->required();
  put->add_option("VALUE", value)->required();
  auto* get = app.add_subcommand("get", "print the value of KEY (exit 1 if absent)");
  get->add_option("KEY", key)->required();
  uint64_t min_seq = 0;
  get->add_option("--min-seq", min_seq, "refuse unless the node has applied this sequence");
  get->add_flag("--committed", t.read.committed,
                "leader: answer once the followers hold what the read sees (the cluster's "
                "replication level)");
  auto* del = app.add_subcommand("del", "delete KEY");
  del->add_option("KEY", key)->required();
  auto* delrange = app.add_subcommand("delrange", "delete keys in [BEGIN, END)");
  delrange->add_option("BEGIN", key)->required();
  delrange->add_option("END", end)->required();
  auto* scan = app.add_subcommand("scan", "print keys and values in order, tab-separated");
  // What a read asks for beyond the node's data as it is (docs/reads.md).
  for (CLI::App* read : {get, scan}) {
    read->add_option("--after", after,
                     "EPOCH:SEQ: answer once the node holds this position (a write's `OK seq "
                     "SEQ epoch EPOCH`) in the same history; exit 7 if it was lost");
    read->add_option("--max-lag-ms", t.read.max_lag_ms,
                     "answer only from a node that knows itself within N ms of its leader");
    read->add_option("--wait-ms", t.read.wait_ms,
                     "how long the node may wait for --after, --session or --max-lag-ms before "
                     "it answers unavailable (default 1000)");
  }
  std::string prefix, start;
  uint32_t limit = 100;
  scan->add_option("--prefix", prefix, "only keys starting with P");
  scan->add_option("--start", start, "first key at or after K");
  scan->add_option("--limit", limit, "at most N keys (up to 100000)")->capture_default_str();
  scan->add_flag("--committed", t.read.committed, "as get --committed");
  auto* write = app.add_subcommand(
      "write",
      "apply a batch read from stdin atomically: one 'put KEY VALUE', 'del KEY' or "
      "'delrange BEGIN END' per line");
  auto* status = app.add_subcommand("status", "show a node's role, sequence, followers and lag");
  bool json = false, all = false;
  get->add_flag("--json", json,
                "one JSON object: key, value (in the byte escapes), the position read");
  scan->add_flag("--json", json,
                 "one JSON object: items [{key, value}] (in the byte escapes), the position read");
  status->add_flag("--json", json, "one JSON object per node");
  status->add_flag("--all", all, "with --cluster: every node of the file");
  auto* handover =
      app.add_subcommand("handover",
                         "hand leadership to follower NODE: the leader stops taking writes, waits "
                         "until NODE has applied everything, and NODE leads in a new epoch");
  std::string target;
  uint32_t catch_up_ms = 10000;
  handover->add_option("NODE", target, "the node id of the follower to lead")->required();
  handover
      ->add_option("--catch-up-ms", catch_up_ms,
                   "how long NODE may take to catch up; past it the leader leads on")
      ->capture_default_str();
  auto* switchover = app.add_subcommand(
      "switchover", "the same as handover, by the name PostgreSQL's tools use: --to NODE");
  switchover->add_option("--to", target, "the node id of the follower to lead")->required();
  switchover
      ->add_option("--catch-up-ms", catch_up_ms,
                   "how long NODE may take to catch up; past it the leader leads on")
      ->capture_default_str();
  auto* checkpoint = app.add_subcommand(
      "checkpoint",
      "stream a consistent checkpoint of a node (the leader, or --node) into DIR "
      "on this machine, with a manifest; a copy cut off resumes when run again");
  std::string out_dir;
  checkpoint->add_option("--out", out_dir, "the directory to write (must not hold a checkpoint)")
      ->required();
  auto* add_follower =
      app.add_subcommand("add-follower",
                         "add node ID, listening on ADDRESS, to the running cluster as a learner: "
                         "start it with walshipd --node ID --listen ADDRESS --data-dir DIR; it is "
                         "seeded from a checkpoint, catches up and votes once ready");
  std::string member_id, member_address;
  int wait_s = 0;
  add_follower->add_option("ID", member_id, "the new node's id")->required();
  add_follower->add_option("ADDRESS", member_address, "HOST:PORT it listens on")->required();
  add_follower->add_option("--wait-s", wait_s,
                           "wait up to this many seconds until it votes, showing its progress "
                           "(0: return once the leader has saved the change)");
  auto* remove_follower =
      app.add_subcommand("remove-follower",
                         "remove node ID from the cluster: the leader stops streaming to it, "
                         "refuses it from then on, and no longer waits for it or counts it");
  remove_follower->add_option("ID", member_id, "the node to remove")->required();
  auto* reseed = app.add_subcommand(
      "reseed",
      "have follower --node (told it needs a snapshot) seed itself again from its "
      "leader's checkpoint; its data stays until the new copy is verified");
  auto* promote = app.add_subcommand(
      "promote",
      "force follower NODE to stand for leader now (failover = true): the voters "
      "elect it if its log is the most up to date and no leader is heard; refused "
      "when it may lose writes, unless --accept-loss");
  std::string promote_node;
  bool accept_loss = false;
  promote->add_option("NODE", promote_node, "the node id of the follower to promote")->required();
  promote->add_flag("--accept-loss", accept_loss,
                    "promote it even though its leader held writes it lacks (they are lost; "
                    "the old leader keeps them in a rollback file when it returns)");
  auto* rollback =
      app.add_subcommand("rollback",
                         "rollback files: what a node held past the point where its history parted "
                         "from its new leader's, kept before it was re-seeded (docs/failover.md)");
  auto* top = app.add_subcommand(
      "top", "a live view of the cluster (--cluster): roles, lag per follower, write rate");
  walship::tools::TopOptions top_options;
  top->add_option("--interval-ms", top_options.interval_ms, "refresh every N ms")
      ->capture_default_str();
  top->add_option("--iterations", top_options.iterations, "stop after N views (0: never)")
      ->capture_default_str();
  auto* config_cmd = app.add_subcommand("config", "check a cluster config file");
  auto* config_check = config_cmd->add_subcommand(
      "check", "read FILE as walshipd would: what it runs, or the first thing wrong (exit 2)");
  std::string check_file;
  config_check->add_option("FILE", check_file, "the cluster config file")->required();
  config_check->add_flag("--json", json, "one JSON object");
  config_cmd->require_subcommand(1);
  auto* verify = app.add_subcommand(
      "verify", "compare the replicas online at one sequence number, range by range");
  uint32_t verify_hold_ms = 2000, verify_range_keys = 10000;
  verify->add_option("--hold-ms", verify_hold_ms,
                     "the longest the leader holds its writes while the followers reach its "
                     "sequence number")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  verify->add_option("--range-keys", verify_range_keys, "keys per compared range")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000000));
  verify->add_flag("--json", json, "one JSON object");
  auto* wal_cmd = app.add_subcommand("wal", "a node's WAL, for debugging");
  auto* wal_show = wal_cmd->add_subcommand(
      "show", "print the batches a node would ship from --from SEQ on, decoded");
  uint64_t wal_from = 0;
  uint32_t wal_limit = 20;
  wal_show->add_option("--from", wal_from, "the first batch's sequence number")->required();
  wal_show->add_option("--limit", wal_limit, "at most this many batches (1 to 1000)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  wal_show->add_flag("--json", json, "one JSON object");
  wal_cmd->require_subcommand(1);
  auto* rollback_show = rollback->add_subcommand("show", "print a rollback file's writes");
  rollback_show->add_flag("--json", json, "one JSON object");
  std::string rollback_file;
  rollback_show->add_option("FILE", rollback_file, "DATA_DIR/rollback/rollback-*.txt")->required();
  rollback->require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints the help (exit 0) or what is wrong; every usage error exits 2.
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }

  if (rollback_show->parsed()) return DoRollbackShow(rollback_file, json);
  if (config_check->parsed()) {
    auto config = walship::tools::LoadConfig(check_file);
    if (!config.ok()) return Fail(config.status());  // kInvalidArgument: exit 2
    std::cout << walship::tools::DescribeConfig(*config, json);
    return 0;
  }
  if (!t.secret_path.empty()) {
    auto secret = walship::tools::LoadSecretFile(t.secret_path);
    if (!secret.ok()) return Fail(secret.status());
    t.connect.secret = *secret;
  }
  if (!t.tls_flags.ca_file.empty() || !t.tls_flags.cert_file.empty() ||
      !t.tls_flags.key_file.empty() || !t.tls_flags.server_name.empty()) {
    if (absl::Status s = walship::rpc::CheckTlsFiles(t.tls_flags, false, walship::rpc::TlsUse::kClient); !s.ok()) {
      return Fail(absl::InvalidArgumentError(s.message()));
    }
    t.connect.tls = t.tls_flags;
  }
  if (wal_show->parsed()) return DoWalShow(t, wal_from, wal_limit, json);
  if (verify->parsed()) return DoVerify(t, verify_hold_ms, verify_range_keys, json);
  if (handover->parsed() || switchover->parsed()) return DoHandover(t, target, catch_up_ms);
  if (checkpoint->parsed()) return DoCheckpoint(t, out_dir);
  if (add_follower->parsed()) return DoAddFollower(t, member_id, member_address, wait_s);
  if (remove_follower->parsed()) return DoRemoveFollower(t, member_id);
  if (promote->parsed()) return DoPromote(t, promote_node, accept_loss);

  if (t.read.max_lag_ms < -1) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--max-lag-ms ", t.read.max_lag_ms, " is negative")));
  }
  if (min_seq > 0 && (!after.empty() || !t.session_path.empty())) {
    return Fail(absl::InvalidArgumentError(
        "--min-seq is a bare sequence number: give --after EPOCH:SEQ instead with --session"
        " or --after"));
  }
  if (!after.empty() && !walship::replication::ParseToken(after, &t.read.after)) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--after '", after, "' is not EPOCH:SEQ (say 3:1042)")));
  }
  if (!t.session_path.empty()) {
    auto loaded = walship::tools::LoadSession(t.session_path);
    if (!loaded.ok()) return Fail(loaded.status());
    t.session = *loaded;
  }
  if (!mode.empty()) {
    auto m = walship::replication::ParseMode(mode);
    if (!m.ok()) return Fail(m.status());
    t.write.mode = *m;
  }
  if (!level.empty()) {
    auto l = walship::replication::ParseAckLevel(level);
    if (!l.ok()) return Fail(l.status());
    t.write.level = *l;
  }
  if (if_value_opt->count() > 0 || if_absent) {
    if ((write->parsed() || delrange->parsed()) && if_key.empty()) {
      return Fail(absl::InvalidArgumentError("a condition on write or delrange needs --if-key"));
    }
    auto k = Arg(if_key.empty() ? key : if_key);
    if (!k.ok()) return Fail(k.status());
    walship::engine::Condition c;
    c.key = *k;
    if (!if_absent) {
      auto v = Arg(if_value);
      if (!v.ok()) return Fail(v.status());
      c.value = *v;
    }
    t.write.condition = std::move(c);
  }

  if (put->parsed() || del->parsed() || delrange->parsed()) {
    auto k = Arg(key);
    if (!k.ok()) return Fail(k.status());
    WriteOp op;
    op.key = *k;
    if (put->parsed()) {
      auto v = Arg(value);
      if (!v.ok()) return Fail(v.status());
      op.type = OpType::kPut;
      op.value = *v;
    } else if (del->parsed()) {
      op.type = OpType::kDelete;
    } else {
      auto e = Arg(end);
      if (!e.ok()) return Fail(e.status());
      op.type = OpType::kDeleteRange;
      op.value = *e;
    }
    return DoWrite(t, {op});
  }
  if (write->parsed()) {
    auto ops = ParseBatch(std::cin);
    if (!ops.ok()) return Fail(ops.status());
    return DoWrite(t, *ops);
  }

  if (top->parsed()) {
    if (t.cluster_path.empty()) return Fail(absl::InvalidArgumentError("top needs --cluster"));
    auto config = walship::tools::LoadConfig(t.cluster_path);
    if (!config.ok()) return Fail(config.status());
    UseConfigSecurity(t, *config);
    for (const auto& n : config->nodes) top_options.nodes.emplace_back(n.id, n.advertise);
    top_options.connect = t.connect;
    top_options.timeout_ms = static_cast<uint32_t>(t.timeout_ms);
    top_options.redraw = ::isatty(STDOUT_FILENO) != 0;
    if (top_options.interval_ms == 0) {
      return Fail(absl::InvalidArgumentError("--interval-ms must be at least 1"));
    }
    return walship::tools::RunTop(top_options);
  }
  if (status->parsed() && all) {
    if (t.cluster_path.empty()) return Fail(absl::InvalidArgumentError("--all needs --cluster"));
    auto config = walship::tools::LoadConfig(t.cluster_path);
    if (!config.ok()) return Fail(config.status());
    UseConfigSecurity(t, *config);
    int rc = 0;
    for (const auto& n : config->nodes) {
      auto client = ConnectTo(t, n.advertise);
      absl::StatusOr<walship::rpc::NodeStatusInfo> s =
          client.ok() ? (*client)->Status()
                      : absl::StatusOr<walship::rpc::NodeStatusInfo>(client.status());
      if (!s.ok()) {
        std::fprintf(stderr, "walship: node %s: %s\n", n.id.c_str(),
                     std::string(s.status().message()).c_str());
        rc = kExitError;
        continue;
      }
      std::cout << (json ? walship::rpc::StatusToJson(*s) + "\n" : walship::rpc::StatusToText(*s));
    }
    return rc;
  }

  auto endpoint = Resolve(t);
  if (!endpoint.ok()) return Fail(endpoint.status());
  auto client = ConnectTo(t, *endpoint);
  if (!client.ok()) return Fail(client.status());
  if (get->parsed()) {
    auto k = Arg(key);
    if (!k.ok()) return Fail(k.status());
    auto v = (*client)->Get(*k, min_seq);
    if (v.ok() || absl::IsNotFound(v.status())) SaveReadPosition(t, **client);
    if (absl::IsNotFound(v.status())) {
      std::fprintf(stderr, "walship: not found\n");
      return kExitNotFound;
    }
    if (!v.ok()) return Fail(v.status());
    if (json) {
      walship::replication::ReadToken at = (*client)->last_read();
      std::cout << nlohmann::json{{"key", walship::tools::Escape(*k)},
                                  {"value", walship::tools::Escape(*v)},
                                  {"seq", at.seq},
                                  {"epoch", at.epoch}}
                       .dump()
                << "\n";
      return 0;
    }
    std::cout << walship::tools::Escape(*v) << "\n";
    return 0;
  }
  if (scan->parsed()) {
    walship::engine::ScanOptions options;
    auto p = Arg(prefix);
    auto s = Arg(start);
    if (!p.ok()) return Fail(p.status());
    if (!s.ok()) return Fail(s.status());
    options.prefix = *p;
    options.start = *s;
    options.limit = limit;
    auto kvs = (*client)->Scan(options);
    if (!kvs.ok()) return Fail(kvs.status());
    SaveReadPosition(t, **client);
    if (json) {
      nlohmann::json items = nlohmann::json::array();
      for (const auto& kv : *kvs) {
        items.push_back({{"key", walship::tools::Escape(kv.key)},
                         {"value", walship::tools::Escape(kv.value)}});
      }
      walship::replication::ReadToken at = (*client)->last_read();
      std::cout << nlohmann::json{{"items", items}, {"seq", at.seq}, {"epoch", at.epoch}}.dump()
                << "\n";
      return 0;
    }
    for (const auto& kv : *kvs) {
      std::cout << walship::tools::Escape(kv.key) << "\t" << walship::tools::Escape(kv.value)
                << "\n";
    }
    return 0;
  }
  if (reseed->parsed()) {
    if (absl::Status s = (*client)->Reseed(); !s.ok()) return Fail(s);
    std::printf("OK seeding from the leader; `walship --node %s status` shows the progress\n",
                t.node.empty() ? endpoint->c_str() : t.node.c_str());
    return 0;
  }
  if (status->parsed()) {
    auto s = (*client)->Status();
    if (!s.ok()) return Fail(s.status());
    std::cout << (json ? walship::rpc::StatusToJson(*s) + "\n" : walship::rpc::StatusToText(*s));
    return 0;
  }
  return kExitUsage;
}
