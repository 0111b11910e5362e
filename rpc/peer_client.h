// A connection this node opens to another node (a follower to its leader, a leader to the
// follower it hands over to): Cap'n Proto RPC with the peer read limit, over a buffered
// socket whose received bytes are counted.
#pragma once

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "rpc/auth_stream.h"
#include "rpc/buffered_stream.h"
#include "rpc/client.capnp.h"
#include "rpc/fd_stream.h"
#include "rpc/tls.h"
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
  // `counted`: the socket under `s` when TLS wraps it (its received bytes are counted there);
  // null: `s` itself is the socket, or has none.
  PeerClient(kj::Own<kj::AsyncIoStream> s, kj::AsyncIoContext& io, FdStream* counted = nullptr)
      : socket(counted != nullptr ? kj::mv(s) : FdStream::Wrap(kj::mv(s), io)),
        fd_stream(counted != nullptr ? counted : dynamic_cast<FdStream*>(socket.get())),
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
  FdStream* fd_stream;                // owned by `stream` (under TLS, when on), or null
  kj::Own<BufferedStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  schema::Node::Client node;
};

// How long a node waits for each step of the other's side of the secret's handshake, and for
// the TLS handshake.
inline constexpr kj::Duration kHandshakeTimeout = 5 * kj::SECONDS;

// What a connection to another node proves and checks: TLS first when `tls` is set (the
// peer's certificate must chain to the cluster's CA and name TlsServerName(tls_options,
// address)), then the cluster secret when it is not empty (rpc/auth.h).
struct PeerSecurity {
  std::string secret;
  kj::TlsContext* tls = nullptr;  // owned by the node (or the tool); null: plain text
  TlsOptions tls_options;
};

// A PeerSecurity with the TLS context it points to, for a node (built once at start) or a tool.
struct OwnedPeerSecurity {
  std::unique_ptr<kj::TlsContext> context;  // null without TLS
  PeerSecurity security;
};
// kInvalidArgument when the TLS files cannot be used (CheckTlsFiles).
absl::StatusOr<OwnedPeerSecurity> MakePeerSecurity(std::string secret, const TlsOptions& tls);

// Connects to `address` as `security` asks; the promise fails when it cannot, with a
// description that says why.
kj::Promise<kj::Own<PeerClient>> ConnectToPeer(kj::AsyncIoContext& io, const std::string& address,
                                               const PeerSecurity& security);

}  // namespace walship::rpc
