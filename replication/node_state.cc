#include "replication/node_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/check.h"
#include "replication/durable_file.h"
#include "replication/slot_file.h"

namespace walship::replication {
namespace {

constexpr char kMagic[] = "walship-node-state";
// A history entry's leader when it is unknown (read from a version 1 file), and a member's
// address when it is not known.
constexpr char kUnknownLeader[] = "-";

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status FsyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return Errno("cannot open", path);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("cannot fsync", path);
  return absl::OkStatus();
}

}  // namespace

// The lines of a node-state file (`text`, read from `path`).
absl::StatusOr<NodeState> ParseState(const std::string& path, const std::string& text);

const char* HelloOutcomeName(HelloOutcome outcome) {
  switch (outcome) {
    case HelloOutcome::kAccepted: return "accepted";
    case HelloOutcome::kNeedsSnapshot: return "needs snapshot";
    case HelloOutcome::kRefused: return "refused";
  }
  return "?";
}

const char* AckOutcomeName(AckOutcome outcome) {
  switch (outcome) {
    case AckOutcome::kOk: return "ok";
    case AckOutcome::kGap: return "gap";
    case AckOutcome::kStale: return "stale";
    case AckOutcome::kFailed: return "failed";
  }
  return "?";
}

Epoch NodeState::EpochOf(SequenceNumber seq) const {
  const EpochEntry* e = EntryOf(seq);
  return e == nullptr ? 0 : e->epoch;
}

const EpochEntry* NodeState::EntryOf(SequenceNumber seq) const {
  const EpochEntry* found = nullptr;
  for (const EpochEntry& e : history) {
    if (e.start_seq <= seq) found = &e;
  }
  return found;
}

Epoch NodeState::HighestEpoch() const {
  return std::max({epoch, history.empty() ? Epoch{0} : history.back().epoch, vote_epoch});
}

void BeginEpoch(NodeState& state, SequenceNumber next_seq, const std::string& leader_id) {
  BeginElectedEpoch(state, next_seq, leader_id, state.HighestEpoch() + 1);
}

void BeginElectedEpoch(NodeState& state, SequenceNumber next_seq, const std::string& leader_id,
                       Epoch epoch) {
  WALSHIP_CHECKF(epoch > state.epoch &&
                     (state.history.empty() || epoch > state.history.back().epoch),
                 "epoch %llu is not above the node's epoch %llu",
                 static_cast<unsigned long long>(epoch),
                 static_cast<unsigned long long>(state.epoch));
  while (!state.history.empty() && state.history.back().start_seq >= next_seq) {
    state.history.pop_back();
  }
  state.history.push_back({epoch, next_seq, leader_id});
  state.epoch = epoch;
}

absl::Status ValidateHistory(const std::vector<EpochEntry>& history) {
  for (size_t i = 1; i < history.size(); ++i) {
    if (history[i].epoch <= history[i - 1].epoch ||
        history[i].start_seq < history[i - 1].start_seq) {
      return absl::InvalidArgumentError(absl::StrCat(
          "epoch history out of order at entry ", i, ": (", history[i - 1].epoch, ", ",
          history[i - 1].start_seq, ") then (", history[i].epoch, ", ", history[i].start_seq,
          ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateState(const NodeState& state) {
  if (absl::Status s = ValidateHistory(state.history); !s.ok()) return s;
  if (!state.role.empty() && state.role != "leader" && state.role != "follower") {
    return absl::InvalidArgumentError(absl::StrCat("unknown role '", state.role, "'"));
  }
  for (const std::string* id : {&state.leader, &state.handover_to, &state.voted_for}) {
    if (id->find_first_of(" \n") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("node id '", *id, "' holds a space"));
    }
  }
  if (absl::Status s = ValidateMembership(state.membership); !s.ok()) return s;
  if (!state.history.empty() && state.epoch < state.history.back().epoch) {
    return absl::InvalidArgumentError(absl::StrCat("current epoch ", state.epoch,
                                                   " is below the history's last epoch ",
                                                   state.history.back().epoch));
  }
  return absl::OkStatus();
}

absl::StatusOr<NodeState> LoadNodeState(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) return NodeState{};
    return Errno("cannot read", path);
  }
  std::string contents((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (file.bad()) return Errno("cannot read", path);
  if (!LooksLikeSlotFile(contents)) return ParseState(path, contents);  // an older text file
  absl::StatusOr<SlotRead> slots = ReadSlots(path, contents);
  if (!slots.ok()) return slots.status();
  return ParseState(path, slots->body);
}

absl::StatusOr<NodeState> ParseState(const std::string& path, const std::string& text) {
  std::istringstream in(text);
  NodeState state;
  std::string line;
  int line_no = 0;
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(path, ":", line_no, ": ", why));
  };
  int version = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line_no == 1) {
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      if (f.size() != 2 || f[0] != kMagic || !absl::SimpleAtoi(f[1], &version)) {
        return bad(absl::StrCat("not a walship node-state file (expected '", kMagic,
                                " <version>')"));
      }
      if (version < 1 || version > kNodeStateVersion) {
        return absl::FailedPreconditionError(absl::StrCat(
            path, " has node-state format version ", version, "; this walship reads versions 1 "
            "to ", kNodeStateVersion, " (written by a newer walship? run that version)"));
      }
      continue;
    }
    if (absl::StartsWith(line, "needs_snapshot ")) {
      state.needs_snapshot = line.substr(std::string("needs_snapshot ").size());
      continue;
    }
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.empty()) continue;
    auto num = [&](const std::string& s, uint64_t* out) {
      char* end = nullptr;
      errno = 0;
      *out = std::strtoull(s.c_str(), &end, 10);
      return errno == 0 && end != s.c_str() && *end == '\0';
    };
    if (f[0] == "database_id" && f.size() == 2) {
      state.database_id = f[1];
    } else if (f[0] == "role" && f.size() == 2 && (f[1] == "leader" || f[1] == "follower")) {
      state.role = f[1];
    } else if (f[0] == "leader" && f.size() == 2) {
      state.leader = f[1];
    } else if (f[0] == "handover_to" && f.size() == 2) {
      state.handover_to = f[1];
    } else if (f[0] == "epoch" && f.size() == 2) {
      if (!num(f[1], &state.epoch)) return bad("epoch is not a number");
    } else if (f[0] == "vote" && f.size() == 3 && version >= 4) {
      if (!num(f[1], &state.vote_epoch)) return bad("vote needs an epoch and a node id");
      state.voted_for = f[2];
    } else if (f[0] == "membership" && f.size() == 2 && version >= 3) {
      if (!num(f[1], &state.membership.version)) return bad("membership is not a number");
    } else if (f[0] == "member" && f.size() == 4 && version >= 3 &&
               (f[3] == "voter" || f[3] == "learner")) {
      state.membership.members.push_back(
          Member{f[1], f[2] == kUnknownLeader ? "" : f[2], f[3] == "voter"});
    } else if (f[0] == "history" && f.size() == (version == 1 ? 3u : 4u)) {
      EpochEntry e;
      if (!num(f[1], &e.epoch) || !num(f[2], &e.start_seq)) {
        return bad("history needs an epoch and a sequence number");
      }
      if (version >= 2 && f[3] != kUnknownLeader) e.leader = f[3];
      state.history.push_back(e);
    } else {
      return bad(absl::StrCat("unknown line '", line, "'"));
    }
  }
  if (line_no == 0) return absl::DataLossError(absl::StrCat(path, ": empty state file"));
  if (absl::Status s = ValidateState(state); !s.ok()) {
    return absl::DataLossError(absl::StrCat(path, " is damaged: ", s.message()));
  }
  return state;
}

absl::Status SaveNodeState(const std::string& path, const NodeState& state) {
  if (absl::Status s = ValidateState(state); !s.ok()) {
    return absl::InternalError(absl::StrCat("refusing to save ", path, ": ", s.message()));
  }
  for (const EpochEntry& e : state.history) {
    if (e.leader.find_first_of(" \n") != std::string::npos || e.leader == kUnknownLeader) {
      return absl::InternalError(absl::StrCat("refusing to save ", path, ": epoch ", e.epoch,
                                              " names leader '", e.leader,
                                              "', which the file cannot hold"));
    }
  }
  std::ostringstream out;
  out << kMagic << " " << kNodeStateVersion << "\n";
  if (!state.database_id.empty()) out << "database_id " << state.database_id << "\n";
  out << "epoch " << state.epoch << "\n";
  if (!state.role.empty()) out << "role " << state.role << "\n";
  if (!state.leader.empty()) out << "leader " << state.leader << "\n";
  if (!state.handover_to.empty()) out << "handover_to " << state.handover_to << "\n";
  if (state.vote_epoch > 0 && !state.voted_for.empty()) {
    out << "vote " << state.vote_epoch << " " << state.voted_for << "\n";
  }
  for (const EpochEntry& e : state.history) {
    out << "history " << e.epoch << " " << e.start_seq << " "
        << (e.leader.empty() ? kUnknownLeader : e.leader) << "\n";
  }
  if (state.membership.version > 0) {
    out << "membership " << state.membership.version << "\n";
    for (const Member& m : state.membership.members) {
      out << "member " << m.id << " " << (m.address.empty() ? kUnknownLeader : m.address) << " "
          << (m.voter ? "voter" : "learner") << "\n";
    }
  }
  if (!state.needs_snapshot.empty()) {
    std::string why = state.needs_snapshot;
    std::replace(why.begin(), why.end(), '\n', ' ');
    out << "needs_snapshot " << why << "\n";
  }
  return WriteSlotFile(path, out.str());
}

absl::Status WriteFileDurably(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return Errno("cannot create", tmp);
  ssize_t written = ::write(fd, text.data(), text.size());
  bool ok = written == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return Errno("cannot write", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Errno("cannot rename onto", path);
  std::string dir = path.substr(0, path.find_last_of('/') == std::string::npos
                                       ? 0
                                       : path.find_last_of('/'));
  return FsyncPath(dir.empty() ? "." : dir, O_RDONLY | O_DIRECTORY);
}

std::string NewDatabaseId() {
  std::random_device rd;
  std::mt19937_64 rng((uint64_t{rd()} << 32) ^ rd());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

}  // namespace walship::replication
