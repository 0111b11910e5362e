#include "rpc/client.h"

#include <capnp/message.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "rpc/client.capnp.h"
#include "rpc/client_calls.h"
#include "rpc/client_connection.h"
#include "rpc/convert.h"

namespace walship::rpc {
namespace {

// A size hint for a write request, so Cap'n Proto allocates one fitting segment.
uint64_t WriteWords(const std::vector<engine::WriteOp>& ops) {
  uint64_t words = 8;
  for (const auto& op : ops) words += 8 + (op.key.size() + op.value.size()) / 8 + 2;
  return words;
}

// The client protocol (rpc/client.capnp): each call builds its request, sends it on the
// connection (rpc/client_connection.h, a blocking socket: a request is one send() and its
// reply, as a rule, one recv() that sleeps until it arrives -- two system calls, where an
// event loop needs a third to wait) and decodes the reply.
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

  ClientImpl(const std::string& endpoint, absl::Duration timeout, ConnectOptions options)
      : timeout_(timeout),
        conn_(endpoint, timeout, std::move(options.secret), std::move(options.tls)) {}

  absl::Status Init() { return conn_.Open(absl::Now() + timeout_); }

  const std::string& endpoint() const override { return conn_.endpoint(); }

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
    if (absl::Status s = conn_.EnsureOpen(deadline); !s.ok()) return s;
    std::vector<int64_t> latency_ns(writes.size(), 0);
    std::vector<std::chrono::steady_clock::time_point> sent(writes.size());
    absl::Status first_error;  // a write the node refused: later ones are not sent
    absl::Status too_large;    // a write this client will not send: earlier ones still go
    // Writes [0, done) are answered, [done, flushed) sent, [flushed, next) appended, unsent
    // from byte `unsent` on.
    size_t next = 0, flushed = 0, done = 0, unsent = conn_.unsent_bytes();
    // Each reply lets one more write go, so `depth` stay in flight. Replies that arrived
    // together are all taken before the writes they free go out, in one send().
    while (true) {
      while (first_error.ok() && too_large.ok() && next < writes.size() && next - done < depth) {
        if (next == flushed) unsent = conn_.unsent_bytes();
        capnp::MallocMessageBuilder m(WriteWords(writes[next]));
        BuildWrite(writes[next], m.initRoot<schema::Request>().initWrite());
        if (absl::Status s = conn_.Append(m); !s.ok()) {
          too_large = s;
          break;
        }
        ++next;
      }
      if (!first_error.ok() && flushed < next) {
        conn_.Unappend(unsent);  // stop at the first error: what was not sent stays unsent
        next = flushed;
      }
      if (done == next) break;
      if (flushed < next && !conn_.HasReply()) {
        auto now = std::chrono::steady_clock::now();
        for (size_t i = flushed; i < next; ++i) sent[i] = now;
        if (absl::Status s = conn_.Flush(deadline); !s.ok()) return conn_.Fail(s);
        flushed = next;
      }
      absl::StatusOr<WriteResult> w =
          conn_.Receive<WriteResult>(deadline, schema::Reply::WRITE,
                               [](schema::Reply::Reader r) { return ToResult(r.getWrite()); });
      if (ClientConnection::IsTransportError(w.status())) return conn_.Fail(w.status());
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
            return absl::DataLossError(absl::StrCat(conn_.endpoint(), ": a pipeline of ",
                                                    writes.size(), " writes got ", out.size(),
                                                    " replies"));
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

  // One request and its reply, within `budget`; `decode` turns the reply into the result.
  // With `in_doubt` (writes), a failure once the request was sent is an in-doubt error.
  template <typename T, typename F>
  absl::StatusOr<T> Call(capnp::MessageBuilder& request, absl::Duration budget,
                         schema::Reply::Which expected, F&& decode, bool in_doubt = false) {
    absl::Time deadline = absl::Now() + budget;
    if (absl::Status s = conn_.EnsureOpen(deadline); !s.ok()) return s;
    if (absl::Status s = conn_.Append(request); !s.ok()) return s;
    // A request not sent whole was not applied: the node takes only whole messages.
    if (absl::Status s = conn_.Flush(deadline); !s.ok()) return NotSent(conn_.Fail(s));
    absl::StatusOr<T> r = conn_.Receive<T>(deadline, expected, std::forward<F>(decode));
    if (!ClientConnection::IsTransportError(r.status())) return r;
    absl::Status lost = conn_.Fail(r.status());
    if (!in_doubt) return lost;
    return InDoubtError(
        absl::StrCat(lost.message(),
                     ": the write was sent and no answer came, so it may or may not have "
                     "been applied; read it back, or send it again with a request id"));
  }

  absl::Duration timeout_;
  ClientConnection conn_;
  WriteOptions write_options_;
  ReadOptions read_options_;
  bool session_on_ = false;
  replication::ReadToken session_;    // the latest position written or read (UseSession)
  replication::ReadToken last_read_;  // the position of the last read answered
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
