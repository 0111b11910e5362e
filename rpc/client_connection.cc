#include "rpc/client_connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "rpc/auth.h"
#include "rpc/dial.h"

namespace walship::rpc {

const char* ReplyKindName(schema::Reply::Which w) {
  switch (w) {
    case schema::Reply::WRITE:
      return "write";
    case schema::Reply::WRITE_MANY:
      return "writeMany";
    case schema::Reply::GET:
      return "get";
    case schema::Reply::SCAN:
      return "scan";
    case schema::Reply::STATUS:
      return "status";
    case schema::Reply::REFUSED:
      return "refused";
    case schema::Reply::HANDOVER:
      return "handover";
    case schema::Reply::RESEED:
      return "reseed";
    case schema::Reply::CHANGE_MEMBERSHIP:
      return "changeMembership";
    case schema::Reply::PROMOTE:
      return "promote";
    case schema::Reply::WAL_READ:
      return "walRead";
    case schema::Reply::VERIFY:
      return "verify";
  }
  return "unknown";
}

ClientConnection::ClientConnection(std::string endpoint, absl::Duration timeout,
                                   std::string secret, TlsOptions tls)
    : endpoint_(std::move(endpoint)),
      timeout_(timeout),
      secret_(std::move(secret)),
      tls_(std::move(tls)) {}

ClientConnection::~ClientConnection() { Close(); }

bool ClientConnection::IsTransportError(const absl::Status& s) {
  return s.GetPayload(kTransportErrorUrl).has_value();
}

absl::Status ClientConnection::TransportError(absl::Status s) {
  s.SetPayload(kTransportErrorUrl, absl::Cord("1"));
  return s;
}

absl::Status ClientConnection::Open(absl::Time deadline) {
  Close();
  absl::Status s = Connect(deadline);
  if (!s.ok()) {
    Close();
    return NotSent(
        absl::UnavailableError(absl::StrCat("cannot reach ", endpoint_, ": ", s.message())));
  }
  if (tls_.on()) {
    BoundByDeadline(SO_RCVTIMEO, deadline, recv_timeout_);
    BoundByDeadline(SO_SNDTIMEO, deadline, send_timeout_);
    auto channel = TlsChannel::Open(fd_, tls_, TlsServerName(tls_, endpoint_), deadline);
    if (!channel.ok()) {
      Close();
      if (absl::IsUnavailable(channel.status())) {
        return NotSent(absl::UnavailableError(
            absl::StrCat("cannot reach ", endpoint_, ": ", channel.status().message())));
      }
      return absl::Status(channel.status().code(),
                          absl::StrCat(endpoint_, ": ", channel.status().message()));
    }
    tls_channel_ = std::move(*channel);
  }
  if (!secret_.empty()) {
    if (absl::Status proved = ProveSecret(deadline); !proved.ok()) {
      Close();
      if (absl::IsUnauthenticated(proved)) {
        return absl::UnauthenticatedError(absl::StrCat(endpoint_, ": ", proved.message()));
      }
      return NotSent(absl::UnavailableError(
          absl::StrCat("cannot reach ", endpoint_, ": ", proved.message())));
    }
  }
  // The preamble goes out at once, not with the first request: a node closes a connection
  // that has not said what it speaks within preamble_timeout_ms, and the first request may
  // come later than that (a client that connects ahead of need, or builds a large request).
  out_.assign(schema::CLIENT_PREAMBLE.get().cStr(), schema::CLIENT_PREAMBLE.get().size());
  if (absl::Status sent = Flush(deadline); !sent.ok()) {
    Close();
    return NotSent(
        absl::UnavailableError(absl::StrCat("cannot reach ", endpoint_, ": ", sent.message())));
  }
  return absl::OkStatus();
}

// The cluster secret's handshake (rpc/auth.h), before anything else on the connection.
absl::Status ClientConnection::ProveSecret(absl::Time deadline) {
  auto send = [&](std::string_view bytes) {
    out_.assign(bytes.data(), bytes.size());
    return Flush(deadline);
  };
  auto recv = [&](size_t n) -> absl::StatusOr<std::string> {
    std::string got(n, '\0');
    size_t have = 0;
    while (have < n) {
      if (!BoundByDeadline(SO_RCVTIMEO, deadline, recv_timeout_)) {
        return absl::UnavailableError("the node did not answer the secret's handshake in time");
      }
      ssize_t r = RecvSome(got.data() + have, n - have);
      if (r > 0) {
        have += static_cast<size_t>(r);
      } else if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
        continue;  // the deadline decides
      } else {
        return absl::UnavailableError(
            r == 0 ? "the node closed the connection during the secret's handshake"
                   : TransportError());
      }
    }
    return got;
  };
  return auth::Offer(secret_, send, recv);
}

absl::Status ClientConnection::Connect(absl::Time deadline) {
  absl::StatusOr<int> fd = DialTcp(endpoint_, deadline);
  if (!fd.ok()) return fd.status();
  fd_ = *fd;
  SetTimeout(SO_SNDTIMEO, timeout_, send_timeout_);
  SetTimeout(SO_RCVTIMEO, timeout_, recv_timeout_);
  return absl::OkStatus();
}

void ClientConnection::SetTimeout(int option, absl::Duration d, absl::Duration& current) {
  // 0 would mean "wait forever": the shortest bound is 1 ms.
  d = std::max(d, absl::Milliseconds(1));
  timeval tv = absl::ToTimeval(d);
  ::setsockopt(fd_, SOL_SOCKET, option, &tv, sizeof tv);
  current = d;
}

// Before a blocking system call: false when the deadline has passed; otherwise the socket's
// timeout `option` bounds the call near the time left, without a system call of its own
// on every call.
bool ClientConnection::BoundByDeadline(int option, absl::Time deadline, absl::Duration& current) {
  absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return false;
  if (current > left + absl::Milliseconds(10) || current < left / 2) {
    SetTimeout(option, left, current);
  }
  return true;
}

// send(2) and recv(2) on the connection, through TLS when the client uses it.
ssize_t ClientConnection::SendSome(const char* data, size_t size) {
  if (tls_channel_) return tls_channel_->Send(data, size);
  return ::send(fd_, data, size, MSG_NOSIGNAL);
}
ssize_t ClientConnection::RecvSome(char* data, size_t size) {
  if (tls_channel_) return tls_channel_->Recv(data, size);
  return ::recv(fd_, data, size, 0);
}
// Why the last SendSome or RecvSome failed.
std::string ClientConnection::TransportError() const {
  if (errno == EPROTO && tls_channel_) return absl::StrCat("TLS: ", tls_channel_->error());
  return std::strerror(errno);
}

void ClientConnection::Close() {
  tls_channel_.reset();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  out_.clear();
  in_begin_ = in_end_ = 0;
  taken_ = 0;
}

absl::Status ClientConnection::EnsureOpen(absl::Time deadline) {
  if (fd_ >= 0 && ClosedByPeer()) Close();
  return fd_ >= 0 ? absl::OkStatus() : Open(deadline);
}

// No reply is owed between calls: the node's end of the stream waiting to be read means it
// closed the connection meanwhile (it stopped or restarted, or closed the connection as idle),
// and a request sent on it could only be answered "in doubt". Bytes waiting (TLS may send
// records of its own) leave the connection to the call.
bool ClientConnection::ClosedByPeer() const {
  char byte;
  ssize_t r = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (r == 0) return true;
  return r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

// Closes the connection after a failed call and returns why it failed.
absl::Status ClientConnection::Fail(absl::Status s) {
  Close();
  s.ErasePayload(kTransportErrorUrl);
  return s;
}

absl::Status ClientConnection::Append(capnp::MessageBuilder& m) {
  size_t words = capnp::computeSerializedSizeInWords(m);
  if (words > kMaxRequestWords) {
    return absl::InvalidArgumentError(
        absl::StrCat("a request of ", words * sizeof(capnp::word), " bytes; the limit is ",
                     schema::MAX_REQUEST_BYTES, " (send fewer or smaller writes at a time)"));
  }
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(m);
  auto bytes = flat.asChars();
  out_.append(bytes.begin(), bytes.size());
  return absl::OkStatus();
}

// Sends every appended request.
absl::Status ClientConnection::Flush(absl::Time deadline) {
  size_t sent = 0;
  while (sent < out_.size()) {
    if (!BoundByDeadline(SO_SNDTIMEO, deadline, send_timeout_)) {
      return absl::UnavailableError(absl::StrCat(endpoint_, ": sending timed out"));
    }
    ssize_t n = SendSome(out_.data() + sent, out_.size() - sent);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
      continue;  // the deadline decides
    } else {
      return absl::UnavailableError(absl::StrCat(endpoint_, ": ", TransportError()));
    }
  }
  out_.clear();
  return absl::OkStatus();
}

// The size in bytes of the complete reply at the front of the buffer, or 0 if not all of it
// is here yet.
size_t ClientConnection::BufferedReplyBytes() const {
  size_t have = in_end_ - in_begin_;
  if (have < sizeof(capnp::word)) return 0;
  auto words =
      kj::arrayPtr(in_.begin() + in_begin_ / sizeof(capnp::word), have / sizeof(capnp::word));
  size_t need = capnp::expectedSizeInWordsFromPrefix(words) * sizeof(capnp::word);
  return need <= have ? need : 0;
}

bool ClientConnection::HasReply() {
  DropTaken();
  return BufferedReplyBytes() > 0;
}

// Forgets the reply handed out last (its reader's memory is reused from here on).
void ClientConnection::DropTaken() {
  in_begin_ += taken_;
  taken_ = 0;
  if (in_begin_ == in_end_) in_begin_ = in_end_ = 0;
}

// Reads more of the replies into the buffer, waiting until `deadline` at most.
absl::Status ClientConnection::Fill(absl::Time deadline) {
  size_t have = in_end_ - in_begin_;
  size_t need = sizeof(capnp::word);
  if (have >= need) {
    auto words =
        kj::arrayPtr(in_.begin() + in_begin_ / sizeof(capnp::word), have / sizeof(capnp::word));
    uint64_t want = capnp::expectedSizeInWordsFromPrefix(words);
    if (want > kMaxReplyWords) {
      return absl::DataLossError(absl::StrCat(endpoint_, ": a reply claims ", want * 8,
                                              " bytes; the stream is corrupt"));
    }
    need = want * sizeof(capnp::word);
  }
  // Room for the whole reply, with its start kept word-aligned.
  if (in_begin_ > 0 && (in_.size() * sizeof(capnp::word) - in_begin_ < need + 4096)) {
    std::memmove(in_.begin(), in_.begin() + in_begin_ / sizeof(capnp::word), have);
    in_begin_ = 0;
    in_end_ = have;
  }
  size_t capacity = in_.size() * sizeof(capnp::word);
  if (capacity - in_begin_ < need + 4096) {
    auto bigger = kj::heapArray<capnp::word>((in_begin_ + need) / sizeof(capnp::word) + 8192);
    std::memcpy(bigger.begin(), in_.begin(), in_end_);
    in_ = kj::mv(bigger);
    capacity = in_.size() * sizeof(capnp::word);
  }
  while (true) {
    if (!BoundByDeadline(SO_RCVTIMEO, deadline, recv_timeout_)) {
      return absl::UnavailableError(absl::StrCat(endpoint_, ": no reply within the timeout"));
    }
    ssize_t n = RecvSome(reinterpret_cast<char*>(in_.begin()) + in_end_, capacity - in_end_);
    if (n > 0) {
      in_end_ += static_cast<size_t>(n);
      return absl::OkStatus();
    }
    if (n == 0) return absl::UnavailableError(absl::StrCat(endpoint_, ": connection closed"));
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    return absl::UnavailableError(absl::StrCat(endpoint_, ": ", TransportError()));
  }
}

}  // namespace walship::rpc
