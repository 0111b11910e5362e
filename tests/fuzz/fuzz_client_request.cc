// Fuzz target: a client request as a node reads it: framing with the request limit, the
// size and pointer check every request passes, then every field decoded as serving does.
// Nothing may crash or read out of bounds; bad input is an error or a kj exception (which
// the node answers `refused`).
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "rpc/client.capnp.h"
#include "rpc/convert.h"
#include "rpc/wire_limits.h"

namespace {

using walship::rpc::FromCapnp;
using walship::rpc::ToString;
namespace schema = walship::rpc::schema;

void Decode(schema::Request::Reader request) {
  switch (request.which()) {
    case schema::Request::WRITE: {
      auto w = request.getWrite();
      (void)FromCapnp(w.getOps());
      (void)w.getMode();
      break;
    }
    case schema::Request::WRITE_MANY:
      for (auto w : request.getWriteMany().getWrites()) {
        (void)FromCapnp(w.getOps());
        (void)w.getMode();
      }
      break;
    case schema::Request::GET:
      (void)ToString(request.getGet().getKey());
      (void)request.getGet().getMinSeq();
      break;
    case schema::Request::SCAN: {
      auto s = request.getScan();
      (void)ToString(s.getStart());
      (void)ToString(s.getPrefix());
      (void)s.getLimit();
      (void)s.getMinSeq();
      break;
    }
    case schema::Request::STATUS: break;
    case schema::Request::VERIFY: {
      auto v = request.getVerify();
      if (v.isChecksum()) {
        for (auto b : v.getChecksum().getBounds()) (void)ToString(b);
      }
      break;
    }
    case schema::Request::WAL_READ:
      (void)request.getWalRead().getFromSeq();
      (void)request.getWalRead().getMaxBatches();
      break;
    case schema::Request::PROMOTE: (void)request.getPromote().getAcceptLoss(); break;
    case schema::Request::RESEED: break;
    case schema::Request::HANDOVER:
      (void)std::string(request.getHandover().getTarget().cStr());
      (void)request.getHandover().getTimeoutMs();
      break;
    case schema::Request::CHANGE_MEMBERSHIP: {
      auto m = request.getChangeMembership();
      (void)m.getOp();
      (void)std::string(m.getId().cStr());
      (void)std::string(m.getAddress().cStr());
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // As the node's reader does, the whole frame is read before it is checked; the framing
  // refuses a frame that declares more than the limit.
  auto words = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
  std::memcpy(words.begin(), data, words.size() * sizeof(capnp::word));
  kj::Own<capnp::MessageReader> framed;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() {
                framed = kj::heap<capnp::FlatArrayMessageReader>(
                    words.asPtr(), walship::rpc::RequestFramingOptions());
              })) {
    return 0;  // the framing is broken: the node refuses it
  }
  auto checked = walship::rpc::CheckRequest(kj::mv(framed));
  if (!checked.ok()) return 0;
  auto decoded = kj::runCatchingExceptions(
      [&]() { Decode(checked->message->getRoot<schema::Request>()); });
  (void)decoded;  // a field of the wrong type: refused, not a crash
  return 0;
}
