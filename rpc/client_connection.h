// One blocking connection of a client to a node, the transport under rpc::Client: it dials
// (TCP, then TLS and the cluster secret's handshake when configured), says the client
// preamble, sends the requests appended to it, and reads the replies into a word-aligned
// buffer, decoding each in place. SO_SNDTIMEO and SO_RCVTIMEO bound each system call, kept
// near the call's deadline. A failure marks its status a transport error: the connection must
// then be closed (Fail), since replies still in flight would be taken for the next call's.
//
// Thread safety: none; one caller at a time.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/time/time.h"
#include "rpc/client.capnp.h"
#include "rpc/client.h"
#include "rpc/convert.h"
#include "rpc/tls_channel.h"

namespace walship::rpc {

// The name of a reply (and request) kind, for errors.
const char* ReplyKindName(schema::Reply::Which w);

class ClientConnection {
 public:
  // Requests above this size are refused here; the node refuses them too.
  static constexpr uint64_t kMaxRequestWords = schema::MAX_REQUEST_BYTES / sizeof(capnp::word);
  // Replies larger than this are taken for a corrupt stream, not allocated.
  static constexpr uint64_t kMaxReplyWords = uint64_t{1} << 27;  // 1 GiB

  // `timeout` bounds each system call until a call's deadline says less; `secret` (empty:
  // none) is proven on every connection; `tls` with an empty ca_file: plain text.
  ClientConnection(std::string endpoint, absl::Duration timeout, std::string secret,
                   TlsOptions tls);
  ~ClientConnection();

  const std::string& endpoint() const { return endpoint_; }

  // Connects (again, closing any connection open), within `deadline`. A failure to is
  // marked NotSent (rpc/convert.h) when the node could not be reached.
  absl::Status Open(absl::Time deadline);
  // Opens the connection unless one is open and the node has not closed it (ClosedByPeer).
  absl::Status EnsureOpen(absl::Time deadline);
  void Close();
  // Closes the connection after a failed call and returns why it failed.
  absl::Status Fail(absl::Status s);

  // Adds a request to those to send (refused when over kMaxRequestWords).
  absl::Status Append(capnp::MessageBuilder& m);
  // Sends every appended request.
  absl::Status Flush(absl::Time deadline);
  // Bytes appended and not yet sent; Unappend drops those from `bytes` on.
  size_t unsent_bytes() const { return out_.size(); }
  void Unappend(size_t bytes) { out_.resize(bytes); }
  // Whether a whole reply is here already (no system call).
  bool HasReply();

  // Waits for the next reply and decodes it with `decode` (a `refused` reply becomes its
  // error). Statuses marked as transport errors mean the connection must be closed.
  template <typename T, typename F>
  absl::StatusOr<T> Receive(absl::Time deadline, schema::Reply::Which expected, F&& decode) {
    DropTaken();
    size_t bytes;
    while ((bytes = BufferedReplyBytes()) == 0) {
      if (absl::Status s = Fill(deadline); !s.ok()) return TransportError(s);
    }
    taken_ = bytes;
    auto words =
        kj::arrayPtr(in_.begin() + in_begin_ / sizeof(capnp::word), bytes / sizeof(capnp::word));
    absl::StatusOr<T> out;
    // Reading a malformed reply throws.
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                   capnp::ReaderOptions options;
                   options.traversalLimitInWords = kMaxReplyWords;
                   capnp::FlatArrayMessageReader reader(words, options);
                   auto reply = reader.getRoot<schema::Reply>();
                   if (reply.which() == expected) {
                     out = decode(reply);
                   } else if (reply.isRefused()) {
                     absl::Status refused = FromCapnp(reply.getRefused());
                     out = refused.ok() ? TransportError(absl::DataLossError(absl::StrCat(
                                              endpoint_, ": refused without an error")))
                                        : refused;
                   } else {
                     out = TransportError(absl::DataLossError(
                         absl::StrCat(endpoint_, ": a ", ReplyKindName(expected), " request got a ",
                                      ReplyKindName(reply.which()), " reply")));
                   }
                 })) {
      out = TransportError(absl::DataLossError(
          absl::StrCat(endpoint_, ": malformed reply: ", e->getDescription().cStr())));
    }
    return out;
  }

  // The statuses that leave the connection unusable: the call failed on the way, not at the
  // node. Errors made by the node carry its own codes; these are marked with a payload.
  static bool IsTransportError(const absl::Status& s);
  static absl::Status TransportError(absl::Status s);

 private:
  bool ClosedByPeer() const;
  absl::Status ProveSecret(absl::Time deadline);
  absl::Status Connect(absl::Time deadline);
  void SetTimeout(int option, absl::Duration d, absl::Duration& current);
  bool BoundByDeadline(int option, absl::Time deadline, absl::Duration& current);
  ssize_t SendSome(const char* data, size_t size);
  ssize_t RecvSome(char* data, size_t size);
  // Why the last SendSome or RecvSome failed.
  std::string TransportError() const;
  size_t BufferedReplyBytes() const;
  void DropTaken();
  absl::Status Fill(absl::Time deadline);

  static constexpr char kTransportErrorUrl[] = "walship/client-transport";

  std::string endpoint_;
  absl::Duration timeout_;
  std::string secret_;
  TlsOptions tls_;
  std::unique_ptr<TlsChannel> tls_channel_;  // on the open connection, with tls_
  int fd_ = -1;
  absl::Duration send_timeout_, recv_timeout_;  // SO_SNDTIMEO, SO_RCVTIMEO as last set
  std::string out_;                             // requests appended, not yet sent
  // Replies received: bytes [in_begin_, in_end_) of in_; in_begin_ is a whole number of
  // words, so a reply's reader needs no copy.
  kj::Array<capnp::word> in_ = kj::heapArray<capnp::word>(8192);
  size_t in_begin_ = 0, in_end_ = 0;
  size_t taken_ = 0;  // bytes of the reply handed out last, dropped at the next Receive
};

}  // namespace walship::rpc
