#include "rpc/wire_limits.h"

#include <kj/exception.h>

#include "absl/strings/str_cat.h"

namespace walship::rpc {
namespace {
constexpr uint64_t kMaxRequestWords = schema::MAX_REQUEST_BYTES / sizeof(capnp::word);
constexpr uint kMaxSegments = 512;  // Cap'n Proto reads no message with more
}  // namespace

capnp::ReaderOptions PeerReaderOptions() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = kMaxPeerMessageBytes / sizeof(capnp::word);
  return options;
}

capnp::ReaderOptions RequestFramingOptions() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = kMaxRequestWords;
  return options;
}

absl::StatusOr<CheckedRequest> CheckRequest(kj::Own<capnp::MessageReader> framed) {
  uint64_t words = 0;
  uint segment_count = 0;
  while (segment_count < kMaxSegments && framed->getSegment(segment_count).begin() != nullptr) {
    words += framed->getSegment(segment_count++).size();
  }
  if (words > kMaxRequestWords) {  // the framing limit refuses these before they are read
    return absl::InvalidArgumentError(absl::StrCat("a request of ", words * sizeof(capnp::word),
                                                   " bytes; the limit is ",
                                                   schema::MAX_REQUEST_BYTES));
  }
  auto segments = kj::heapArrayBuilder<kj::ArrayPtr<const capnp::word>>(segment_count);
  for (uint i = 0; i < segment_count; ++i) segments.add(framed->getSegment(i));
  auto list = segments.finish();
  // Checking reads the message through one reader and serving through another, each with a
  // traversal budget of twice the message: enough for what it holds, and proportional to it,
  // so that a small message cannot make the node read far more (aliased pointers).
  capnp::ReaderOptions budget;
  budget.traversalLimitInWords = 2 * words + 1024;
  {
    capnp::SegmentArrayMessageReader check(list.asPtr(), budget);
    KJ_IF_MAYBE(e, kj::runCatchingExceptions(
                       [&]() { check.getRoot<schema::Request>().totalSize(); })) {
      return absl::InvalidArgumentError(
          absl::StrCat("malformed request: ", e->getDescription().cStr()));
    }
  }
  CheckedRequest checked;
  checked.bytes = words * sizeof(capnp::word);
  checked.message = kj::heap<capnp::SegmentArrayMessageReader>(list.asPtr(), budget)
                        .attach(kj::mv(list), kj::mv(framed));
  return checked;
}

absl::Status RefusalOf(const kj::Exception& e) {
  switch (e.getType()) {
    case kj::Exception::Type::OVERLOADED:
    case kj::Exception::Type::DISCONNECTED:
      return absl::UnavailableError(e.getDescription().cStr());
    default: break;
  }
  // Cap'n Proto's decoding checks live in its layout and arena code.
  kj::StringPtr file = e.getFile();
  if (file.endsWith("capnp/layout.c++") || file.endsWith("capnp/arena.c++")) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed request: ", e.getDescription().cStr()));
  }
  return absl::InternalError(
      absl::StrCat("internal error in the node: ", e.getDescription().cStr()));
}

}  // namespace walship::rpc
