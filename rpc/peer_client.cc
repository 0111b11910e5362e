#include "rpc/peer_client.h"

#include <utility>

namespace walship::rpc {
namespace {

// The rest of a connection to a peer once TLS (when on) is up: the secret's handshake, then
// RPC.
kj::Promise<kj::Own<PeerClient>> ProveAndStart(kj::AsyncIoContext& io,
                                               kj::Own<kj::AsyncIoStream> stream,
                                               FdStream* counted, std::string secret) {
  if (secret.empty()) return kj::heap<PeerClient>(kj::mv(stream), io, counted);
  auto& s = *stream;
  auto proved = OfferHandshake(s, std::move(secret), io.provider->getTimer(), kHandshakeTimeout);
  return proved.then([&io, stream = kj::mv(stream), counted]() mutable {
    return kj::heap<PeerClient>(kj::mv(stream), io, counted);
  });
}

}  // namespace

absl::StatusOr<OwnedPeerSecurity> MakePeerSecurity(std::string secret, const TlsOptions& tls) {
  OwnedPeerSecurity out;
  out.security.secret = std::move(secret);
  if (!tls.on()) return out;
  auto context = MakeTlsContext(tls);
  if (!context.ok()) return context.status();
  out.context = std::move(*context);
  out.security.tls = out.context.get();
  out.security.tls_options = tls;
  return out;
}

kj::Promise<kj::Own<PeerClient>> ConnectToPeer(kj::AsyncIoContext& io, const std::string& address,
                                               const PeerSecurity& security) {
  return io.provider->getNetwork()
      .parseAddress(address)
      .then([](kj::Own<kj::NetworkAddress> addr) {
        auto connected = addr->connect();
        return connected.attach(kj::mv(addr));
      })
      .then([&io, security, address](
                kj::Own<kj::AsyncIoStream> stream) -> kj::Promise<kj::Own<PeerClient>> {
        if (security.tls == nullptr) {
          return ProveAndStart(io, kj::mv(stream), nullptr, security.secret);
        }
        auto socket = FdStream::Wrap(kj::mv(stream), io);
        FdStream* counted = dynamic_cast<FdStream*>(socket.get());
        auto name = kj::heapString(TlsServerName(security.tls_options, address));
        auto wrapped = security.tls->wrapClient(kj::mv(socket), name).attach(kj::mv(name));
        auto late = io.provider->getTimer().afterDelay(kHandshakeTimeout).then(
            [address]() -> kj::Own<kj::AsyncIoStream> {
              KJ_FAIL_REQUIRE("the TLS handshake did not finish in time", address);
            });
        return wrapped.exclusiveJoin(kj::mv(late))
            .then([&io, counted, secret = security.secret](kj::Own<kj::AsyncIoStream> tls) {
              return ProveAndStart(io, kj::mv(tls), counted, secret);
            });
      });
}

}  // namespace walship::rpc
