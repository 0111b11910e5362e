// Fuzz target: a node-to-node message as a node reads it. The first byte picks the kind
// (Hello, HelloReply, Ship, Ack); the rest is the message, framed with the peer limit and
// converted as the node converts it. The history in a HelloReply is validated as a follower
// validates it.
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "replication/node_state.h"
#include "rpc/convert.h"
#include "rpc/peer.capnp.h"
#include "rpc/wire_limits.h"

namespace schema = walship::rpc::schema;
using walship::rpc::FromCapnp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  uint8_t kind = data[0] % 4;
  // The RPC connection reads the whole frame before it is converted.
  auto words = kj::heapArray<capnp::word>((size - 1) / sizeof(capnp::word));
  std::memcpy(words.begin(), data + 1, words.size() * sizeof(capnp::word));
  auto ignored = kj::runCatchingExceptions([&]() {
    capnp::FlatArrayMessageReader message(words.asPtr(), walship::rpc::PeerReaderOptions());
    switch (kind) {
      case 0: (void)FromCapnp(message.getRoot<schema::Hello>()); break;
      case 1: {
        auto reply = FromCapnp(message.getRoot<schema::HelloReply>());
        (void)walship::replication::ValidateHistory(reply.history);
        break;
      }
      case 2: {
        auto ship = FromCapnp(message.getRoot<schema::Ship>());
        (void)walship::rpc::ShipBytes(ship);
        break;
      }
      case 3: (void)FromCapnp(message.getRoot<schema::Ack>()); break;
    }
  });
  (void)ignored;  // broken framing or a field of the wrong type: the connection is dropped
  return 0;
}
