#include "rpc/http_endpoint.h"

#include <capnp/message.h>
#include <kj/compat/http.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>
#include <string_view>

#include "rpc/client_service.h"
#include "rpc/convert.h"
#include "rpc/coordinator.h"
#include "rpc/node.h"

namespace walship::rpc {
namespace {

const char* StatusText(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 503: return "Service Unavailable";
  }
  return "Error";
}

class Endpoint final : public HttpEndpoint,
                       public kj::HttpService,
                       private kj::TaskSet::ErrorHandler {
 public:
  Endpoint(Node& node, kj::ConnectionReceiver& receiver, kj::AsyncIoContext& io)
      : node_(node),
        receiver_(receiver),
        io_(io),
        table_(MakeTable(content_type_)),
        server_(io.provider->getTimer(), *table_, *this, Settings()),
        connections_(*this) {}

  kj::Promise<void> AcceptLoop() override {
    kj::Promise<kj::Own<kj::AsyncIoStream>> accepted = nullptr;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { accepted = receiver_.accept(); })) {
      return AcceptFailed(kj::mv(*e));
    }
    return accepted.then(
        [this](kj::Own<kj::AsyncIoStream> connection) -> kj::Promise<void> {
          backoff_ms_ = 0;
          if (open_ >= kMaxHttpConnections) {
            ++refused_;
            return AcceptLoop();  // dropping it closes it
          }
          ++open_;
          connections_.add(server_.listenHttp(kj::mv(connection)).attach(kj::defer([this]() {
            --open_;
          })));
          return AcceptLoop();
        },
        [this](kj::Exception&& e) { return AcceptFailed(kj::mv(e)); });
  }

  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url, const kj::HttpHeaders&,
                            kj::AsyncInputStream&, Response& response) override {
    std::string_view target(url.cStr(), url.size());
    size_t q = target.find('?');
    std::string_view path = target.substr(0, q);
    std::string_view query = q == std::string_view::npos ? "" : target.substr(q + 1);
    HttpAnswer answer;
    if (method != kj::HttpMethod::GET && method != kj::HttpMethod::HEAD) {
      answer.status = 405;
      answer.content_type = "text/plain; charset=utf-8";
      answer.body = "only GET and HEAD are served here\n";
    } else if (path == "/metrics") {
      answer.content_type = "text/plain; version=0.0.4; charset=utf-8";
      NodeMetrics m = GatherMetrics(node_);
      m.http_connections_refused = refused_;
      answer.body = PrometheusText(m);
    } else {
      answer = AnswerHealth(GatherHealth(node_), path, query);
    }
    kj::HttpHeaders headers(*table_);
    headers.set(content_type_, answer.content_type);
    auto body = kj::heapString(answer.body.data(), answer.body.size());
    auto stream = response.send(answer.status, StatusText(answer.status), headers, body.size());
    if (method == kj::HttpMethod::HEAD) return kj::READY_NOW;
    auto written = stream->write(body.begin(), body.size());
    return written.attach(kj::mv(stream), kj::mv(body));
  }

 private:
  static kj::Own<kj::HttpHeaderTable> MakeTable(kj::HttpHeaderId& content_type) {
    kj::HttpHeaderTable::Builder builder;
    content_type = builder.add("Content-Type");
    return builder.build();
  }

  static kj::HttpServerSettings Settings() {
    kj::HttpServerSettings s;
    // A client that sends nothing, or nothing more, holds no place long (a scraper asks
    // every 15 s or so and may connect again).
    s.headerTimeout = 5 * kj::SECONDS;
    s.pipelineTimeout = 5 * kj::SECONDS;
    return s;
  }

  kj::Promise<void> AcceptFailed(kj::Exception&& e) {
    backoff_ms_ = std::clamp<uint32_t>(backoff_ms_ * 2, 10, 1000);
    spdlog::warn("accepting an HTTP connection failed ({}); accepting again in {} ms",
                 e.getDescription().cStr(), backoff_ms_);
    return io_.provider->getTimer()
        .afterDelay(backoff_ms_ * kj::MILLISECONDS)
        .then([this]() { return AcceptLoop(); });
  }

  void taskFailed(kj::Exception&& e) override {
    // A client that goes away mid-answer: nothing of the node's is at stake.
    spdlog::debug("HTTP connection ended: {}", e.getDescription().cStr());
  }

  Node& node_;
  kj::ConnectionReceiver& receiver_;
  kj::AsyncIoContext& io_;
  kj::HttpHeaderId content_type_;  // set by MakeTable, before table_ is
  kj::Own<kj::HttpHeaderTable> table_;
  kj::HttpServer server_;
  uint32_t open_ = 0;
  uint64_t refused_ = 0;
  uint32_t backoff_ms_ = 0;
  kj::TaskSet connections_;  // last: its connections end before the server they use
};

}  // namespace

kj::Own<HttpEndpoint> HttpEndpoint::Create(Node& node, kj::ConnectionReceiver& receiver,
                                           kj::AsyncIoContext& io) {
  return kj::heap<Endpoint>(node, receiver, io);
}

NodeMetrics GatherMetrics(Node& node) {
  NodeMetrics m;
  capnp::MallocMessageBuilder message;
  auto status = message.initRoot<schema::NodeStatus>();
  node.clients().Status(status);
  m.status = StatusFromCapnp(status.asReader());
  m.requests = node.clients().counters();
  m.engine = node.engine().Figures();
  m.followers = node.role().FollowerInfos();
  m.staleness_us = node.role().ReadPositionFor(0, node.engine().LatestSequence()).lag_us;
  if (const Coordinator* c = node.coordinator(); c != nullptr) {
    m.coordinator_reachable = c->reachable() ? 1 : 0;
  }
  return m;
}

HealthFacts GatherHealth(Node& node) {
  HealthFacts f;
  Role& role = node.role();
  f.node = node.options().node_id;
  f.role = role.name();
  f.latest_seq = node.engine().LatestSequence();
  replication::ReadPosition p = role.ReadPositionFor(0, f.latest_seq);
  f.epoch = p.history_epoch;
  f.staleness_us = p.lag_us;
  f.read_refusal = role.ReadRefusal();
  if (absl::Status w = role.WriteRefusal(); !w.ok()) f.write_refusal = std::string(w.message());
  if (absl::Status e = node.engine().StorageError(); !e.ok()) {
    f.storage_error = std::string(e.message());
  }
  f.leader_address = role.LeaderAddress();
  if (const Coordinator* c = node.coordinator(); c != nullptr) {
    f.coordinator = c->Describe();
    f.coordinator_reachable = c->reachable();
  }
  return f;
}

}  // namespace walship::rpc
