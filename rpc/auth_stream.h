// The cluster secret's handshake (rpc/auth.h) on the event loop: the node's side for a
// connection it accepted, the connector's side for one it opened to a peer. Each side is
// bounded as a whole by a time-out, so that a silent party holds nothing for long.
//
// Thread safety: like every KJ object, these run on the event loop that owns the stream.
#pragma once

#include <kj/async-io.h>
#include <kj/timer.h>

#include <string>

#include "absl/status/status.h"

namespace walship::rpc {

// The node's side, on a stream whose next bytes are a hello (auth::kMagic): OK once the
// connector proved the secret and was told so; else why not (the connector was told, when it
// got that far). An empty `secret`: the node has none, and says so.
kj::Promise<absl::Status> AcceptHandshake(kj::AsyncIoStream& stream, std::string secret,
                                          kj::Timer& timer, kj::Duration timeout);

// The connector's side, on a stream just connected: resolves once the node proved it knows
// `secret` and accepted this side's proof; fails (a kj::Exception whose description says
// what went wrong) otherwise.
kj::Promise<void> OfferHandshake(kj::AsyncIoStream& stream, std::string secret,
                                 kj::Timer& timer, kj::Duration timeout);

}  // namespace walship::rpc
