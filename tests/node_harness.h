// What the in-process node tests share: nodes on threads of the test process, on loopback,
// a client that waits for them, a hand-written client of the client protocol, and a bounded
// wait on a condition.
#pragma once

#include <gtest/gtest.h>
#include <capnp/serialize.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>

#include "rpc/client.capnp.h"
#include "rpc/client.h"
#include "rpc/convert.h"
#include "rpc/node_server.h"
#include "tools/free_port.h"

namespace walship::rpc {

namespace fs = std::filesystem;

inline int FreePort() {
  auto port = tools::FreeLoopbackPort();
  EXPECT_TRUE(port.ok()) << port.status();
  return port.ok() ? *port : 0;
}

// Runs a node on its own thread until Stop().
class RunningNode {
 public:
  explicit RunningNode(NodeServerOptions options) {
    auto server = NodeServer::Open(options);
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    thread_ = std::thread([this] { EXPECT_TRUE(server_->Run().ok()); });
  }
  ~RunningNode() { Stop(); }
  // The thread that runs the node's event loop.
  std::thread::id loop_thread() const { return thread_.get_id(); }
  void Stop() {
    if (!thread_.joinable()) return;
    pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
    server_.reset();
  }

 private:
  std::unique_ptr<NodeServer> server_;
  std::thread thread_;
};

inline std::unique_ptr<Client> ConnectOrDie(const std::string& endpoint) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  absl::Status last;
  while (true) {
    auto c = Client::Connect(endpoint, absl::Seconds(2));
    last = c.status();
    if (c.ok()) {
      auto s = (*c)->Status();
      if (s.ok()) return std::move(*c);
      last = s.status();
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "cannot connect to " << endpoint << ": " << last;
      return nullptr;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// The latest sequence number of the node at `endpoint`, or 0 when it does not answer.
inline uint64_t LatestSeq(const std::string& endpoint) {
  auto c = Client::Connect(endpoint, absl::Seconds(2));
  if (!c.ok()) return 0;
  auto s = (*c)->Status();
  return s.ok() ? s->latest_seq : 0;
}

class NodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = fs::temp_directory_path() / ("walship-rpc-test-" + std::to_string(rd()));
  }
  void TearDown() override { fs::remove_all(dir_); }

  NodeServerOptions Options(const std::string& id, bool leader, const std::string& leader_addr) {
    NodeServerOptions o;
    o.cluster = "rpc";
    o.node_id = id;
    o.listen = "127.0.0.1:" + std::to_string(FreePort());
    o.data_dir = (dir_ / id).string();
    o.is_leader = leader;
    o.leader_id = leader ? "" : "n1";
    o.leader_address = leader_addr;
    o.heartbeat_interval_ms = 20;
    o.reconnect_min_ms = 10;
    return o;
  }

  // A leader with prompt acks, a window of 2 and the given hold, for a ScriptedFollower.
  NodeServerOptions PromptAckLeader(uint32_t hold_us) {
    NodeServerOptions o = Options("n1", true, "");
    o.ack_delay_us = 0;
    o.max_ship_hold_us = hold_us;
    o.max_inflight_ships = 2;
    o.heartbeat_interval_ms = 60'000;  // no heartbeat takes a place in flight
    return o;
  }

  fs::path dir_;
};

template <typename F>
bool WaitFor(F f, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!f()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}
// A client of the client protocol written by hand, for what rpc::Client never sends: requests
// pipelined in one write, unknown kinds, malformed messages, other preambles.
class RawConnection {
 public:
  // Connects to a node and queues the client preamble, unless told not to.
  explicit RawConnection(const std::string& endpoint, bool preamble = true) {
    int port = std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval tv{5, 0};  // every read below is bounded
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (preamble) out_ = schema::CLIENT_PREAMBLE.get().cStr();
  }
  ~RawConnection() { ::close(fd_); }

  // Queues bytes, or a message, to go out together at Send().
  void Add(std::string_view bytes) { out_.append(bytes); }
  void Add(capnp::MessageBuilder& m) {
    auto flat = capnp::messageToFlatArray(m);
    out_.append(flat.asChars().begin(), flat.asChars().size());
  }
  void AddStatus() {
    capnp::MallocMessageBuilder m;
    m.initRoot<schema::Request>().setStatus();
    Add(m);
  }
  void AddPut(const std::string& key, const std::string& value) {
    capnp::MallocMessageBuilder m;
    auto ops = m.initRoot<schema::Request>().initWrite().initOps(1);
    ops[0].setType(schema::OpType::PUT);
    ops[0].setKey(ToData(key));
    ops[0].setValue(ToData(value));
    Add(m);
  }
  // The error of the next reply, which must be a refusal.
  absl::Status NextRefusal() {
    auto r = Receive();
    auto reply = r->getRoot<schema::Reply>();
    if (!reply.isRefused()) return absl::InternalError("the reply is not a refusal");
    return FromCapnp(reply.getRefused());
  }
  void Send() {
    for (size_t sent = 0; sent < out_.size();) {
      ssize_t n = ::send(fd_, out_.data() + sent, out_.size() - sent, MSG_NOSIGNAL);
      ASSERT_GT(n, 0) << std::strerror(errno);
      sent += static_cast<size_t>(n);
    }
    out_.clear();
  }
  std::unique_ptr<capnp::MessageReader> Receive() {
    return std::make_unique<capnp::StreamFdMessageReader>(fd_);
  }
  // True when the node has closed the connection (reads end) within 5 s.
  bool Closed() {
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }

 private:
  int fd_ = -1;
  std::string out_;
};

}  // namespace walship::rpc
