#include "rpc/connections.h"

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/serialize-async.h>
#include <capnp/serialize.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <string>

#include "absl/strings/str_cat.h"
#include "replication/clock.h"
#include "rpc/auth.h"
#include "rpc/auth_stream.h"
#include "rpc/buffered_stream.h"
#include "rpc/client_service.h"
#include "rpc/convert.h"
#include "rpc/fd_stream.h"
#include "rpc/node.h"
#include "rpc/tls.h"
#include "rpc/wire_limits.h"

namespace walship::rpc {
namespace {

// Words of a client reply's first segment: enough for a write's (an Error and two numbers);
// larger replies grow more segments.
constexpr capnp::MessageSize kSmallReply{32, 0};

int64_t NowUs() { return replication::RealClock()->NowMicros(); }

// The Cap'n Proto face of a node to its peers: forwards to the node's current role.
class NodeImpl final : public schema::Node::Server {
 public:
  // `sessions` counts the follower sessions of this connection that live.
  NodeImpl(Node& node, std::shared_ptr<PeerSessions> sessions)
      : node_(node), sessions_(std::move(sessions)) {}
  kj::Promise<void> subscribe(SubscribeContext ctx) override {
    // Answered by the role the node has once it no longer stands for leader.
    return node_.UntilSettled().then([&node = node_, sessions = sessions_, ctx]() mutable {
      return node.role().Subscribe(ctx, sessions);
    });
  }
  kj::Promise<void> takeOver(TakeOverContext ctx) override { return node_.role().TakeOver(ctx); }
  kj::Promise<void> snapshot(SnapshotContext ctx) override {
    return node_.snapshots().Serve(ctx, std::make_shared<PeerSessionHold>(sessions_));
  }
  kj::Promise<void> requestVote(RequestVoteContext ctx) override {
    return node_.role()
        .RequestVote(FromCapnp(ctx.getParams().getRequest()))
        .then([ctx](replication::VoteReply reply) mutable {
          ToCapnp(reply, ctx.getResults().initReply());
        });
  }
  kj::Promise<void> heartbeat(HeartbeatContext ctx) override {
    sessions_->last_heartbeat_us = NowUs();
    replication::HeartbeatReply reply =
        node_.role().Heartbeat(FromCapnp(ctx.getParams().getBeat()));
    ToCapnp(reply, ctx.getResults().initReply());
    return kj::READY_NOW;
  }
  kj::Promise<void> position(PositionContext ctx) override {
    replication::PeerPosition p = node_.role().Position();
    if (!node_.wal_files().empty()) p.wal_oldest = node_.wal_files().front().start_seq;
    p.leads = node_.role().WriteRefusal().ok();
    ToCapnp(p, ctx.getResults().initPosition());
    return kj::READY_NOW;
  }

 private:
  Node& node_;
  std::shared_ptr<PeerSessions> sessions_;
};

// A node's RPC connection accepted from a peer, served with the peer read limit until it
// ends. (Cap'n Proto's TwoPartyServer takes no reader options in 0.9.) Each has its own
// bootstrap, which notes whether a follower subscribed on it.
struct PeerConnection {
  PeerConnection(kj::Own<BufferedStream> s, Node& node)
      : stream(kj::mv(s)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER, PeerReaderOptions()),
        rpc(capnp::makeRpcServer(network, kj::heap<NodeImpl>(node, sessions))) {}
  // Follower sessions of this connection that live (shared with them: a session may end
  // after its connection).
  std::shared_ptr<PeerSessions> sessions = std::make_shared<PeerSessions>();
  kj::Own<BufferedStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

// One client connection (the client protocol of rpc/client.capnp, after its preamble): reads
// Requests, has the client service serve them, and writes the Replies in the order the requests came.
//
// Requests take effect in the order sent, as if served one after another. Writes are served
// as they arrive, so those of a pipelining client share group commits (they enter the write
// queue in order), and small reads are served at once. A read that follows a write not yet
// applied, a write that follows a scan still running on a worker, and everything after such
// a request wait in order until the requests before them allow (Drain).
//
// The connection reads at most maxRequestsAhead requests, and about 64 MiB of deferred
// requests and unsent read replies, ahead of the replies going out; past either it stops
// reading until they are out. A client that never reads its replies is thus held back by TCP,
// not by the node's memory.
class ClientConnection {
 public:
  static constexpr size_t kMaxRequestsAhead = schema::MAX_REQUESTS_AHEAD;
  static constexpr uint64_t kMaxHeldBytes = 64 << 20;

  // After refusing a malformed request, how long the node reads and discards what the client
  // still sends before it closes (see Linger).
  static constexpr auto kLinger = 2 * kj::SECONDS;

  // `socket` (owned by `stream`, may be null) tells the idle time-out of bytes arriving.
  ClientConnection(Node& node, kj::Own<BufferedStream> stream, kj::Timer& timer,
                   const FdStream* socket)
      : node_(node), stream_(kj::mv(stream)), timer_(timer), socket_(socket) {}

  // Answers the first request with `why` and closes: the node takes no more clients.
  kj::Promise<void> RunRefused(absl::Status why) {
    Refuse(std::move(why), /*log=*/false);  // the listener logs these, at most once a second
    return Linger();
  }

  // Resolves when the client has closed the connection (or broken the protocol, or been idle
  // for client_idle_timeout_ms) and every reply is out; fails when the connection breaks.
  kj::Promise<void> Run() {
    kj::Promise<void> room = kj::READY_NOW;
    if (inflight_ >= kMaxRequestsAhead || held_bytes_ >= kMaxHeldBytes) {
      room = AfterQueuedReplies();
    }
    // A frame whose segment table declares more than a request may hold is refused before
    // its body is read (CheckRequest gives the request a traversal budget of its own).
    capnp::ReaderOptions options = RequestFramingOptions();
    return room.then([this, options]() {
      auto next = capnp::tryReadMessage(*stream_, options);
      if (node_.options().client_idle_timeout_ms > 0) {
        next = next.exclusiveJoin(IdleTimeout().then([]() {
          return kj::Maybe<kj::Own<capnp::MessageReader>>(nullptr);  // closes as at the end
        }));
      }
      return kj::mv(next).then(
              [this](kj::Maybe<kj::Own<capnp::MessageReader>> message) -> kj::Promise<void> {
                KJ_IF_MAYBE(m, message) {
                  if (Dispatch(kj::mv(*m))) return Run();
                  return Linger();  // a malformed request
                }
                return Close();  // the end of the stream
              },
              [this](kj::Exception&& e) -> kj::Promise<void> {
                if (e.getType() == kj::Exception::Type::DISCONNECTED) return kj::mv(e);
                if (std::string_view(e.getDescription().cStr()).find("Message is too large") !=
                    std::string_view::npos) {
                  Refuse(absl::InvalidArgumentError(absl::StrCat(
                      "a request whose frame declares more than the limit of ",
                      schema::MAX_REQUEST_BYTES, " bytes")));
                  return Linger();
                }
                // The framing itself is broken (too many segments, too large): say so.
                Refuse(absl::InvalidArgumentError(
                    absl::StrCat("malformed request: ", e.getDescription().cStr())));
                return Linger();
              });
    });
  }

 private:
  enum class Kind { kWrite, kRead, kWorkerRead };

  // A scan's share of the node's scan budget, given back when destroyed.
  struct ScanReservation {
    explicit ScanReservation(ClientService& c) : clients(c) {}
    ~ScanReservation() { clients.ReleaseScanReply(); }
    ClientService& clients;
  };

  kj::Promise<void> Close() {
    return AfterQueuedReplies().then([this]() { return stream_->Flushed(); });
  }

  // Resolves once the connection has been idle for client_idle_timeout_ms: no request came,
  // no bytes of one arrived, and no reply was owed, for that long.
  kj::Promise<void> IdleTimeout() {
    uint32_t idle_ms = node_.options().client_idle_timeout_ms;
    uint64_t armed_at = socket_ == nullptr ? 0 : socket_->bytes_read();
    return timer_.afterDelay(idle_ms * kj::MILLISECONDS).then([this, idle_ms, armed_at]() {
      bool arriving = socket_ != nullptr && socket_->bytes_read() != armed_at;
      if (inflight_ > 0 || arriving) return IdleTimeout();  // not idle
      spdlog::info("closing a client connection idle for {} ms (client_idle_timeout_ms)",
                   idle_ms);
      return kj::Promise<void>(kj::READY_NOW);
    });
  }

  // Closes after a refusal without losing it: closing a socket with unread bytes makes TCP
  // reset the connection, and the client may then never read the refusal. So the node sends
  // every reply and shuts its side while it reads and discards until the client closes, all
  // within kLinger (a "lingering close").
  kj::Promise<void> Linger() {
    auto replies = Close().then([this]() { stream_->shutdownWrite(); });
    auto both = kj::joinPromises(kj::arr(kj::mv(replies), Discard()));
    // Either end -- the time is up, or the client reset the connection -- ends the lingering,
    // and the connection is closed either way: nothing to report.
    return timer_.timeoutAfter(kLinger, kj::mv(both)).catch_([](kj::Exception&&) {});
  }

  kj::Promise<void> Discard() {
    return stream_->tryRead(discard_, 1, sizeof discard_).then([this](size_t n) {
      return n == 0 ? kj::Promise<void>(kj::READY_NOW) : Discard();
    });
  }

  // Resolves once every reply queued so far is written.
  kj::Promise<void> AfterQueuedReplies() {
    auto replies = kj::mv(tail_).fork();
    tail_ = replies.addBranch();
    return replies.addBranch();
  }

  // Queues a refusal of the request just read; the connection then closes.
  void Refuse(absl::Status why, bool log = true) {
    if (log) spdlog::warn("closing a client connection: {}", std::string(why.message()));
    auto builder = kj::heap<capnp::MallocMessageBuilder>(kSmallReply.wordCount);
    ToCapnp(why, builder->initRoot<schema::Reply>().initRefused());
    Queue(kj::READY_NOW, kj::mv(builder), Kind::kRead);
  }

  // Serves one request, now or after the replies before it, and queues its reply behind
  // theirs. False when the request is malformed: it is refused, and nothing more is read.
  bool Dispatch(kj::Own<capnp::MessageReader> framed) {
    absl::StatusOr<CheckedRequest> checked = CheckRequest(kj::mv(framed));
    if (!checked.ok()) {
      Refuse(checked.status());
      return false;
    }
    kj::Own<capnp::MessageReader> message = kj::mv(checked->message);
    uint64_t words = checked->bytes / sizeof(capnp::word);
    schema::Request::Reader request = message->getRoot<schema::Request>();
    Kind kind = request.isWrite() || request.isWriteMany() ? Kind::kWrite : Kind::kRead;
    // A scan's fields may be of the wrong type: then it is no worker's (Serve refuses it).
    auto ignored = kj::runCatchingExceptions([&]() {
      if (ClientService::ServesOnWorker(request)) kind = Kind::kWorkerRead;
    });
    (void)ignored;
    auto builder = kj::heap<capnp::MallocMessageBuilder>(kSmallReply.wordCount);
    schema::Reply::Builder reply = builder->initRoot<schema::Reply>();
    // A scan's reply may be large: its bound is reserved from the node's budget (and counted
    // against this connection's) now, before it is built, so that neither many scans in
    // flight on one connection nor scans on many connections outgrow it. So are a WAL read's
    // and verify's checksums, bounded alike.
    kj::Own<ScanReservation> reservation;
    if (request.isScan() || request.isWalRead() ||
        (request.isVerify() && request.getVerify().isChecksum())) {
      if (!node_.clients().ReserveScanReply()) {
        ToCapnp(absl::UnavailableError(absl::StrCat(
                    "the node is busy with large scans (", ClientService::kMaxScanReplyBytesReserved,
                    " bytes of replies in flight); retry")),
                reply.initRefused());
        Queue(kj::READY_NOW, kj::mv(builder), Kind::kRead);
        return true;
      }
      reservation = kj::heap<ScanReservation>(node_.clients());
      held_bytes_ += schema::MAX_SCAN_REPLY_BYTES;
    }
    if (deferred_.empty() && !MustWait(kind)) {
      Queue(Start(request, reply, kind), kj::mv(builder), kind, kj::mv(reservation));
      return true;
    }
    // Its turn comes in Drain(), once the requests before it allow.
    uint64_t bytes = words * sizeof(capnp::word);
    held_bytes_ += bytes;
    auto paf = kj::newPromiseAndFulfiller<kj::Promise<void>>();
    deferred_.push_back(Deferred{kj::mv(message), reply, kind, bytes, kj::mv(paf.fulfiller)});
    Queue(kj::mv(paf.promise), kj::mv(builder), kind, kj::mv(reservation));
    return true;
  }

  // Whether a request of `kind` must wait for those served before it: a read for their writes
  // to be applied, a write for their scans on a worker to have read.
  bool MustWait(Kind kind) const {
    return kind == Kind::kWrite ? worker_reads_ > 0 : writes_ > 0;
  }

  // Serves the deferred requests whose turn has come, in order. Writes that become free
  // together are served together, so they share a group commit.
  void Drain() {
    while (!deferred_.empty() && !MustWait(deferred_.front().kind)) {
      Deferred d = kj::mv(deferred_.front());
      deferred_.pop_front();
      held_bytes_ -= d.bytes;
      auto request = d.message->getRoot<schema::Request>();
      d.served->fulfill(Start(request, d.reply, d.kind).attach(kj::mv(d.message)));
    }
  }

  // Serves a request whose turn has come; counts it until it is served.
  kj::Promise<void> Start(schema::Request::Reader request, schema::Reply::Builder reply,
                          Kind kind) {
    if (kind == Kind::kRead) return Serve(request, reply);  // nothing waits on it
    if (kind == Kind::kWrite) ++writes_;
    if (kind == Kind::kWorkerRead) ++worker_reads_;
    // Eager: the counts must drop when the request is served, not when the reply queue
    // reaches it (a continuation in KJ runs only when its promise is waited on).
    return Serve(request, reply)
        .then([this, kind]() {
          if (kind == Kind::kWrite) --writes_;
          if (kind == Kind::kWorkerRead) --worker_reads_;
          Drain();
        })
        .eagerlyEvaluate(nullptr);
  }

  // ClientService::Serve, with a request that fails to decode or to be served answered `refused`.
  kj::Promise<void> Serve(schema::Request::Reader request, schema::Reply::Builder reply) {
    return kj::evalNow([&]() { return node_.clients().Serve(request, reply); })
        .catch_([reply](kj::Exception&& e) mutable {
          absl::Status why = RefusalOf(e);
          if (absl::IsInternal(why)) {  // the node's own fault: logged too
            spdlog::error("internal error serving a client request: {}",
                          e.getDescription().cStr());
          }
          ToCapnp(why, reply.initRefused());
        });
  }

  // Writes the reply in `builder` once `served` resolves and the replies before it are out.
  // `reservation` (a scan's; null for other requests) holds the node's scan budget, and its
  // maxScanReplyBytes count against kMaxHeldBytes, until the reply is built; the built reply
  // counts against kMaxHeldBytes until it is written.
  void Queue(kj::Promise<void> served, kj::Own<capnp::MallocMessageBuilder> builder,
             Kind kind, kj::Own<ScanReservation> reservation = {}) {
    ++inflight_;
    // A read's reply may be large: it counts against kMaxHeldBytes until it is written. (A
    // write's is a few words, and writes are bounded by the write queue.)
    kj::Own<uint64_t> held;
    if (kind != Kind::kWrite) {
      held = kj::heap<uint64_t>(0);
      served = served
                   .then([this, b = builder.get(), h = held.get(),
                          reservation = kj::mv(reservation)]() mutable {
                     *h = capnp::computeSerializedSizeInWords(*b) * sizeof(capnp::word);
                     held_bytes_ += *h;
                     if (reservation.get() != nullptr) held_bytes_ -= schema::MAX_SCAN_REPLY_BYTES;
                     // Built: from here the connection's bound holds the reply, so a client
                     // that reads slowly keeps no share of the node's scan budget.
                     reservation = nullptr;
                   })
                   .eagerlyEvaluate(nullptr);  // counted once built, not once sent
    }
    tail_ = kj::joinPromises(kj::arr(kj::mv(tail_), kj::mv(served)))
                .then([this, builder = kj::mv(builder), held = kj::mv(held)]() mutable {
                  --inflight_;
                  if (held.get() != nullptr) held_bytes_ -= *held;
                  return capnp::writeMessage(*stream_, *builder).attach(kj::mv(builder));
                })
                .eagerlyEvaluate(nullptr);
  }

  // A request waiting for its turn; `served` takes the promise of its serving.
  struct Deferred {
    kj::Own<capnp::MessageReader> message;
    schema::Reply::Builder reply;
    Kind kind;
    uint64_t bytes;
    kj::Own<kj::PromiseFulfiller<kj::Promise<void>>> served;
  };

  Node& node_;
  kj::Own<BufferedStream> stream_;
  kj::Timer& timer_;
  const FdStream* socket_;  // in stream_, or null
  kj::byte discard_[4096];  // Discard() reads into it
  std::deque<Deferred> deferred_;  // in the order sent (destroyed after tail_)
  kj::Promise<void> tail_ = kj::READY_NOW;  // every reply queued so far is written
  size_t inflight_ = 0;      // requests whose reply is not written yet
  size_t writes_ = 0;        // writes being served (not yet applied)
  size_t worker_reads_ = 0;  // scans running on a worker
  uint64_t held_bytes_ = 0;  // deferred requests and read replies not yet written
};

}  // namespace

// Accepts connections on the listen address and tells clients from nodes by the first bytes:
// a client sends the client protocol's preamble; a node speaks Cap'n Proto RPC, whose first
// word (a segment count below 512) can never spell it.
class ListenerImpl final : public Listener, private kj::TaskSet::ErrorHandler {
 public:
  ListenerImpl(Node& node, kj::ConnectionReceiver& receiver, kj::AsyncIoContext& io)
      : node_(node), receiver_(receiver), io_(io), connections_(*this) {}

  // Accepts until the node stops. A failed accept() (EMFILE and ENFILE when descriptors run
  // out, ENOBUFS, ENOMEM) ends nothing: the listener waits, longer after each failure in a
  // row, and accepts again; connections wait in the backlog meanwhile.
  kj::Promise<void> AcceptLoop() override {
    // KJ's accept() throws at once when the listening socket was readable, and later (a
    // rejected promise) when it had to wait: both failures are handled alike.
    kj::Promise<kj::Own<kj::AsyncIoStream>> accepted = nullptr;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { accepted = receiver_.accept(); })) {
      return AcceptFailed(kj::mv(*e));
    }
    return accepted.then(
        [this](kj::Own<kj::AsyncIoStream> connection) {
          accept_backoff_ms_ = 0;
          auto& stats = node_.connection_stats();
          if (unrouted_ + stats.clients >=
              node_.options().max_client_connections + kSpareUnrouted) {
            ++stats.refused;
            // Closed at once (dropping it closes it): without a free place it would only
            // hold a descriptor until its preamble time-out.
            LogRarely("refused a connection: the node holds as many as it may (",
                      stats.clients, " clients and ", unrouted_, " not yet identified)");
            return AcceptLoop();
          }
          auto socket = FdStream::Wrap(kj::mv(connection), io_);
          const FdStream* fd = dynamic_cast<const FdStream*>(socket.get());
          kj::TimePoint deadline = io_.provider->getTimer().now() +
                                   node_.options().preamble_timeout_ms * kj::MILLISECONDS;
          auto stream = kj::heap<BufferedStream>(kj::mv(socket));
          auto unrouted = kj::heap<Unrouted>(unrouted_);
          if (node_.security().tls != nullptr) {
            connections_.add(Secure(kj::mv(stream), fd, deadline, kj::mv(unrouted)));
          } else {
            connections_.add(Route(kj::mv(stream), fd, deadline, kj::mv(unrouted)));
          }
          return AcceptLoop();
        },
        [this](kj::Exception&& e) { return AcceptFailed(kj::mv(e)); });
  }

  // After a failed accept(): counted, logged at most once a second, and accepted again after
  // a pause that doubles with each failure in a row, up to 1 s.
  kj::Promise<void> AcceptFailed(kj::Exception&& e) {
    ++node_.connection_stats().accept_failures;
    accept_backoff_ms_ = std::clamp<uint32_t>(accept_backoff_ms_ * 2, 10, 1000);
    LogRarely("accepting a connection failed (", e.getDescription().cStr(),
              "); accepting again in ", accept_backoff_ms_, " ms");
    return io_.provider->getTimer()
        .afterDelay(accept_backoff_ms_ * kj::MILLISECONDS)
        .then([this]() { return AcceptLoop(); });
  }

 private:
  void taskFailed(kj::Exception&& e) override {
    // A client going away mid-request is routine; a refused request was logged already.
    spdlog::debug("client connection ended: {}", e.getDescription().cStr());
  }

  // Resolves when the connection counting its sessions in `sessions` has had none at a look
  // every preamble_timeout_ms.
  kj::Promise<void> ClosesWithoutSession(std::shared_ptr<PeerSessions> sessions) {
    return io_.provider->getTimer()
        .afterDelay(node_.options().preamble_timeout_ms * kj::MILLISECONDS)
        .then([this, sessions = std::move(sessions)]() mutable -> kj::Promise<void> {
          // A connection a leader sends its heartbeats on has no session, and lives while
          // they come.
          bool beating = NowUs() - sessions->last_heartbeat_us <
                         int64_t{node_.options().preamble_timeout_ms} * 1000;
          if (sessions->live > 0 || beating) return ClosesWithoutSession(std::move(sessions));
          LogRarely("closing a node connection with no follower session on it");
          return kj::READY_NOW;
        });
  }

  // Logs at most once a second: a flood must not fill the disk with the same line.
  template <typename... Args>
  void LogRarely(const Args&... args) {
    int64_t now = NowUs();
    if (now - last_refusal_log_us_ < 1'000'000) return;
    last_refusal_log_us_ = now;
    spdlog::warn("{}", absl::StrCat(args...));
  }

  // Counts a connection as not yet identified while it lives, unless Release()d first: so
  // the count drops whether routing ends well, fails (a reset before the preamble) or is
  // cancelled.
  class Unrouted {
   public:
    explicit Unrouted(uint32_t& count) : count_(&count) { ++*count_; }
    ~Unrouted() { Release(); }
    void Release() {
      if (count_ != nullptr) --*count_;
      count_ = nullptr;
    }

   private:
    uint32_t* count_;
  };

  // A node with TLS: a connection that begins a TLS handshake is served through TLS
  // (`secured`); any other is routed as it is, to be refused in plain text (a client is told
  // why). The handshake counts against the connection's `deadline`.
  kj::Promise<void> Secure(kj::Own<BufferedStream> stream, const FdStream* socket,
                           kj::TimePoint deadline, kj::Own<Unrouted> unrouted) {
    BufferedStream& s = *stream;
    kj::Timer& timer = io_.provider->getTimer();
    auto first_bytes = s.Peek(2).exclusiveJoin(
        timer.atTime(deadline).then([]() { return kj::ArrayPtr<const kj::byte>(); }));
    return first_bytes.then([this, stream = kj::mv(stream), socket, deadline,
                             unrouted = kj::mv(unrouted)](
                                kj::ArrayPtr<const kj::byte> head) mutable -> kj::Promise<void> {
      if (head.size() < 2) return kj::READY_NOW;  // closed or silent
      if (!BeginsTlsHandshake(head)) {
        return Route(kj::mv(stream), socket, deadline, kj::mv(unrouted), false);
      }
      auto wrapped = node_.security().tls->wrapServer(kj::mv(stream));
      auto late = io_.provider->getTimer().atTime(deadline).then(
          []() -> kj::Own<kj::AsyncIoStream> {
            KJ_FAIL_REQUIRE("the TLS handshake did not finish within preamble_timeout_ms");
          });
      return wrapped.exclusiveJoin(kj::mv(late))
          .then(
              [this, socket, deadline, unrouted = kj::mv(unrouted)](
                  kj::Own<kj::AsyncIoStream> tls) mutable {
                return Route(kj::heap<BufferedStream>(kj::mv(tls)), socket, deadline,
                             kj::mv(unrouted), true);
              },
              [this](kj::Exception&& e) {
                ++node_.connection_stats().auth_failures;
                LogRarely("refused a connection: its TLS handshake failed: ",
                          e.getDescription().cStr());
              });
    });
  }

  // A connection that offers the cluster secret's hello proves it first (Authenticate), then
  // comes back here `authenticated`. A node with a secret serves no other connection: a
  // client is answered `unauthenticated`, a node's connection is closed; as are those not
  // `secured` by TLS on a node that requires it (without a secret's handshake in plain text).
  // The handshakes and the preamble share one `deadline`, preamble_timeout_ms after the
  // accept.
  kj::Promise<void> Route(kj::Own<BufferedStream> stream, const FdStream* socket,
                          kj::TimePoint deadline, kj::Own<Unrouted> unrouted,
                          bool secured = false, bool authenticated = false) {
    BufferedStream& s = *stream;
    // A connection that does not say what it speaks within the bound is closed.
    auto first_bytes = s.Peek(kPreambleBytes).exclusiveJoin(
        io_.provider->getTimer().atTime(deadline).then(
            []() { return kj::ArrayPtr<const kj::byte>(); }));
    return first_bytes.then([this, stream = kj::mv(stream), socket, deadline,
                             unrouted = kj::mv(unrouted), secured, authenticated](
                                kj::ArrayPtr<const kj::byte> head) mutable -> kj::Promise<void> {
      if (head.size() < kPreambleBytes) return kj::READY_NOW;  // closed or silent
      kj::StringPtr preamble = schema::CLIENT_PREAMBLE;
      auto text = head.slice(0, kPreambleBytes).asChars();
      bool without_tls = !secured && node_.security().tls != nullptr;
      if (!without_tls && !authenticated &&
          kj::StringPtr(auth::kMagic.data(), auth::kMagic.size()).asArray() == text) {
        return Authenticate(kj::mv(stream), socket, deadline, kj::mv(unrouted), secured);
      }
      if (without_tls && kj::StringPtr(auth::kMagic.data(), auth::kMagic.size()).asArray() ==
                             text) {
        // A secret's hello in plain text: the connector is told TLS is required.
        ++node_.connection_stats().auth_failures;
        LogRarely("refused a connection that did not use TLS");
        unrouted->Release();
        static constexpr kj::byte kVerdict[] = {auth::kTlsRequired};
        BufferedStream& told = *stream;
        return told.write(kVerdict, sizeof kVerdict)
            .then([&told]() { return told.Flushed(); })
            .attach(kj::mv(stream));
      }
      bool without_secret = !authenticated && !node_.options().secret.empty();
      const char* missing = without_tls ? "TLS" : without_secret ? "the cluster secret" : nullptr;
      if (text == preamble.asArray()) {
        kj::byte skipped[kPreambleBytes];
        BufferedStream& client = *stream;
        return client.tryRead(skipped, kPreambleBytes, kPreambleBytes)
            .then([this, stream = kj::mv(stream), socket, unrouted = kj::mv(unrouted),
                   without_tls, without_secret](size_t) mutable -> kj::Promise<void> {
              auto connection = kj::heap<ClientConnection>(node_, kj::mv(stream),
                                                           io_.provider->getTimer(), socket);
              uint32_t limit = node_.options().max_client_connections;
              auto& stats = node_.connection_stats();
              absl::Status refusal;
              if (without_tls) {
                ++stats.auth_failures;
                LogRarely("refused a client that did not use TLS");
                refusal = absl::UnauthenticatedError(
                    "this node requires TLS: give the client the cluster's CA certificate "
                    "(walship --cluster with the cluster's config file, or --tls-ca)");
              } else if (without_secret) {
                ++stats.auth_failures;
                LogRarely("refused a client that did not prove the cluster secret");
                refusal = absl::UnauthenticatedError(
                    "this node requires the cluster secret: give the client the cluster's "
                    "config file (walship --cluster), which names it");
              } else if (stats.clients >= limit) {
                ++stats.refused;
                LogRarely("refused a client: ", stats.clients, " client connections are open ",
                          "(max_client_connections)");
                refusal = absl::UnavailableError(absl::StrCat(
                    "the node serves ", limit, " client connections already "
                    "(max_client_connections); retry later"));
              }
              if (!refusal.ok()) {
                unrouted->Release();
                // The refusal goes out (Linger, 2 s at most) for at most kMaxRefusing
                // connections at once, counted apart from the places peers need; past
                // that, the connection just closes.
                if (refusing_ >= kMaxRefusing) return kj::READY_NOW;
                ++refusing_;
                auto refused = connection->RunRefused(std::move(refusal));
                return refused.attach(kj::mv(connection), kj::defer([this]() { --refusing_; }));
              }
              unrouted->Release();
              ++stats.clients;
              auto run = connection->Run();
              return run.attach(kj::mv(connection),
                                kj::defer([this]() { --node_.connection_stats().clients; }));
            });
      }
      if (text.slice(0, 7) == preamble.asArray().slice(0, 7)) {
        LogRarely("refused a client speaking protocol '", std::string(text.begin(), text.size()),
                  "'; this node speaks '", preamble.cStr(), "'");
        return kj::READY_NOW;
      }
      if (missing != nullptr) {
        ++node_.connection_stats().auth_failures;
        LogRarely("refused a connection that did not use ", missing);
        return kj::READY_NOW;
      }
      unrouted->Release();
      auto& stats = node_.connection_stats();
      if (stats.peers >= kMaxPeerConnections) {
        ++stats.refused;
        LogRarely("refused a node connection: ", stats.peers, " are open");
        return kj::READY_NOW;
      }
      ++stats.peers;
      auto peer = kj::heap<PeerConnection>(kj::mv(stream), node_);
      auto ended = peer->network.onDisconnect();
      // Nodes connect to subscribe: a connection with no live follower session for
      // preamble_timeout_ms (none began, or it was replaced by a session of the same id on
      // another connection) is closed, so that made-up peers cannot hold the places of real
      // ones: the live ones are at most one per configured follower.
      auto idle = ClosesWithoutSession(peer->sessions);
      // And once the last of its follower sessions ends (the follower then reconnects at
      // once, to whichever node leads: a leader that hands over ends them all).
      auto closed = kj::newPromiseAndFulfiller<void>();
      peer->sessions->close = kj::mv(closed.fulfiller);
      return ended.exclusiveJoin(kj::mv(idle))
          .exclusiveJoin(kj::mv(closed.promise))
          .attach(kj::mv(peer), kj::defer([this]() { --node_.connection_stats().peers; }));
    });
  }

  // The node's side of the cluster secret's handshake; an accepted connection is routed as
  // any other, a refused one closed once its verdict is out.
  kj::Promise<void> Authenticate(kj::Own<BufferedStream> stream, const FdStream* socket,
                                 kj::TimePoint deadline, kj::Own<Unrouted> unrouted,
                                 bool secured) {
    BufferedStream& s = *stream;
    kj::Timer& timer = io_.provider->getTimer();
    kj::Duration left = deadline > timer.now() ? deadline - timer.now() : 0 * kj::SECONDS;
    auto handshake = AcceptHandshake(s, node_.options().secret, timer, left);
    return handshake.then([this, stream = kj::mv(stream), socket, deadline,
                           unrouted = kj::mv(unrouted), secured](
                              absl::Status proved) mutable -> kj::Promise<void> {
      if (proved.ok()) {
        return Route(kj::mv(stream), socket, deadline, kj::mv(unrouted), secured, true);
      }
      ++node_.connection_stats().auth_failures;
      LogRarely("refused a connection: ", proved.message());
      BufferedStream& refused = *stream;
      return refused.Flushed().attach(kj::mv(stream));
    });
  }

  static constexpr size_t kPreambleBytes = 8;
  Node& node_;
  kj::ConnectionReceiver& receiver_;
  kj::AsyncIoContext& io_;
  uint32_t accept_backoff_ms_ = 0;  // after a failed accept(); 0 after a good one
  uint32_t unrouted_ = 0;           // accepted, protocol not yet known
  uint32_t refusing_ = 0;           // clients being told the node is full
  int64_t last_refusal_log_us_ = 0;
  kj::TaskSet connections_;  // last: destroyed first, while the counts above still exist
};


kj::Own<Listener> Listener::Create(Node& node, kj::ConnectionReceiver& receiver,
                                   kj::AsyncIoContext& io) {
  return kj::heap<ListenerImpl>(node, receiver, io);
}

}  // namespace walship::rpc
