// What a node accepts from the wire before it looks at a message's meaning: the size limits
// of client requests and of node-to-node messages, and the check every client request passes
// before it is served. One place, so that the node and the fuzz targets run the same code.
#pragma once

#include <capnp/message.h>
#include <kj/exception.h>
#include <kj/memory.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "rpc/client.capnp.h"

namespace walship::rpc {

// The largest node-to-node message: a Ship of batches up to max_ship_bytes (at most 32 MiB)
// plus the batch that crosses it, which may be a whole WAL record: one write of up to a
// request (64 MiB), since a group of several writes stays within 4 MiB. Both ends of a peer
// connection read (and Cap'n Proto sends) messages up to this size, so that every record a
// leader can write reaches its followers.
inline constexpr uint64_t kMaxPeerMessageBytes = 160ull << 20;
static_assert(kMaxPeerMessageBytes >= (32ull << 20) + schema::MAX_REQUEST_BYTES + (16ull << 20));

// Reader options of a peer connection: messages up to kMaxPeerMessageBytes.
capnp::ReaderOptions PeerReaderOptions();

// Reader options for framing a client request: a frame whose segment table declares more
// than maxRequestBytes is refused before its body is read.
capnp::ReaderOptions RequestFramingOptions();

// A client request that passed CheckRequest.
struct CheckedRequest {
  // The same segments, read with a traversal budget of their own (checking and serving read
  // the message twice, more than the framing budget allows); owns the framed message.
  kj::Own<capnp::MessageReader> message;
  uint64_t bytes = 0;  // what the message holds, unreferenced segments included
};

// Checks a framed client request: its size (the sum of its segments; Cap'n Proto 0.9's own
// sizeInWords() counts the first segment twice) and every pointer of it (totalSize() walks
// them all), so that serving it meets no pointer out of bounds: a pipeline is never applied
// in part and then found malformed. kInvalidArgument naming the fault otherwise.
absl::StatusOr<CheckedRequest> CheckRequest(kj::Own<capnp::MessageReader> framed);

// What a client is told when serving its request threw `e`: `unavailable` for overload or a
// lost connection; `invalidArgument` ("malformed request") when Cap'n Proto's decoding threw
// (a pointer of the wrong kind, out of bounds, too deep: the client's fault, since
// CheckRequest has checked the framing); `internal` for anything else, the node's own fault.
absl::Status RefusalOf(const kj::Exception& e);

}  // namespace walship::rpc
