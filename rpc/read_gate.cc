#include "rpc/read_gate.h"

#include <algorithm>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "rpc/convert.h"
#include "rpc/node.h"

namespace walship::rpc {

using replication::ReadVerdict;

ReadGate::~ReadGate() {
  for (Waiter& w : waiters_) {
    w.done->fulfill(absl::UnavailableError("the node is shutting down"));
  }
}

replication::ReadCheck ReadGate::Check(const replication::ReadNeeds& needs) const {
  return replication::CheckRead(
      needs, node_.role().ReadPositionFor(needs.after.seq, node_.engine().LatestSequence()));
}

absl::Status ReadGate::Answer(const replication::ReadCheck& check) const {
  switch (check.verdict) {
    case ReadVerdict::kServe: return absl::OkStatus();
    case ReadVerdict::kLost: return WriteLostError(check.why);
    case ReadVerdict::kWait:
    case ReadVerdict::kUnavailable: break;
  }
  std::string leader = node_.role().LeaderAddress();
  absl::Status s = absl::UnavailableError(absl::StrCat(
      check.why, leader.empty() ? "" : absl::StrCat("; its leader is at ", leader)));
  if (!leader.empty()) s.SetPayload(kLeaderHintUrl, absl::Cord(leader));
  return s;
}

std::optional<absl::Status> ReadGate::Decide(const replication::ReadNeeds& needs) const {
  replication::ReadCheck check = Check(needs);
  if (check.verdict == ReadVerdict::kWait) return std::nullopt;
  return Answer(check);
}

kj::Promise<absl::Status> ReadGate::Wait(const replication::ReadNeeds& needs, uint32_t wait_ms) {
  uint32_t ms = std::min(wait_ms == 0 ? kDefaultWaitMs : wait_ms, kMaxWaitMs);
  auto paf = kj::newPromiseAndFulfiller<absl::Status>();
  uint64_t id = next_id_++;
  waiters_.push_back(Waiter{id, needs, kj::mv(paf.fulfiller)});
  return paf.promise.exclusiveJoin(
      node_.io().provider->getTimer().afterDelay(ms * kj::MILLISECONDS).then([this, id, needs]() {
        // Taken out here (unless Poke answered it meanwhile), and answered as it stands now.
        auto it = std::find_if(waiters_.begin(), waiters_.end(),
                               [id](const Waiter& w) { return w.id == id; });
        if (it != waiters_.end()) waiters_.erase(it);
        return Answer(Check(needs));
      }));
}

void ReadGate::Poke() {
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (!it->done->isWaiting()) {  // its read was cancelled (the client went away)
      it = waiters_.erase(it);
      continue;
    }
    replication::ReadCheck check = Check(it->needs);
    if (check.verdict == ReadVerdict::kWait) {
      ++it;
      continue;
    }
    it->done->fulfill(Answer(check));
    it = waiters_.erase(it);
  }
}

}  // namespace walship::rpc
