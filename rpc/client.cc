#include "rpc/client.h"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/time.h>

#include <chrono>
#include <functional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "rpc/client.capnp.h"
#include "rpc/buffered_stream.h"
#include "rpc/fd_stream.h"
#include "rpc/convert.h"

namespace walship::rpc {
namespace {

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// KJ allows one event loop per thread; every Client of a thread shares it.
struct ThreadLoop {
  std::unique_ptr<kj::AsyncIoContext> io;
  int clients = 0;
};
thread_local ThreadLoop thread_loop;

kj::AsyncIoContext& AcquireLoop() {
  if (thread_loop.clients++ == 0) {
    thread_loop.io = std::make_unique<kj::AsyncIoContext>(kj::setupAsyncIo());
  }
  return *thread_loop.io;
}

void ReleaseLoop() {
  if (--thread_loop.clients == 0) thread_loop.io.reset();
}

// A size hint for a write request, so Cap'n Proto allocates one fitting segment.
capnp::MessageSize WriteSize(const std::vector<engine::WriteOp>& ops) {
  uint64_t words = 16;
  for (const auto& op : ops) words += 8 + (op.key.size() + op.value.size()) / 8 + 2;
  return capnp::MessageSize{words, 0};
}

class ClientImpl final : public Client {
 public:
  ClientImpl(std::string endpoint, absl::Duration timeout)
      : endpoint_(std::move(endpoint)), timeout_(timeout), io_(AcquireLoop()) {}
  ~ClientImpl() noexcept override {
    node_.reset();
    rpc_ = nullptr;
    stream_ = nullptr;
    ReleaseLoop();
  }

  absl::Status Init() {
    auto connect = io_.provider->getNetwork()
                       .parseAddress(endpoint_)
                       .then([](kj::Own<kj::NetworkAddress> addr) {
                         auto p = addr->connect();
                         return p.attach(kj::mv(addr));
                       });
    absl::Status s = Wait(kj::mv(connect), [this](kj::Own<kj::AsyncIoStream> stream) {
      stream_ = kj::heap<BufferedStream>(FdStream::Wrap(kj::mv(stream), io_));
      rpc_ = kj::heap<capnp::TwoPartyClient>(*stream_);
      node_ =
          std::make_unique<schema::Node::Client>(rpc_->bootstrap().castAs<schema::Node>());
    });
    if (!s.ok()) {
      return absl::UnavailableError(absl::StrCat("cannot reach ", endpoint_, ": ", s.message()));
    }
    return absl::OkStatus();
  }

  const std::string& endpoint() const override { return endpoint_; }

  absl::StatusOr<WriteResult> Write(const std::vector<engine::WriteOp>& ops) override {
    auto req = node_->writeRequest(WriteSize(ops));
    ToCapnp(ops, req.initOps(ops.size()));
    req.setMode(schema::WriteMode::CLUSTER_DEFAULT);
    absl::StatusOr<WriteResult> out;
    absl::Status s = Wait(req.send(), [&](capnp::Response<schema::KvService::WriteResults> r) {
      absl::Status e = FromCapnp(r.getError());
      if (!e.ok()) {
        out = e;
      } else {
        out = WriteResult{r.getFirstSeq(), r.getLastSeq()};
      }
    });
    if (!s.ok()) return s;
    return out;
  }

  absl::StatusOr<std::vector<int64_t>> WriteMany(
      const std::vector<std::vector<engine::WriteOp>>& writes, size_t depth) override {
    std::vector<int64_t> latency_ns(writes.size(), 0);
    absl::Status first_error;
    size_t next = 0, done = 0;
    // Each completed write starts the next one, so `depth` stay in flight.
    std::function<kj::Promise<void>()> lane = [&]() -> kj::Promise<void> {
      if (next >= writes.size() || !first_error.ok()) return kj::READY_NOW;
      size_t i = next++;
      auto req = node_->writeRequest(WriteSize(writes[i]));
      ToCapnp(writes[i], req.initOps(writes[i].size()));
      // The KJ timer's now() is cached per loop turn; latency needs the real clock.
      auto start = std::chrono::steady_clock::now();
      return req.send().then(
          [&, i, start](capnp::Response<schema::KvService::WriteResults> r) {
            latency_ns[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now() - start)
                                .count();
            ++done;
            absl::Status e = FromCapnp(r.getError());
            if (!e.ok() && first_error.ok()) first_error = e;
            return lane();
          });
    };
    kj::Vector<kj::Promise<void>> lanes;
    for (size_t k = 0; k < std::max<size_t>(1, depth); ++k) lanes.add(lane());
    absl::Duration budget = timeout_ * static_cast<int64_t>(1 + writes.size() / 64);
    absl::Status s = WaitFor(kj::joinPromises(lanes.releaseAsArray()), budget);
    if (!s.ok()) return s;
    if (!first_error.ok()) return first_error;
    latency_ns.resize(done);
    return latency_ns;
  }

  absl::StatusOr<std::vector<absl::StatusOr<WriteResult>>> WritePipeline(
      absl::Span<const std::vector<engine::WriteOp>> writes) override {
    uint64_t words = 16;
    for (const auto& w : writes) words += 4 + WriteSize(w).wordCount;
    auto req = node_->writeManyRequest(capnp::MessageSize{words, 0});
    auto list = req.initWrites(writes.size());
    for (size_t i = 0; i < writes.size(); ++i) {
      ToCapnp(writes[i], list[i].initOps(writes[i].size()));
      list[i].setMode(schema::WriteMode::CLUSTER_DEFAULT);
    }
    std::vector<absl::StatusOr<WriteResult>> out;
    absl::Status refused;
    // A pipeline waits for all its writes: the budget grows with its length, as WriteMany's.
    absl::Duration budget = timeout_ * static_cast<int64_t>(1 + writes.size() / 64);
    absl::Status s = Wait(
        req.send(), budget, [&](capnp::Response<schema::KvService::WriteManyResults> r) {
          refused = FromCapnp(r.getError());
          for (auto reply : r.getReplies()) {
            absl::Status e = FromCapnp(reply.getError());
            if (e.ok()) {
              out.emplace_back(WriteResult{reply.getFirstSeq(), reply.getLastSeq()});
            } else {
              out.emplace_back(std::move(e));
            }
          }
        });
    if (!s.ok()) return s;
    if (!refused.ok()) return refused;
    if (out.size() != writes.size()) {
      return absl::DataLossError(absl::StrCat(endpoint_, ": a pipeline of ", writes.size(),
                                              " writes got ", out.size(), " replies"));
    }
    return out;
  }

  absl::StatusOr<std::string> Get(const std::string& key, uint64_t min_seq) override {
    auto req = node_->getRequest();
    req.setKey(ToData(key));
    req.setMinSeq(min_seq);
    absl::StatusOr<std::string> out;
    absl::Status s = Wait(req.send(), [&](capnp::Response<schema::KvService::GetResults> r) {
      absl::Status e = FromCapnp(r.getError());
      if (e.ok()) {
        out = ToString(r.getValue());
      } else {
        out = e;
      }
    });
    if (!s.ok()) return s;
    return out;
  }

  absl::StatusOr<std::vector<engine::KeyValue>> Scan(const engine::ScanOptions& scan,
                                                     uint64_t min_seq) override {
    auto req = node_->scanRequest();
    req.setStart(ToData(scan.start));
    req.setPrefix(ToData(scan.prefix));
    req.setLimit(static_cast<uint32_t>(std::min<uint64_t>(scan.limit, UINT32_MAX)));
    req.setMinSeq(min_seq);
    absl::StatusOr<std::vector<engine::KeyValue>> out;
    absl::Status s = Wait(req.send(), [&](capnp::Response<schema::KvService::ScanResults> r) {
      absl::Status e = FromCapnp(r.getError());
      if (!e.ok()) {
        out = e;
        return;
      }
      std::vector<engine::KeyValue> kvs;
      for (auto item : r.getItems()) {
        kvs.push_back({ToString(item.getKey()), ToString(item.getValue())});
      }
      out = std::move(kvs);
    });
    if (!s.ok()) return s;
    return out;
  }

  absl::StatusOr<NodeStatusInfo> Status() override {
    NodeStatusInfo out;
    absl::Status s = Wait(node_->statusRequest().send(),
                          [&](capnp::Response<schema::KvService::StatusResults> r) {
                            auto st = r.getStatus();
                            out.node = st.getNode();
                            out.cluster = st.getCluster();
                            out.role = st.getRole();
                            out.latest_seq = st.getLatestSeq();
                            out.data_bytes = st.getDataBytes();
                            out.epoch = st.getEpoch();
                            out.database_id = st.getDatabaseId();
                            out.listen = st.getListen();
                            out.leader_id = st.getLeaderId();
                            out.leader_address = st.getLeaderAddress();
                            for (auto f : st.getFollowers()) {
                              FollowerStatusInfo fi;
                              fi.id = f.getId();
                              fi.state = f.getState();
                              fi.sent_seq = f.getSentSeq();
                              fi.received_seq = f.getReceivedSeq();
                              fi.durable_seq = f.getDurableSeq();
                              fi.applied_seq = f.getAppliedSeq();
                              fi.lag_seq = f.getLagSeq();
                              fi.lag_ms = f.getLagMs();
                              fi.bytes_shipped = f.getBytesShipped();
                              fi.last_ack_ago_ms = f.getLastAckAgoMs();
                              fi.message = f.getMessage();
                              out.followers.push_back(std::move(fi));
                            }
                            out.replication_state = st.getReplicationState();
                            out.applied_seq = st.getAppliedSeq();
                            out.leader_latest_seq = st.getLeaderLatestSeq();
                            out.lag_seq = st.getLagSeq();
                            out.lag_ms = st.getLagMs();
                            out.message = st.getMessage();
                            out.writes_accepted = st.getWritesAccepted();
                            out.write_groups = st.getWriteGroups();
                          });
    if (!s.ok()) return s;
    return out;
  }

 private:
  // `budget` from now. Not the loop timer's afterDelay: its now() is the time of the loop's
  // last turn, which for a client idle since then lies in the past (after an idle spell
  // longer than the budget every call timed out at once).
  static kj::TimePoint Deadline(absl::Duration budget) {
    return kj::systemPreciseMonotonicClock().now() +
           absl::ToInt64Microseconds(budget) * kj::MICROSECONDS;
  }

  absl::Status WaitFor(kj::Promise<void> p, absl::Duration budget) {
    auto bounded = io_.provider->getTimer().timeoutAt(Deadline(budget), kj::mv(p));
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { bounded.wait(io_.waitScope); })) {
      return absl::UnavailableError(absl::StrCat(endpoint_, ": ", e->getDescription().cStr()));
    }
    return absl::OkStatus();
  }

  // Waits for `p` at most timeout_ (or `budget`), then hands its value to `f`.
  template <typename T, typename F>
  absl::Status Wait(kj::Promise<T> p, F&& f) {
    return Wait(kj::mv(p), timeout_, std::forward<F>(f));
  }
  template <typename T, typename F>
  absl::Status Wait(kj::Promise<T> p, absl::Duration budget, F&& f) {
    auto bounded = io_.provider->getTimer().timeoutAt(Deadline(budget), kj::mv(p));
    absl::Status status;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { f(bounded.wait(io_.waitScope)); })) {
      // timeoutAt's own exception says "operation timed out".
      status = absl::UnavailableError(absl::StrCat(endpoint_, ": ", e->getDescription().cStr(),
                                                   " (timeout ", absl::FormatDuration(budget),
                                                   ")"));
    }
    return status;
  }

  std::string endpoint_;
  absl::Duration timeout_;
  kj::AsyncIoContext& io_;
  kj::Own<kj::AsyncIoStream> stream_;
  kj::Own<capnp::TwoPartyClient> rpc_;
  std::unique_ptr<schema::Node::Client> node_;  // set once connected
};

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& endpoint,
                                                        absl::Duration timeout) {
  auto client = std::make_unique<ClientImpl>(endpoint, timeout);
  if (absl::Status s = client->Init(); !s.ok()) return s;
  return std::unique_ptr<Client>(std::move(client));
}

std::string StatusToJson(const NodeStatusInfo& s) {
  std::ostringstream o;
  o << "{\"node\":" << JsonString(s.node) << ",\"cluster\":" << JsonString(s.cluster)
    << ",\"role\":" << JsonString(s.role) << ",\"listen\":" << JsonString(s.listen)
    << ",\"latest_seq\":" << s.latest_seq << ",\"data_bytes\":" << s.data_bytes
    << ",\"epoch\":" << s.epoch << ",\"database_id\":" << JsonString(s.database_id)
    << ",\"writes_accepted\":" << s.writes_accepted << ",\"write_groups\":" << s.write_groups;
  if (s.role == "leader") {
    o << ",\"followers\":[";
    for (size_t i = 0; i < s.followers.size(); ++i) {
      const auto& f = s.followers[i];
      o << (i ? "," : "") << "{\"id\":" << JsonString(f.id) << ",\"state\":"
        << JsonString(f.state) << ",\"sent_seq\":" << f.sent_seq << ",\"received_seq\":"
        << f.received_seq << ",\"durable_seq\":" << f.durable_seq << ",\"applied_seq\":"
        << f.applied_seq << ",\"lag_seq\":" << f.lag_seq << ",\"lag_ms\":" << f.lag_ms
        << ",\"bytes_shipped\":" << f.bytes_shipped << ",\"last_ack_ago_ms\":"
        << f.last_ack_ago_ms << ",\"message\":" << JsonString(f.message) << "}";
    }
    o << "]";
  } else {
    o << ",\"leader\":" << JsonString(s.leader_id) << ",\"leader_address\":"
      << JsonString(s.leader_address) << ",\"replication_state\":"
      << JsonString(s.replication_state) << ",\"applied_seq\":" << s.applied_seq
      << ",\"leader_latest_seq\":" << s.leader_latest_seq << ",\"lag_seq\":" << s.lag_seq
      << ",\"lag_ms\":" << s.lag_ms << ",\"message\":" << JsonString(s.message);
  }
  o << "}";
  return o.str();
}

std::string StatusToText(const NodeStatusInfo& s) {
  std::ostringstream o;
  o << "node " << s.node << " (" << s.role << ") of cluster " << s.cluster << " at " << s.listen
    << "\n  latest seq " << s.latest_seq << ", epoch " << s.epoch << ", data "
    << s.data_bytes << " bytes\n";
  if (s.role == "leader") {
    o << "  writes accepted " << s.writes_accepted << " in " << s.write_groups
      << " RocksDB writes\n";
    if (s.followers.empty()) o << "  no followers have connected\n";
    for (const auto& f : s.followers) {
      o << absl::StrFormat(
          "  follower %-8s %-14s applied %d (received %d, durable %d), lag %d seq / %d ms, "
          "shipped %d bytes",
          f.id, f.state, f.applied_seq, f.received_seq, f.durable_seq, f.lag_seq, f.lag_ms,
          f.bytes_shipped);
      if (!f.message.empty()) o << "\n    " << f.message;
      o << "\n";
    }
  } else {
    o << "  leader " << s.leader_id << " at " << s.leader_address << ": "
      << s.replication_state << ", applied " << s.applied_seq << " of " << s.leader_latest_seq
      << ", lag " << s.lag_seq << " seq / " << s.lag_ms << " ms\n";
    if (!s.message.empty()) o << "  " << s.message << "\n";
  }
  return o.str();
}

}  // namespace walship::rpc
