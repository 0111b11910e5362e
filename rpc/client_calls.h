// The operator's requests of the blocking client (rpc/client.cc) to and from Cap'n Proto:
// reading a node's WAL and the steps of verify. Pure conversions, kept apart so that the
// client itself holds the connection and the calls.
#pragma once

#include "absl/status/statusor.h"
#include "rpc/client.capnp.h"
#include "rpc/client.h"

namespace walship::rpc {

// The batches of a walRead reply, or the error it carries.
absl::StatusOr<WalPage> WalPageFromCapnp(schema::WalReadReply::Reader reply);

// One verify step as its request.
void VerifyCallToCapnp(const VerifyCall& call, schema::VerifyRequest::Builder request);
// A verify reply, or the error it carries.
absl::StatusOr<VerifyAnswer> VerifyAnswerFromCapnp(schema::VerifyReply::Reader reply);

}  // namespace walship::rpc
