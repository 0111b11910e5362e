#include "replication/reads.h"

#include <cstdint>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace walship::replication {
namespace {

std::string Where(const ReadPosition& at) {
  return absl::StrCat("this node has applied up to seq ", at.applied, " (epoch ",
                      at.applied_epoch, ")");
}

}  // namespace

ReadToken Later(const ReadToken& a, const ReadToken& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  if (a.epoch != b.epoch) return a.epoch > b.epoch ? a : b;
  return a.seq >= b.seq ? a : b;
}

std::string TokenText(const ReadToken& t) { return absl::StrCat(t.epoch, ":", t.seq); }

bool ParseToken(const std::string& text, ReadToken* t) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  return parts.size() == 2 && absl::SimpleAtoi(parts[0], &t->epoch) &&
         absl::SimpleAtoi(parts[1], &t->seq);
}

ReadPosition PositionIn(const NodeState& state, SequenceNumber applied,
                        SequenceNumber token_seq) {
  ReadPosition p;
  p.applied = applied;
  p.applied_epoch = state.EpochOf(applied);
  p.token_seq_epoch = token_seq == 0 ? 0 : state.EpochOf(token_seq);
  p.history_epoch = state.history.empty() ? 0 : state.history.back().epoch;
  return p;
}

ReadCheck CheckRead(const ReadNeeds& needs, const ReadPosition& at) {
  if (!at.refusal.empty()) return {ReadVerdict::kUnavailable, at.refusal};
  const ReadToken& t = needs.after;
  if (!t.empty()) {
    const bool applied = t.seq <= at.applied;
    if (t.epoch == 0) {
      // A bare sequence number: whatever history it was written in.
      if (!applied) {
        return {ReadVerdict::kWait, absl::StrCat(Where(at), "; the read needs seq ", t.seq, ": ",
                                                 t.seq - at.applied, " behind")};
      }
    } else if (at.token_seq_epoch != t.epoch && at.history_epoch > t.epoch) {
      return {ReadVerdict::kLost,
              absl::StrCat("the read's token ", TokenText(t), " names a write that is not in "
                           "the history this node follows: there seq ", t.seq,
                           " is written under epoch ", at.token_seq_epoch, ", and epoch ",
                           at.history_epoch, " replaced epoch ", t.epoch,
                           " (the write was lost in a failover)")};
    } else if (at.token_seq_epoch != t.epoch && applied) {
      return {ReadVerdict::kUnavailable,
              absl::StrCat(Where(at), " in a history that parts from the read's (its seq ", t.seq,
                           " is written under epoch ", at.token_seq_epoch, ", the token's under ",
                           t.epoch, "): this node holds a tail a later leader replaced")};
    } else if (!applied) {
      return {ReadVerdict::kWait, absl::StrCat(Where(at), "; the read needs ", TokenText(t), ": ",
                                               t.seq - at.applied, " behind")};
    }
  }
  if (needs.max_lag_ms >= 0) {
    if (at.lag_us < 0) {
      return {ReadVerdict::kWait,
              absl::StrCat("this node does not know itself caught up with a leader; the read "
                           "asks for a lag of at most ", needs.max_lag_ms, " ms")};
    }
    // (A bound past what microseconds can hold is no bound: it never overflows.)
    if (needs.max_lag_ms < INT64_MAX / 1000 && at.lag_us > needs.max_lag_ms * 1000) {
      return {ReadVerdict::kWait,
              absl::StrCat("this node last knew itself caught up with its leader ",
                           at.lag_us / 1000, " ms ago; the read asks for at most ",
                           needs.max_lag_ms, " ms")};
    }
  }
  return {ReadVerdict::kServe, ""};
}

const char* ReadVerdictName(ReadVerdict v) {
  switch (v) {
    case ReadVerdict::kServe: return "serve";
    case ReadVerdict::kWait: return "wait";
    case ReadVerdict::kUnavailable: return "unavailable";
    case ReadVerdict::kLost: return "lost";
  }
  return "?";
}

}  // namespace walship::replication
