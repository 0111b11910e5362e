#include "rpc/client_calls.h"

#include "rpc/convert.h"

namespace walship::rpc {

absl::StatusOr<WalPage> WalPageFromCapnp(schema::WalReadReply::Reader reply) {
  if (absl::Status e = FromCapnp(reply.getError()); !e.ok()) return e;
  WalPage page;
  page.latest_seq = reply.getLatestSeq();
  for (auto b : reply.getBatches()) {
    page.batches.push_back(
        {engine::Batch{b.getFirstSeq(), b.getCount(), ToString(b.getData())}, b.getEpoch()});
  }
  return page;
}

void VerifyCallToCapnp(const VerifyCall& call, schema::VerifyRequest::Builder request) {
  switch (call.kind) {
    case VerifyCall::kHold: request.setHold(call.ms); return;
    case VerifyCall::kSnapshot: {
      auto at = request.initSnapshot();
      at.setId(call.id);
      at.setSeq(call.seq);
      at.setEpoch(call.epoch);
      at.setWaitMs(call.ms);
      return;
    }
    case VerifyCall::kResume: request.setResume(call.id); return;
    case VerifyCall::kChecksum: {
      auto c = request.initChecksum();
      c.setId(call.id);
      c.setRangeKeys(call.range_keys);
      auto bounds = c.initBounds(call.bounds.size());
      for (size_t i = 0; i < call.bounds.size(); ++i) bounds.set(i, ToData(call.bounds[i]));
      return;
    }
    case VerifyCall::kDrop: request.setDrop(call.id); return;
  }
}

absl::StatusOr<VerifyAnswer> VerifyAnswerFromCapnp(schema::VerifyReply::Reader reply) {
  if (absl::Status e = FromCapnp(reply.getError()); !e.ok()) return e;
  VerifyAnswer a;
  a.id = reply.getId();
  a.seq = reply.getSeq();
  a.epoch = reply.getEpoch();
  for (auto range : reply.getRanges()) {
    a.ranges.push_back(
        {ToString(range.getLastKey()), range.getKeys(), ToString(range.getDigest())});
  }
  return a;
}

}  // namespace walship::rpc
