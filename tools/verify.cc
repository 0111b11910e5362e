#include "tools/verify.h"

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "tools/escape.h"

namespace walship::tools {
namespace {

using rpc::VerifyCall;

struct Node {
  std::string id;
  std::unique_ptr<rpc::Client> client;
};

absl::StatusOr<rpc::VerifyAnswer> Step(rpc::Client& c, VerifyCall call) { return c.Verify(call); }

}  // namespace

absl::StatusOr<VerifyReport> Verify(rpc::Client& leader, const VerifyOptions& o) {
  auto st = leader.Status();
  if (!st.ok()) return st.status();
  VerifyReport report;
  report.leader = st->node;
  std::vector<Node> followers;
  for (const replication::Member& m : st->members) {
    if (m.id == st->node) continue;
    // A follower waits for the leader's seq up to hold_ms before it answers.
    auto c = rpc::Client::Connect(m.address, o.timeout + absl::Milliseconds(o.hold_ms),
                                  o.connect);
    if (!c.ok()) {
      report.not_compared[m.id] = std::string(c.status().message());
      continue;
    }
    followers.push_back({m.id, std::move(*c)});
  }
  // The hold: the leader's snapshot, then each follower's at the same sequence number.
  auto held = Step(leader, VerifyCall{VerifyCall::kHold, 0, 0, 0, o.hold_ms, {}, 0});
  if (!held.ok()) return held.status();
  report.seq = held->seq;
  report.epoch = held->epoch;
  uint64_t id = held->id;
  std::vector<Node*> snapped;
  for (Node& f : followers) {
    auto at = Step(*f.client, VerifyCall{VerifyCall::kSnapshot, id, held->seq, held->epoch,
                                         o.hold_ms, {}, 0});
    if (at.ok()) {
      snapped.push_back(&f);
    } else {
      report.not_compared[f.id] = std::string(at.status().message());
    }
  }
  (void)Step(leader, VerifyCall{VerifyCall::kResume, id, 0, 0, 0, {}, 0});

  // The checksums, while writes go on (each a whole scan: on connections with a long
  // time-out): the leader's ranges, then the followers' over them.
  auto drop = [id](rpc::Client& c) {
    (void)Step(c, VerifyCall{VerifyCall::kDrop, id, 0, 0, 0, {}, 0});
  };
  auto long_leader = rpc::Client::Connect(leader.endpoint(), o.checksum_timeout, o.connect);
  if (!long_leader.ok()) return long_leader.status();
  auto mine =
      Step(**long_leader, VerifyCall{VerifyCall::kChecksum, id, 0, 0, 0, {}, o.range_keys});
  if (!mine.ok()) {
    drop(**long_leader);
    for (Node* f : snapped) drop(*f->client);
    return mine.status();
  }
  std::vector<rpc::RangeSum> reference = mine->ranges;
  // The leader's open range after its last key is empty; the followers' must be too.
  reference.push_back(rpc::RangeSum{"", 0, ""});
  std::vector<std::string> bounds;
  for (size_t i = 0; i + 1 < reference.size(); ++i) {
    bounds.push_back(reference[i].last_key);
    report.keys += reference[i].keys;
  }
  report.ranges = bounds.size();
  report.compared.push_back(report.leader);
  std::map<std::string, std::vector<rpc::RangeSum>> theirs;
  for (Node* f : snapped) {
    auto long_client = rpc::Client::Connect(f->client->endpoint(), o.checksum_timeout,
                                            o.connect);
    absl::StatusOr<rpc::VerifyAnswer> sums =
        long_client.ok()
            ? Step(**long_client, VerifyCall{VerifyCall::kChecksum, id, 0, 0, 0, bounds, 0})
            : absl::StatusOr<rpc::VerifyAnswer>(long_client.status());
    drop(*f->client);
    if (!sums.ok() || sums->ranges.size() != reference.size()) {
      report.not_compared[f->id] =
          sums.ok() ? absl::StrCat("answered ", sums->ranges.size(), " ranges for ",
                                   reference.size())
                    : std::string(sums.status().message());
      continue;
    }
    report.compared.push_back(f->id);
    theirs[f->id] = std::move(sums->ranges);
  }
  drop(**long_leader);

  for (size_t i = 0; i < reference.size() && !report.differs; ++i) {
    bool open = i + 1 == reference.size();
    for (const auto& [node, sums] : theirs) {
      // The open range: the leader has no key there, so any key there differs.
      bool same = open ? sums[i].keys == 0
                       : sums[i].keys == reference[i].keys && sums[i].digest == reference[i].digest;
      if (same) continue;
      report.differs = true;
      report.open_range = open;
      report.after = i == 0 ? "" : reference[i - 1].last_key;
      report.through = reference[i].last_key;
      report.sums[report.leader] = reference[i];
      for (const auto& [other, other_sums] : theirs) report.sums[other] = other_sums[i];
      break;
    }
  }
  return report;
}

std::string FormatVerify(const VerifyReport& r, bool json) {
  if (json) {
    nlohmann::json out = {{"leader", r.leader},       {"seq", r.seq},
                          {"epoch", r.epoch},         {"keys", r.keys},
                          {"ranges", r.ranges},       {"compared", r.compared},
                          {"not_compared", r.not_compared}, {"identical", !r.differs},
                          {"first_difference", nullptr}};
    if (r.differs) {
      nlohmann::json sums = nlohmann::json::object();
      for (const auto& [node, s] : r.sums) {
        sums[node] = {{"keys", s.keys}, {"sum", absl::BytesToHexString(s.digest)}};
      }
      out["first_difference"] = {{"after", Escape(r.after)},
                                 {"through", r.open_range ? nlohmann::json(nullptr)
                                                          : nlohmann::json(Escape(r.through))},
                                 {"sums", sums}};
    }
    return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  std::string nodes;
  for (const std::string& id : r.compared) {
    absl::StrAppend(&nodes, nodes.empty() ? "" : ", ", id, id == r.leader ? " (leader)" : "");
  }
  std::string text;
  if (!r.differs) {
    absl::StrAppend(&text, "OK at seq ", r.seq, " (epoch ", r.epoch, "): ", nodes,
                    " identical: ", r.keys, " keys in ", r.ranges, r.ranges == 1 ? " range" : " ranges",
                    "\n");
  } else {
    std::string where =
        r.open_range ? absl::StrCat("keys after \"", Escape(r.after), "\" (the leader's last)")
        : r.after.empty()
            ? absl::StrCat("keys through \"", Escape(r.through), "\"")
            : absl::StrCat("keys after \"", Escape(r.after), "\" through \"", Escape(r.through),
                           "\"");
    absl::StrAppend(&text, "DIFFERENT at seq ", r.seq, " (epoch ", r.epoch,
                    "): the first range that differs holds ", where, "\n");
    for (const auto& [node, s] : r.sums) {
      absl::StrAppend(&text, "  ", node, node == r.leader ? " (leader)" : "", ": ", s.keys,
                      " keys", s.digest.empty() ? "" : absl::StrCat(", sum ",
                                                                   absl::BytesToHexString(s.digest)),
                      "\n");
    }
    absl::StrAppend(&text, "  compared: ", nodes, "\n");
  }
  for (const auto& [node, why] : r.not_compared) {
    absl::StrAppend(&text, "  ", node, ": not compared: ", why, "\n");
  }
  return text;
}

}  // namespace walship::tools
