#include "replication/seeding.h"

#include <algorithm>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace walship::replication {
namespace {

constexpr char kMagic[] = "walship-checkpoint";
constexpr char kNone[] = "-";  // an empty field (a leader not known)

bool SafeName(absl::string_view name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of("/ \n\t\r") == absl::string_view::npos &&
         name.find('\0') == absl::string_view::npos;
}

bool SafeWord(absl::string_view w) {
  return !w.empty() && w.find_first_of(" \n\t\r") == absl::string_view::npos;
}

template <typename T>
bool Num(absl::string_view s, T* out) {
  return absl::SimpleAtoi(s, out);
}

}  // namespace

uint64_t SnapshotManifest::TotalBytes() const {
  uint64_t n = 0;
  for (const SnapshotFile& f : files) n += f.size;
  return n;
}

std::string FormatManifest(const SnapshotManifest& m) {
  std::string out = absl::StrCat(kMagic, " ", kManifestVersion, "\n");
  absl::StrAppend(&out, "cluster ", m.cluster, "\n");
  absl::StrAppend(&out, "database_id ", m.database_id, "\n");
  absl::StrAppend(&out, "source ", m.source, "\n");
  absl::StrAppend(&out, "seq ", m.seq, "\n");
  absl::StrAppend(&out, "epoch ", m.epoch, "\n");
  absl::StrAppend(&out, "taken_unix_ms ", m.taken_unix_ms, "\n");
  for (const EpochEntry& e : m.history) {
    absl::StrAppend(&out, "history ", e.epoch, " ", e.start_seq, " ",
                    e.leader.empty() ? kNone : e.leader, "\n");
  }
  for (const SnapshotFile& f : m.files) absl::StrAppend(&out, "file ", FormatVerified(f));
  return out;
}

absl::StatusOr<SnapshotManifest> ParseManifest(absl::string_view text, absl::string_view where) {
  SnapshotManifest m;
  int line_no = 0;
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(where, ":", line_no, ": ", why));
  };
  bool have_cluster = false, have_db = false, have_seq = false;
  std::map<std::string, bool> names;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (line.empty()) continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    if (line_no == 1) {
      int version = 0;
      if (f.size() != 2 || f[0] != kMagic || !Num(f[1], &version)) {
        return bad(absl::StrCat("not a walship checkpoint manifest (expected '", kMagic,
                                " <version>')"));
      }
      if (version != kManifestVersion) {
        return absl::FailedPreconditionError(absl::StrCat(
            where, " is a checkpoint manifest of format version ", version,
            "; this walship reads version ", kManifestVersion));
      }
      continue;
    }
    if (f[0] == "cluster" && f.size() == 2 && SafeWord(f[1])) {
      m.cluster = std::string(f[1]), have_cluster = true;
    } else if (f[0] == "database_id" && f.size() == 2 && SafeWord(f[1])) {
      m.database_id = std::string(f[1]), have_db = true;
    } else if (f[0] == "source" && f.size() == 2) {
      m.source = std::string(f[1]);
    } else if (f[0] == "seq" && f.size() == 2) {
      if (!Num(f[1], &m.seq)) return bad("seq is not a number");
      have_seq = true;
    } else if (f[0] == "epoch" && f.size() == 2) {
      if (!Num(f[1], &m.epoch)) return bad("epoch is not a number");
    } else if (f[0] == "taken_unix_ms" && f.size() == 2) {
      if (!Num(f[1], &m.taken_unix_ms)) return bad("taken_unix_ms is not a number");
    } else if (f[0] == "history" && f.size() == 4) {
      EpochEntry e;
      if (!Num(f[1], &e.epoch) || !Num(f[2], &e.start_seq)) {
        return bad("history needs an epoch and a sequence number");
      }
      if (f[3] != kNone) e.leader = std::string(f[3]);
      m.history.push_back(std::move(e));
    } else if (f[0] == "file" && f.size() == 4) {
      SnapshotFile file;
      file.name = std::string(f[1]);
      if (!SafeName(file.name)) return bad(absl::StrCat("unsafe file name '", file.name, "'"));
      if (!Num(f[2], &file.size) || !Num(f[3], &file.crc)) {
        return bad("file needs a size and a checksum");
      }
      if (!names.emplace(file.name, true).second) {
        return bad(absl::StrCat("file '", file.name, "' is listed twice"));
      }
      m.files.push_back(std::move(file));
    } else {
      return bad(absl::StrCat("unknown line '", line, "'"));
    }
  }
  if (line_no == 0 || text.empty()) return absl::DataLossError(absl::StrCat(where, ": empty"));
  if (!have_cluster || !have_db || !have_seq) {
    return absl::DataLossError(
        absl::StrCat(where, ": incomplete (needs cluster, database_id and seq)"));
  }
  if (m.files.empty()) return absl::DataLossError(absl::StrCat(where, ": lists no files"));
  if (absl::Status s = ValidateHistory(m.history); !s.ok()) {
    return absl::DataLossError(absl::StrCat(where, ": ", s.message()));
  }
  if (!m.history.empty() && m.epoch < m.history.back().epoch) {
    return absl::DataLossError(absl::StrCat(where, ": epoch ", m.epoch,
                                            " is below its history's last epoch"));
  }
  return m;
}

absl::StatusOr<std::vector<SnapshotFile>> ParseVerified(absl::string_view text,
                                                        absl::string_view where) {
  std::vector<SnapshotFile> out;
  // A line is appended whole with its newline; one cut short by a crash has none, and what it
  // names is fetched again.
  text = text.substr(0, text.rfind('\n') == absl::string_view::npos ? 0 : text.rfind('\n') + 1);
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (line.empty()) continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    SnapshotFile file;
    if (f.size() != 3 || !SafeName(f[0]) || !Num(f[1], &file.size) || !Num(f[2], &file.crc)) {
      return absl::DataLossError(absl::StrCat(where, ":", line_no, ": malformed '", line, "'"));
    }
    file.name = std::string(f[0]);
    out.push_back(std::move(file));
  }
  return out;
}

std::string FormatVerified(const SnapshotFile& f) {
  return absl::StrCat(f.name, " ", f.size, " ", f.crc, "\n");
}

absl::Status CheckSeedFor(const SnapshotManifest& m, const std::string& cluster,
                          const NodeState& state) {
  if (m.cluster != cluster) {
    return absl::FailedPreconditionError(
        absl::StrCat("the checkpoint belongs to cluster '", m.cluster, "', this node to cluster '",
                     cluster, "'"));
  }
  if (!state.database_id.empty() && state.database_id != m.database_id) {
    return absl::FailedPreconditionError(
        absl::StrCat("the checkpoint holds database ", m.database_id, ", this node database ",
                     state.database_id, " (a node is only ever re-seeded with its own database)"));
  }
  return absl::OkStatus();
}

FetchPlan PlanFetch(const SnapshotManifest& m, const std::vector<SnapshotFile>& verified) {
  FetchPlan plan;
  std::map<std::string, const SnapshotFile*> listed;
  for (const SnapshotFile& f : m.files) listed[f.name] = &f;
  std::map<std::string, bool> kept;
  for (const SnapshotFile& v : verified) {
    auto it = listed.find(v.name);
    if (it != listed.end() && *it->second == v && !kept.count(v.name)) {
      kept[v.name] = true;
    } else if (!kept.count(v.name)) {
      plan.remove.push_back(v.name);
    }
  }
  for (const SnapshotFile& f : m.files) {
    if (kept.count(f.name)) {
      plan.keep.push_back(f);
      plan.kept_bytes += f.size;
    } else {
      plan.fetch.push_back(f);
      plan.fetch_bytes += f.size;
    }
  }
  return plan;
}

bool ResumesPartial(const SnapshotManifest* previous, const SnapshotFile& f) {
  if (previous == nullptr) return false;
  for (const SnapshotFile& p : previous->files) {
    if (p.name == f.name) return p == f;
  }
  return false;
}

NodeState StateAfterSeed(const NodeState& old, const SnapshotManifest& m,
                         const std::string& leader) {
  NodeState s;
  s.database_id = m.database_id;
  s.history = m.history;
  s.epoch = std::max(m.epoch, old.HighestEpoch());
  s.role = "follower";
  s.leader = leader;
  s.membership = old.membership;  // who belongs to the cluster is not the checkpoint's to say
  // A vote granted while seeded stays granted: never a second one in its epoch.
  s.vote_epoch = old.vote_epoch;
  s.voted_for = old.voted_for;
  return s;
}

absl::StatusOr<ReseedPolicy> ParseReseedPolicy(absl::string_view s) {
  if (s == "automatic") return ReseedPolicy::kAutomatic;
  if (s == "operator") return ReseedPolicy::kOperator;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown reseed policy '", s, "' (expected automatic or operator)"));
}

const char* Describe(ReseedPolicy p) {
  return p == ReseedPolicy::kAutomatic ? "automatic" : "operator";
}

bool IsReady(SequenceNumber applied, SequenceNumber leader_latest, uint64_t ready_lag) {
  return leader_latest <= applied || leader_latest - applied <= ready_lag;
}

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) v /= 1024, ++u;
  return absl::StrFormat(v < 10 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

std::string DescribeProgress(const SeedProgress& p) {
  std::string from = p.source.empty() ? "" : absl::StrCat(" from ", p.source);
  switch (p.phase) {
    case SeedProgress::Phase::kConnecting:
      return absl::StrCat("snapshot: asking ", p.source.empty() ? "the leader" : p.source,
                          p.error.empty() ? "" : absl::StrCat(" (last attempt: ", p.error, ")"));
    case SeedProgress::Phase::kCopying: {
      uint64_t pct = p.total_bytes == 0 ? 100 : p.done_bytes * 100 / p.total_bytes;
      return absl::StrCat("snapshot: copying ", pct, "% (", HumanBytes(p.done_bytes), " of ",
                          HumanBytes(p.total_bytes), ", ", HumanBytes(p.bytes_per_sec), "/s)",
                          from);
    }
    case SeedProgress::Phase::kVerifying:
      return absl::StrCat("snapshot: verifying ", HumanBytes(p.total_bytes), from);
    case SeedProgress::Phase::kInstalling:
      return absl::StrCat("snapshot: installing ", HumanBytes(p.total_bytes), from);
    case SeedProgress::Phase::kFailed:
      return absl::StrCat("snapshot: failed", from, ": ", p.error);
  }
  return "snapshot";
}

}  // namespace walship::replication
