#include "rpc/client.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "rpc/auth.h"
#include "rpc/client.capnp.h"
#include "rpc/client_calls.h"
#include "rpc/convert.h"
#include "rpc/dial.h"
#include "rpc/tls_channel.h"

namespace walship::rpc {
namespace {

// A size hint for a write request, so Cap'n Proto allocates one fitting segment.
uint64_t WriteWords(const std::vector<engine::WriteOp>& ops) {
  uint64_t words = 8;
  for (const auto& op : ops) words += 8 + (op.key.size() + op.value.size()) / 8 + 2;
  return words;
}

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

// The client protocol (rpc/client.capnp) over a blocking socket: a request is one send()
// and its reply, as a rule, one recv() that sleeps until it arrives -- two system calls,
// where an event loop needs a third to wait. SO_SNDTIMEO and SO_RCVTIMEO bound each system
// call, kept near the call's deadline.
//
// Requests in flight cannot deadlock on full socket buffers: the node reads requests while it
// writes replies (it is event-driven) and reads up to kMaxInflight requests ahead, and
// WriteMany keeps at most that many in flight, sending more only after taking every reply
// already received.
//
// A failed call (a timeout, a broken connection, a reply that makes no sense) closes the
// connection, since replies still in flight would be taken for the next call's; the next call
// connects again.
class ClientImpl final : public Client {
 public:
  // The node reads this many requests of a connection ahead of their replies.
  static constexpr size_t kMaxInflight = schema::MAX_REQUESTS_AHEAD;
  // Requests above this size are refused here; the node refuses them too.
  static constexpr uint64_t kMaxRequestWords = schema::MAX_REQUEST_BYTES / sizeof(capnp::word);
  // Replies larger than this are taken for a corrupt stream, not allocated.
  static constexpr uint64_t kMaxReplyWords = uint64_t{1} << 27;  // 1 GiB

  ClientImpl(std::string endpoint, absl::Duration timeout, ConnectOptions options)
      : endpoint_(std::move(endpoint)),
        timeout_(timeout),
        secret_(std::move(options.secret)),
        tls_(std::move(options.tls)) {}
  ~ClientImpl() override { Close(); }

  absl::Status Init() { return Open(absl::Now() + timeout_); }

  const std::string& endpoint() const override { return endpoint_; }

  absl::StatusOr<WriteResult> Write(const std::vector<engine::WriteOp>& ops) override {
    return WriteWithId(ops, "");
  }

  absl::StatusOr<WriteResult> WriteWithId(const std::vector<engine::WriteOp>& ops,
                                          const std::string& request_id) override {
    capnp::MallocMessageBuilder m(WriteWords(ops) + request_id.size() / 8 + 2);
    auto w = m.initRoot<schema::Request>().initWrite();
    BuildWrite(ops, w);
    if (!request_id.empty()) w.setRequestId(ToData(request_id));
    auto written = Call<WriteResult>(
        m, timeout_ + write_options_.wait, schema::Reply::WRITE,
        [](schema::Reply::Reader r) { return ToResult(r.getWrite()); }, /*in_doubt=*/true);
    NoteWrite(written);
    return written;
  }

  absl::StatusOr<std::vector<int64_t>> WriteMany(
      const std::vector<std::vector<engine::WriteOp>>& writes, size_t depth) override {
    depth = std::clamp<size_t>(depth, 1, kMaxInflight);
    absl::Time deadline =
        absl::Now() + write_options_.wait + timeout_ * static_cast<int64_t>(1 + writes.size() / 64);
    if (absl::Status s = EnsureOpen(deadline); !s.ok()) return s;
    std::vector<int64_t> latency_ns(writes.size(), 0);
    std::vector<std::chrono::steady_clock::time_point> sent(writes.size());
    absl::Status first_error;  // a write the node refused: later ones are not sent
    absl::Status too_large;    // a write this client will not send: earlier ones still go
    // Writes [0, done) are answered, [done, flushed) sent, [flushed, next) waiting in out_
    // from byte `unsent` on.
    size_t next = 0, flushed = 0, done = 0, unsent = out_.size();
    // Each reply lets one more write go, so `depth` stay in flight. Replies that arrived
    // together are all taken before the writes they free go out, in one send().
    while (true) {
      while (first_error.ok() && too_large.ok() && next < writes.size() && next - done < depth) {
        if (next == flushed) unsent = out_.size();
        capnp::MallocMessageBuilder m(WriteWords(writes[next]));
        BuildWrite(writes[next], m.initRoot<schema::Request>().initWrite());
        if (absl::Status s = Append(m); !s.ok()) {
          too_large = s;
          break;
        }
        ++next;
      }
      if (!first_error.ok() && flushed < next) {
        out_.resize(unsent);  // stop at the first error: what was not sent stays unsent
        next = flushed;
      }
      if (done == next) break;
      if (flushed < next && !HasReply()) {
        auto now = std::chrono::steady_clock::now();
        for (size_t i = flushed; i < next; ++i) sent[i] = now;
        if (absl::Status s = Flush(deadline); !s.ok()) return Fail(s);
        flushed = next;
      }
      absl::StatusOr<WriteResult> w =
          Receive<WriteResult>(deadline, schema::Reply::WRITE,
                               [](schema::Reply::Reader r) { return ToResult(r.getWrite()); });
      if (IsTransportError(w.status())) return Fail(w.status());
      NoteWrite(w);
      latency_ns[done] = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now() - sent[done])
                             .count();
      ++done;
      if (!w.ok() && first_error.ok()) first_error = w.status();
    }
    if (!first_error.ok()) return first_error;
    if (!too_large.ok()) return too_large;
    return latency_ns;
  }

  absl::StatusOr<std::vector<absl::StatusOr<WriteResult>>> WritePipeline(
      absl::Span<const std::vector<engine::WriteOp>> writes) override {
    uint64_t words = 16;
    for (const auto& w : writes) words += 4 + WriteWords(w);
    capnp::MallocMessageBuilder m(words);
    auto list = m.initRoot<schema::Request>().initWriteMany().initWrites(writes.size());
    for (size_t i = 0; i < writes.size(); ++i) BuildWrite(writes[i], list[i]);
    using Results = std::vector<absl::StatusOr<WriteResult>>;
    // A pipeline waits for all its writes: the budget grows with its length, as WriteMany's.
    return Call<Results>(
        m, write_options_.wait + timeout_ * static_cast<int64_t>(1 + writes.size() / 64),
        schema::Reply::WRITE_MANY,
        [&](schema::Reply::Reader r) -> absl::StatusOr<Results> {
          auto reply = r.getWriteMany();
          if (absl::Status refused = FromCapnp(reply.getError()); !refused.ok()) return refused;
          Results out;
          for (auto w : reply.getReplies()) {
            out.push_back(ToResult(w));
            NoteWrite(out.back());
          }
          if (out.size() != writes.size()) {
            return absl::DataLossError(absl::StrCat(endpoint_, ": a pipeline of ", writes.size(),
                                                    " writes got ", out.size(), " replies"));
          }
          return out;
        },
        /*in_doubt=*/true);
  }

  absl::StatusOr<std::string> Get(const std::string& key, uint64_t min_seq) override {
    capnp::MallocMessageBuilder m(12 + key.size() / 8 + 1);
    auto get = m.initRoot<schema::Request>().initGet();
    get.setKey(ToData(key));
    SetReadNeeds(get, min_seq);
    return Call<std::string>(
        m, ReadTimeout(min_seq), schema::Reply::GET,
        [this](schema::Reply::Reader r) -> absl::StatusOr<std::string> {
          auto reply = r.getGet();
          absl::Status e = FromCapnp(reply.getError());
          if (e.ok() || absl::IsNotFound(e)) NoteRead({reply.getEpoch(), reply.getSeq()});
          if (!e.ok()) return e;
          return ToString(reply.getValue());
        });
  }

  // A node's reply holds at most maxScanReplyBytes (and the item crossing it): a reply cut
  // short names where to go on, and the next call asks from there, until the limit.
  absl::StatusOr<std::vector<engine::KeyValue>> Scan(const engine::ScanOptions& scan,
                                                     uint64_t min_seq) override {
    using Items = std::vector<engine::KeyValue>;
    Items kvs;
    std::string start = scan.start;
    uint64_t limit = scan.limit == 0 ? 1000 : scan.limit;
    while (true) {
      capnp::MallocMessageBuilder m(16 + (start.size() + scan.prefix.size()) / 8);
      auto req = m.initRoot<schema::Request>().initScan();
      req.setStart(ToData(start));
      req.setPrefix(ToData(scan.prefix));
      req.setLimit(static_cast<uint32_t>(std::min<uint64_t>(limit - kvs.size(), UINT32_MAX)));
      SetReadNeeds(req, min_seq);
      std::optional<std::string> next;
      auto page =
          Call<bool>(m, ReadTimeout(min_seq),
                     schema::Reply::SCAN, [&](schema::Reply::Reader r) -> absl::StatusOr<bool> {
                       auto reply = r.getScan();
                       if (absl::Status e = FromCapnp(reply.getError()); !e.ok()) {
                         return e;
                       }
                       NoteRead({reply.getEpoch(), reply.getSeq()});
                       for (auto item : reply.getItems()) {
                         kvs.push_back({ToString(item.getKey()), ToString(item.getValue())});
                       }
                       if (reply.getTruncated()) next = ToString(reply.getNextStart());
                       return true;
                     });
      if (!page.ok()) return page.status();
      if (!next.has_value() || kvs.size() >= limit) return kvs;
      start = std::move(*next);
    }
  }

  absl::StatusOr<HandoverResult> Handover(const std::string& target,
                                          absl::Duration catch_up) override {
    capnp::MallocMessageBuilder m(16);
    auto h = m.initRoot<schema::Request>().initHandover();
    h.setTarget(target);
    h.setTimeoutMs(static_cast<uint32_t>(std::clamp<int64_t>(
        absl::ToInt64Milliseconds(catch_up), 1, std::numeric_limits<uint32_t>::max())));
    // The node answers once the target leads: the catch-up, then the take-over call.
    return Call<HandoverResult>(m, timeout_ + catch_up + absl::Seconds(5), schema::Reply::HANDOVER,
                                [](schema::Reply::Reader r) -> absl::StatusOr<HandoverResult> {
                                  auto reply = r.getHandover();
                                  if (absl::Status e = FromCapnp(reply.getError()); !e.ok())
                                    return e;
                                  return HandoverResult{reply.getLeader(), reply.getEpoch()};
                                });
  }

  absl::Status Reseed() override {
    capnp::MallocMessageBuilder m(8);
    m.initRoot<schema::Request>().setReseed();
    return Call<bool>(m, timeout_, schema::Reply::RESEED,
                      [](schema::Reply::Reader r) -> absl::StatusOr<bool> {
                        if (absl::Status e = FromCapnp(r.getReseed()); !e.ok()) return e;
                        return true;
                      })
        .status();
  }

  absl::StatusOr<WalPage> ReadWal(engine::SequenceNumber from_seq,
                                  uint32_t max_batches) override {
    capnp::MallocMessageBuilder m(16);
    auto req = m.initRoot<schema::Request>().initWalRead();
    req.setFromSeq(from_seq);
    req.setMaxBatches(max_batches);
    return Call<WalPage>(m, timeout_, schema::Reply::WAL_READ, [](schema::Reply::Reader r) {
      return WalPageFromCapnp(r.getWalRead());
    });
  }

  absl::StatusOr<VerifyAnswer> Verify(const VerifyCall& call) override {
    capnp::MallocMessageBuilder m(64);
    VerifyCallToCapnp(call, m.initRoot<schema::Request>().initVerify());
    return Call<VerifyAnswer>(m, timeout_, schema::Reply::VERIFY, [](schema::Reply::Reader r) {
      return VerifyAnswerFromCapnp(r.getVerify());
    });
  }

  absl::StatusOr<MembershipResult> ChangeMembership(replication::MembershipOp op,
                                                    const std::string& id,
                                                    const std::string& address) override {
    capnp::MallocMessageBuilder m(16);
    auto req = m.initRoot<schema::Request>().initChangeMembership();
    req.setOp(op == replication::MembershipOp::kRemove ? schema::MembershipOp::REMOVE
                                                       : schema::MembershipOp::ADD_LEARNER);
    req.setId(id);
    req.setAddress(address);
    return Call<MembershipResult>(
        m, timeout_, schema::Reply::CHANGE_MEMBERSHIP,
        [](schema::Reply::Reader r) -> absl::StatusOr<MembershipResult> {
          auto reply = r.getChangeMembership();
          if (absl::Status e = FromCapnp(reply.getError()); !e.ok()) return e;
          return MembershipResult{reply.getVersion(), FromCapnp(reply.getMembers())};
        });
  }

  absl::StatusOr<PromoteResult> Promote(bool accept_loss) override {
    capnp::MallocMessageBuilder m(8);
    m.initRoot<schema::Request>().initPromote().setAcceptLoss(accept_loss);
    // An election takes up to two election time-outs and a round; the node bounds it.
    return Call<PromoteResult>(
        m, timeout_ + absl::Seconds(30), schema::Reply::PROMOTE,
        [](schema::Reply::Reader r) -> absl::StatusOr<PromoteResult> {
          auto reply = r.getPromote();
          if (absl::Status e = FromCapnp(reply.getError()); !e.ok()) return e;
          return PromoteResult{reply.getLeader(), reply.getEpoch(), reply.getPossibleLoss()};
        });
  }

  absl::StatusOr<NodeStatusInfo> Status() override {
    capnp::MallocMessageBuilder m(8);
    m.initRoot<schema::Request>().setStatus();
    return Call<NodeStatusInfo>(m, timeout_, schema::Reply::STATUS, [](schema::Reply::Reader r) {
      return absl::StatusOr<NodeStatusInfo>(StatusFromCapnp(r.getStatus()));
    });
  }

  void SetWriteOptions(const WriteOptions& options) override { write_options_ = options; }
  void SetCommittedReads(bool committed) override { read_options_.committed = committed; }
  void SetReadOptions(const ReadOptions& options) override { read_options_ = options; }
  void UseSession(replication::ReadToken start) override {
    session_on_ = true;
    session_ = start;
  }
  replication::ReadToken session() const override { return session_; }
  replication::ReadToken last_read() const override { return last_read_; }

 private:
  // A read asks for the later of its options' token and the session's (or a bare sequence
  // number given with the call), and the options' lag bound and wait.
  template <typename B>
  void SetReadNeeds(B b, uint64_t min_seq) const {
    replication::ReadToken after = read_options_.after;
    if (session_on_) after = replication::Later(after, session_);
    if (after.empty() && min_seq > 0) after = {0, min_seq};
    b.setMinSeq(after.seq);
    b.setAfterEpoch(after.epoch);
    b.setMaxLagMs(read_options_.max_lag_ms);
    b.setWaitMs(read_options_.wait_ms);
    b.setCommitted(read_options_.committed);
  }
  // A read may wait at the node (its token, its lag bound) and, committed, for the followers.
  absl::Duration ReadTimeout(uint64_t min_seq) const {
    absl::Duration t = timeout_;
    if (read_options_.committed) t += write_options_.wait;
    if (!read_options_.after.empty() || session_on_ || read_options_.max_lag_ms >= 0 ||
        min_seq > 0) {
      t += absl::Milliseconds(read_options_.wait_ms == 0 ? 1000 : read_options_.wait_ms);
    }
    return t;
  }
  void NoteRead(replication::ReadToken at) {
    last_read_ = at;
    if (session_on_) session_ = replication::Later(session_, at);
  }
  void NoteWrite(const absl::StatusOr<WriteResult>& w) {
    if (session_on_ && w.ok() && w->last_seq > 0) {
      session_ = replication::Later(session_, {w->epoch, w->last_seq});
    }
  }

  void BuildWrite(const std::vector<engine::WriteOp>& ops, schema::WriteRequest::Builder b) const {
    ToCapnp(ops, b.initOps(ops.size()));
    const WriteOptions& o = write_options_;
    using replication::AckLevel;
    using replication::ReplicationMode;
    schema::WriteMode mode = schema::WriteMode::CLUSTER_DEFAULT;
    if (o.mode.has_value()) {
      mode = *o.mode == ReplicationMode::kAsync      ? schema::WriteMode::ASYNC
             : *o.mode == ReplicationMode::kSemiSync ? schema::WriteMode::SEMI_SYNC
                                                     : schema::WriteMode::SYNC;
    }
    b.setMode(mode);
    b.setAcks(o.acks);
    if (o.level.has_value()) {
      b.setLevel(*o.level == AckLevel::kReceived  ? schema::AckLevel::RECEIVED
                 : *o.level == AckLevel::kFlushed ? schema::AckLevel::FLUSHED
                                                  : schema::AckLevel::APPLIED);
    }
    if (o.condition.has_value()) {
      b.setHasCondition(true);
      auto c = b.initCondition();
      c.setKey(ToData(o.condition->key));
      if (o.condition->value.has_value()) {
        c.setValue(ToData(*o.condition->value));
      } else {
        c.setAbsent();
      }
    }
  }

  static absl::StatusOr<WriteResult> ToResult(schema::WriteReply::Reader r) {
    if (absl::Status e = FromCapnp(r.getError()); !e.ok()) return e;
    return WriteResult{r.getFirstSeq(), r.getLastSeq(), r.getDegraded(), r.getEpoch(),
                       r.getDuplicate()};
  }

  // The statuses that leave the connection unusable: the call failed on the way, not at the
  // node. Errors made by the node carry its own codes; these are marked with a payload.
  static bool IsTransportError(const absl::Status& s) {
    return s.GetPayload(kTransportErrorUrl).has_value();
  }
  static absl::Status TransportError(absl::Status s) {
    s.SetPayload(kTransportErrorUrl, absl::Cord("1"));
    return s;
  }

  // One request and its reply, within `budget`; `decode` turns the reply into the result.
  // With `in_doubt` (writes), a failure once the request was sent is an in-doubt error.
  template <typename T, typename F>
  absl::StatusOr<T> Call(capnp::MessageBuilder& request, absl::Duration budget,
                         schema::Reply::Which expected, F&& decode, bool in_doubt = false) {
    absl::Time deadline = absl::Now() + budget;
    if (absl::Status s = EnsureOpen(deadline); !s.ok()) return s;
    if (absl::Status s = Append(request); !s.ok()) return s;
    // A request not sent whole was not applied: the node takes only whole messages.
    if (absl::Status s = Flush(deadline); !s.ok()) return Fail(s);
    absl::StatusOr<T> r = Receive<T>(deadline, expected, std::forward<F>(decode));
    if (!IsTransportError(r.status())) return r;
    absl::Status lost = Fail(r.status());
    if (!in_doubt) return lost;
    return InDoubtError(
        absl::StrCat(lost.message(),
                     ": the write was sent and no answer came, so it may or may not have "
                     "been applied; read it back, or send it again with a request id"));
  }

  absl::Status EnsureOpen(absl::Time deadline) {
    return fd_ >= 0 ? absl::OkStatus() : Open(deadline);
  }

  absl::Status Open(absl::Time deadline) {
    Close();
    absl::Status s = Connect(deadline);
    if (!s.ok()) {
      Close();
      return absl::UnavailableError(absl::StrCat("cannot reach ", endpoint_, ": ", s.message()));
    }
    if (tls_.on()) {
      BoundByDeadline(SO_RCVTIMEO, deadline, recv_timeout_);
      BoundByDeadline(SO_SNDTIMEO, deadline, send_timeout_);
      auto channel = TlsChannel::Open(fd_, tls_, TlsServerName(tls_, endpoint_), deadline);
      if (!channel.ok()) {
        Close();
        if (absl::IsUnavailable(channel.status())) {
          return absl::UnavailableError(
              absl::StrCat("cannot reach ", endpoint_, ": ", channel.status().message()));
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
        return absl::UnavailableError(
            absl::StrCat("cannot reach ", endpoint_, ": ", proved.message()));
      }
    }
    // The preamble goes out at once, not with the first request: a node closes a connection
    // that has not said what it speaks within preamble_timeout_ms, and the first request may
    // come later than that (a client that connects ahead of need, or builds a large request).
    out_.assign(schema::CLIENT_PREAMBLE.get().cStr(), schema::CLIENT_PREAMBLE.get().size());
    if (absl::Status sent = Flush(deadline); !sent.ok()) {
      Close();
      return absl::UnavailableError(absl::StrCat("cannot reach ", endpoint_, ": ", sent.message()));
    }
    return absl::OkStatus();
  }

  // The cluster secret's handshake (rpc/auth.h), before anything else on the connection.
  absl::Status ProveSecret(absl::Time deadline) {
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

  absl::Status Connect(absl::Time deadline) {
    absl::StatusOr<int> fd = DialTcp(endpoint_, deadline);
    if (!fd.ok()) return fd.status();
    fd_ = *fd;
    SetTimeout(SO_SNDTIMEO, timeout_, send_timeout_);
    SetTimeout(SO_RCVTIMEO, timeout_, recv_timeout_);
    return absl::OkStatus();
  }

  void SetTimeout(int option, absl::Duration d, absl::Duration& current) {
    // 0 would mean "wait forever": the shortest bound is 1 ms.
    d = std::max(d, absl::Milliseconds(1));
    timeval tv = absl::ToTimeval(d);
    ::setsockopt(fd_, SOL_SOCKET, option, &tv, sizeof tv);
    current = d;
  }

  // Before a blocking system call: false when the deadline has passed; otherwise the socket's
  // timeout `option` bounds the call near the time left, without a system call of its own
  // on every call.
  bool BoundByDeadline(int option, absl::Time deadline, absl::Duration& current) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    if (current > left + absl::Milliseconds(10) || current < left / 2) {
      SetTimeout(option, left, current);
    }
    return true;
  }

  // send(2) and recv(2) on the connection, through TLS when the client uses it.
  ssize_t SendSome(const char* data, size_t size) {
    if (tls_channel_) return tls_channel_->Send(data, size);
    return ::send(fd_, data, size, MSG_NOSIGNAL);
  }
  ssize_t RecvSome(char* data, size_t size) {
    if (tls_channel_) return tls_channel_->Recv(data, size);
    return ::recv(fd_, data, size, 0);
  }
  // Why the last SendSome or RecvSome failed.
  std::string TransportError() const {
    if (errno == EPROTO && tls_channel_) return absl::StrCat("TLS: ", tls_channel_->error());
    return std::strerror(errno);
  }

  void Close() {
    tls_channel_.reset();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    out_.clear();
    in_begin_ = in_end_ = 0;
    taken_ = 0;
  }

  // Closes the connection after a failed call and returns why it failed.
  absl::Status Fail(absl::Status s) {
    Close();
    s.ErasePayload(kTransportErrorUrl);
    return s;
  }

  absl::Status Append(capnp::MessageBuilder& m) {
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
  absl::Status Flush(absl::Time deadline) {
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
  size_t BufferedReplyBytes() const {
    size_t have = in_end_ - in_begin_;
    if (have < sizeof(capnp::word)) return 0;
    auto words =
        kj::arrayPtr(in_.begin() + in_begin_ / sizeof(capnp::word), have / sizeof(capnp::word));
    size_t need = capnp::expectedSizeInWordsFromPrefix(words) * sizeof(capnp::word);
    return need <= have ? need : 0;
  }

  bool HasReply() {
    DropTaken();
    return BufferedReplyBytes() > 0;
  }

  // Forgets the reply handed out last (its reader's memory is reused from here on).
  void DropTaken() {
    in_begin_ += taken_;
    taken_ = 0;
    if (in_begin_ == in_end_) in_begin_ = in_end_ = 0;
  }

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

  // Reads more of the replies into the buffer, waiting until `deadline` at most.
  absl::Status Fill(absl::Time deadline) {
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

  static constexpr char kTransportErrorUrl[] = "walship/client-transport";

  std::string endpoint_;
  absl::Duration timeout_;
  std::string secret_;  // proven on every connection; empty: none
  TlsOptions tls_;      // ca_file empty: plain text
  std::unique_ptr<TlsChannel> tls_channel_;  // on the open connection, with tls_
  WriteOptions write_options_;
  ReadOptions read_options_;
  bool session_on_ = false;
  replication::ReadToken session_;    // the latest position written or read (UseSession)
  replication::ReadToken last_read_;  // the position of the last read answered
  int fd_ = -1;
  absl::Duration send_timeout_, recv_timeout_;  // SO_SNDTIMEO, SO_RCVTIMEO as last set
  std::string out_;                             // requests appended, not yet sent
  // Replies received: bytes [in_begin_, in_end_) of in_; in_begin_ is a whole number of
  // words, so a reply's reader needs no copy.
  kj::Array<capnp::word> in_ = kj::heapArray<capnp::word>(8192);
  size_t in_begin_ = 0, in_end_ = 0;
  size_t taken_ = 0;  // bytes of the reply handed out last, dropped at the next Receive
};

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& endpoint,
                                                        absl::Duration timeout,
                                                        ConnectOptions options) {
  auto client = std::make_unique<ClientImpl>(endpoint, timeout, std::move(options));
  if (absl::Status s = client->Init(); !s.ok()) return s;
  return std::unique_ptr<Client>(std::move(client));
}

}  // namespace walship::rpc
