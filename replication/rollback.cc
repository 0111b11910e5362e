#include "replication/rollback.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "replication/durable_file.h"

namespace walship::replication {
namespace {

constexpr char kMagic[] = "walship-rollback";
constexpr int kVersion = 1;

// The end of history entry i of `h` in a log ending at `latest`.
SequenceNumber EntryEnd(const std::vector<EpochEntry>& h, size_t i, SequenceNumber latest) {
  return i + 1 < h.size() ? h[i + 1].start_seq - 1 : latest;
}

// C escapes, and spaces too, so that fields split on spaces.
std::string Esc(const std::string& s) {
  std::string e = absl::CEscape(s);
  std::string out;
  for (char c : e) {
    if (c == ' ') {
      out += "\\x20";
    } else {
      out += c;
    }
  }
  return out;
}

const char* OpName(engine::OpType t) {
  switch (t) {
    case engine::OpType::kPut:
      return "put";
    case engine::OpType::kDelete:
      return "delete";
    case engine::OpType::kDeleteRange:
      return "delete-range";
  }
  return "?";
}

}  // namespace

SequenceNumber DivergenceStart(const std::vector<EpochEntry>& ours, SequenceNumber our_latest,
                               const std::vector<EpochEntry>& theirs, SequenceNumber their_latest) {
  for (size_t i = 0; i < ours.size(); ++i) {
    SequenceNumber start = std::max<SequenceNumber>(ours[i].start_seq, 1);
    SequenceNumber end = std::min(EntryEnd(ours, i, our_latest), our_latest);
    if (start > end) continue;  // an epoch in which this node holds nothing
    // The leader's entry of the same epoch, begun by the same node, holds [start, its end].
    SequenceNumber common_end = start - 1;
    for (size_t j = 0; j < theirs.size(); ++j) {
      if (!theirs[j].SameEpoch(ours[i])) continue;
      SequenceNumber their_end = std::min(EntryEnd(theirs, j, their_latest), their_latest);
      if (theirs[j].start_seq <= start) common_end = std::min(end, their_end);
    }
    if (common_end < end) return common_end + 1;
  }
  return our_latest + 1;
}

absl::StatusOr<Rollback> WriteRollbackFile(engine::Engine& engine, const NodeState& ours,
                                           const RollbackHeader& header, const std::string& path) {
  Rollback rb;
  rb.header = header;
  absl::StatusOr<std::unique_ptr<engine::WalCursor>> cursor = engine.NewWalCursor(header.first);
  SequenceNumber next = header.first;
  if (cursor.ok()) {
    while (next <= header.last) {
      absl::StatusOr<std::optional<engine::Batch>> b = (*cursor)->Next();
      if (!b.ok() || !b->has_value()) break;
      absl::StatusOr<std::vector<engine::WriteOp>> ops = engine::DecodeBatch(**b);
      if (!ops.ok()) return ops.status();
      SequenceNumber seq = (*b)->first_seq;
      for (engine::WriteOp& op : *ops) {
        rb.ops.push_back(RollbackOp{seq, ours.EpochOf(seq), std::move(op)});
        ++seq;
      }
      next = (*b)->first_seq + (*b)->count;
    }
  }
  if (next <= header.last) rb.missing.emplace_back(next, header.last);

  std::ostringstream out;
  out << kMagic << " " << kVersion << "\n"
      << "cluster " << header.cluster << "\n"
      << "database " << header.database_id << "\n"
      << "node " << header.node << "\n"
      << "range " << header.first << " " << header.last << "\n"
      << "leader " << header.leader << " " << header.leader_epoch << " " << header.leader_latest
      << "\n"
      << "written " << header.written_unix_s << "\n";
  for (const auto& [first, last] : rb.missing) out << "missing " << first << " " << last << "\n";
  for (const RollbackOp& r : rb.ops) {
    out << "op " << r.seq << " " << r.epoch << " " << OpName(r.op.type) << " " << Esc(r.op.key);
    if (r.op.type != engine::OpType::kDelete) out << " " << Esc(r.op.value);
    out << "\n";
  }
  out << "end " << rb.ops.size() << "\n";
  if (absl::Status s = WriteFileDurably(path, out.str()); !s.ok()) return s;
  return rb;
}

absl::StatusOr<Rollback> ReadRollbackFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  Rollback rb;
  std::string line;
  int n = 0;
  bool ended = false;
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(path, ":", n, ": ", why));
  };
  while (std::getline(in, line)) {
    ++n;
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (ended) return bad("text after the end line");
    if (n == 1) {
      if (f.size() != 2 || f[0] != kMagic) return bad("not a walship rollback file");
      if (f[1] != std::to_string(kVersion)) {
        return absl::FailedPreconditionError(absl::StrCat(path, ": rollback file format version ",
                                                          f[1], "; this build reads version ",
                                                          kVersion));
      }
      continue;
    }
    auto num = [&](size_t i, uint64_t* v) { return i < f.size() && absl::SimpleAtoi(f[i], v); };
    const std::string& k = f[0];
    if (k == "cluster" && f.size() == 2) {
      rb.header.cluster = f[1];
    } else if (k == "database" && f.size() == 2) {
      rb.header.database_id = f[1];
    } else if (k == "node" && f.size() == 2) {
      rb.header.node = f[1];
    } else if (k == "range" && f.size() == 3 && num(1, &rb.header.first) &&
               num(2, &rb.header.last)) {
    } else if (k == "leader" && f.size() == 4 && num(2, &rb.header.leader_epoch) &&
               num(3, &rb.header.leader_latest)) {
      rb.header.leader = f[1];
    } else if (k == "written" && f.size() == 2 &&
               absl::SimpleAtoi(f[1], &rb.header.written_unix_s)) {
    } else if (k == "missing" && f.size() == 3) {
      uint64_t a = 0, b = 0;
      if (!num(1, &a) || !num(2, &b)) return bad("a malformed missing line");
      rb.missing.emplace_back(a, b);
    } else if (k == "op" && f.size() >= 5) {
      RollbackOp r;
      if (!num(1, &r.seq) || !num(2, &r.epoch)) return bad("a malformed op line");
      size_t want = 6;
      if (f[3] == "put") {
        r.op.type = engine::OpType::kPut;
      } else if (f[3] == "delete") {
        r.op.type = engine::OpType::kDelete;
        want = 5;
      } else if (f[3] == "delete-range") {
        r.op.type = engine::OpType::kDeleteRange;
      } else {
        return bad(absl::StrCat("unknown op '", f[3], "'"));
      }
      if (f.size() != want || !absl::CUnescape(f[4], &r.op.key) ||
          (want == 6 && !absl::CUnescape(f[5], &r.op.value))) {
        return bad("a malformed op line");
      }
      rb.ops.push_back(std::move(r));
    } else if (k == "end" && f.size() == 2) {
      uint64_t count = 0;
      if (!num(1, &count) || count != rb.ops.size()) {
        return bad(
            absl::StrCat("the end line counts ", f[1], " ops; the file holds ", rb.ops.size()));
      }
      ended = true;
    } else {
      return bad(absl::StrCat("unexpected line '", line.substr(0, 80), "'"));
    }
  }
  if (n == 0) return absl::DataLossError(absl::StrCat(path, ": empty"));
  if (!ended) return bad("cut short: no end line");
  return rb;
}

}  // namespace walship::replication
