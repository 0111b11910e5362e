// A connection this node opens to another node (a follower to its leader, a leader to the
// follower it hands over to): Cap'n Proto RPC with the peer read limit, over a buffered
// socket whose received bytes are counted.
#pragma once

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "rpc/auth_stream.h"
#include "rpc/buffered_stream.h"
#include "rpc/client.capnp.h"
#include "rpc/fd_stream.h"
#include "rpc/wire_limits.h"

namespace walship::rpc {

// The bootstrap capability of the other side of a two-party RPC connection.
inline capnp::Capability::Client Bootstrap(capnp::RpcSystem<capnp::rpc::twoparty::VatId>& rpc) {
  capnp::MallocMessageBuilder message(8);
  auto vat = message.initRoot<capnp::rpc::twoparty::VatId>();
  vat.setSide(capnp::rpc::twoparty::Side::SERVER);
  return rpc.bootstrap(vat);
}

struct PeerClient {
  PeerClient(kj::Own<kj::AsyncIoStream> s, kj::AsyncIoContext& io)
      : socket(FdStream::Wrap(kj::mv(s), io)),
        fd_stream(dynamic_cast<FdStream*>(socket.get())),
        stream(kj::heap<BufferedStream>(kj::mv(socket))),
        network(*stream, capnp::rpc::twoparty::Side::CLIENT, PeerReaderOptions()),
        rpc(capnp::makeRpcClient(network)),
        node(Bootstrap(rpc).castAs<schema::Node>()) {}
  // Bytes received so far (0 when the stream has no socket).
  uint64_t bytes_read() const { return fd_stream == nullptr ? 0 : fd_stream->bytes_read(); }
  // Closes the socket now (the peer sees the disconnect); calls still in flight fail.
  void Close() {
    auto closed = kj::runCatchingExceptions([this]() {
      stream->shutdownWrite();
      stream->abortRead();
    });
    (void)closed;  // fails when the peer closed it already: nothing more to do
  }

  kj::Own<kj::AsyncIoStream> socket;  // moved into `stream`
  FdStream* fd_stream;                // owned by `stream`, or null
  kj::Own<BufferedStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  schema::Node::Client node;
};

// How long a node waits for each step of the other's side of the secret's handshake.
inline constexpr kj::Duration kHandshakeTimeout = 5 * kj::SECONDS;

// Connects to `address`, proving `secret` first when it is not empty (rpc/auth.h); the
// promise fails when it cannot, with a description that says why.
inline kj::Promise<kj::Own<PeerClient>> ConnectToPeer(kj::AsyncIoContext& io,
                                                      const std::string& address,
                                                      const std::string& secret) {
  return io.provider->getNetwork()
      .parseAddress(address)
      .then([](kj::Own<kj::NetworkAddress> addr) {
        auto connected = addr->connect();
        return connected.attach(kj::mv(addr));
      })
      .then([&io, secret](kj::Own<kj::AsyncIoStream> stream) -> kj::Promise<kj::Own<PeerClient>> {
        if (secret.empty()) return kj::heap<PeerClient>(kj::mv(stream), io);
        auto& s = *stream;
        auto proved = OfferHandshake(s, secret, io.provider->getTimer(), kHandshakeTimeout);
        return proved.then([&io, stream = kj::mv(stream)]() mutable {
          return kj::heap<PeerClient>(kj::mv(stream), io);
        });
      });
}

}  // namespace walship::rpc
