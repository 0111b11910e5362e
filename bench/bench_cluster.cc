#include "bench/bench_cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "rpc/client.h"
#include "tools/free_port.h"

extern char** environ;

namespace walship::bench {

namespace fs = std::filesystem;

std::string Key(uint64_t i) { return absl::StrFormat("key%012d", i); }

std::string Value(uint64_t i, size_t size) {
  uint64_t x = 0x5EED ^ (i * 0xD1B54A32D192ED03ull);
  std::string v(size, '\0');
  for (size_t o = 0; o < size; o += 8) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::memcpy(v.data() + o, &z, std::min<size_t>(8, size - o));
  }
  return v;
}

int FreePort() {
  auto port = walship::tools::FreeLoopbackPort();
  if (!port.ok()) {
    std::fprintf(stderr, "%s\n", port.status().ToString().c_str());
    std::exit(3);
  }
  return *port;
}

void WaitCaughtUp(const std::string& leader, size_t followers,
                  const rpc::ConnectOptions& connect) {
  auto deadline = Clock::now() + std::chrono::seconds(30);
  std::string last = "cannot reach the leader";
  while (Clock::now() < deadline) {
    auto c = rpc::Client::Connect(leader, absl::Seconds(1), connect);
    auto st = c.ok() ? (*c)->Status() : absl::StatusOr<rpc::NodeStatusInfo>(c.status());
    if (st.ok()) {
      size_t ready = 0;
      for (const auto& f : st->followers) {
        if (f.state == "connected" && f.applied_seq == st->latest_seq) ++ready;
      }
      if (ready >= followers) return;
      last = absl::StrCat(ready, " of ", followers, " followers connected and caught up");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::fprintf(stderr, "the cluster did not settle within 30 s: %s\n", last.c_str());
  std::exit(3);
}

LocalCluster::LocalCluster(const std::string& walshipd, int nodes,
                           const std::vector<std::string>& replication,
                           ClusterSecurity security)
    : walshipd_(walshipd) {
  static int made = 0;  // one directory per cluster of this run
  dir_ = fs::temp_directory_path() / absl::StrCat("walship-bench-", ::getpid(), "-", ++made);
  fs::remove_all(dir_);
  fs::create_directories(dir_);
  std::ofstream c(dir_ / "cluster.toml");
  c << "[cluster]\nname = \"bench\"\n";
  connect_.secret = security.secret;
  if (!security.secret.empty()) {
    std::ofstream f(dir_ / "secret");
    f << security.secret << "\n";
    f.close();
    fs::permissions(dir_ / "secret", fs::perms::owner_read | fs::perms::owner_write);
    c << "secret_file = \"secret\"\n";
  }
  if (security.tls) {
    std::string make = absl::StrCat("bash ", WALSHIP_SOURCE_DIR, "/scripts/make-test-certs.sh ",
                                    (dir_ / "certs").string());
    if (std::system(make.c_str()) != 0) {
      std::fprintf(stderr, "cannot make test certificates: %s failed\n", make.c_str());
      std::exit(3);
    }
    c << "\n[tls]\nca_file = \"certs/ca.crt\"\ncert_file = \"certs/node.crt\"\n"
         "key_file = \"certs/node.key\"\nserver_name = \"localhost\"\n";
    connect_.tls.ca_file = (dir_ / "certs" / "ca.crt").string();
    connect_.tls.server_name = "localhost";
  }
  c << "\n[replication]\n";
  for (const std::string& line : replication) c << line << "\n";
  for (int i = 1; i <= nodes; ++i) {
    std::string id = absl::StrCat("n", i);
    std::string addr = absl::StrCat("127.0.0.1:", FreePort());
    addr_[id] = addr;
    ids_.push_back(id);
    c << "\n[[node]]\nid = \"" << id << "\"\nlisten = \"" << addr << "\"\ndata_dir = \"data/"
      << id << "\"\nrole = \"" << (i == 1 ? "leader" : "follower") << "\"\n";
  }
}

LocalCluster::~LocalCluster() {
  while (!pids_.empty()) Stop(pids_.begin()->first, SIGKILL);
  if (std::getenv("WALSHIP_BENCH_KEEP") != nullptr) {  // the nodes' logs and data, to look at
    std::fprintf(stderr, "kept %s\n", dir_.c_str());
    return;
  }
  fs::remove_all(dir_);
}

void LocalCluster::Spawn(const std::string& id, const std::vector<std::string>& args) {
  std::string log = (dir_ / (id + ".log")).string();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(walshipd_.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid;
  if (posix_spawn(&pid, walshipd_.c_str(), &fa, nullptr, argv.data(), environ) != 0) {
    std::fprintf(stderr, "cannot start %s\n", walshipd_.c_str());
    std::exit(3);
  }
  posix_spawn_file_actions_destroy(&fa);
  pids_[id] = pid;
}

void LocalCluster::Start(const std::string& id) { Spawn(id, {"--config", config(), "--node", id}); }

const std::string& LocalCluster::addr(const std::string& id) {
  if (addr_.count(id) == 0) addr_[id] = "127.0.0.1:" + std::to_string(FreePort());
  return addr_[id];
}

void LocalCluster::StartAdded(const std::string& id) {
  Spawn(id, {"--config", config(), "--node", id, "--listen", addr(id), "--data-dir",
             data_dir(id).string()});
}

void LocalCluster::StartAll() {
  for (const auto& id : ids_) Start(id);
  for (const auto& id : ids_) WaitReachable(id);
  WaitCaughtUp(addr_[ids_.front()], ids_.size() - 1, connect_);
}

void LocalCluster::Stop(const std::string& id, int sig) {
  auto it = pids_.find(id);
  if (it == pids_.end()) return;
  ::kill(it->second, sig);
  int st;
  ::waitpid(it->second, &st, 0);
  pids_.erase(it);
}

void LocalCluster::WaitReachable(const std::string& id) {
  auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    auto c = rpc::Client::Connect(addr_[id], absl::Seconds(1), connect_);
    if (c.ok() && (*c)->Status().ok()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::fprintf(stderr, "node %s did not start; see %s\n", id.c_str(),
               (dir_ / (id + ".log")).c_str());
  std::exit(3);
}

}  // namespace walship::bench
