#include "bench/peers/peer_servers.h"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include <hiredis/hiredis.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/bench_cluster.h"

namespace walship::bench::peers {
namespace {

namespace fs = std::filesystem;

constexpr char kPgBin[] = "/usr/lib/postgresql/15/bin";

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "peers: %s\n", what.c_str());
  std::exit(3);
}

bool Installed(const std::string& package) {
  std::string cmd = absl::StrCat("dpkg-query -W -f '${Status}' ", package,
                                 " 2>/dev/null | grep -q 'install ok installed'");
  return std::system(cmd.c_str()) == 0;
}

// Runs `argv` (as `user` when not empty) with stdout and stderr appended to `log`, and returns
// its pid; the caller waits for it or keeps it as a server.
pid_t Spawn(const std::vector<std::string>& argv, const fs::path& log, const std::string& user,
            const fs::path& cwd) {
  uid_t uid = 0;
  gid_t gid = 0;
  if (!user.empty()) {
    struct passwd* pw = ::getpwnam(user.c_str());
    if (pw == nullptr) Die(absl::StrCat("there is no user '", user, "'"));
    uid = pw->pw_uid;
    gid = pw->pw_gid;
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) Die("fork failed");
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null >= 0) ::dup2(null, 0);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
    if (!user.empty() && (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)) {
      ::_exit(126);
    }
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

// Runs `argv` to its end: true when it exits 0.
bool RunToEnd(const std::vector<std::string>& argv, const fs::path& log, const std::string& user) {
  pid_t pid = Spawn(argv, log, user, {});
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

template <typename F>
void WaitFor(F ready, double seconds, const std::string& what) {
  auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    if (ready()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Die(absl::StrCat("timed out after ", seconds, " s waiting for ", what));
}

void ChownTree(const fs::path& p, const std::string& user) {
  std::string cmd = absl::StrCat("chown -R ", user, ": '", p.string(), "'");
  if (std::system(cmd.c_str()) != 0) Die(cmd + " failed");
}

// ------------------------------------------------------------------------------------- Redis

class Redis final : public PeerSystem {
 public:
  std::string name() const override { return "redis"; }

  void Start(int replicas) override {
    for (int n = 0; n <= replicas; ++n) Launch(n);
    WaitReplicating(replicas);
  }

  void Clear() override {
    redisContext* c = Connect(0);
    if (c == nullptr) Die("cannot reach the Redis primary");
    Command(c, "FLUSHALL");
    redisFree(c);
  }

  void StopReplica(int node) override { Kill(node, SIGTERM); }
  void StartReplica(int node) override { Spawned(node); }

  int AddReplica(double* copy_s) override {
    int node = static_cast<int>(ports_.rbegin()->first) + 1;
    *copy_s = 0;
    Launch(node);
    return node;
  }
  void RemoveReplica(int node) override {
    Kill(node, SIGKILL);
    ports_.erase(node);
    std::error_code ec;
    fs::remove_all(dir_ / NodeName(node), ec);
  }

 private:
  static std::string NodeName(int node) { return absl::StrCat("redis", node); }

  void Launch(int node) {
    ports_[node] = FreePort();
    fs::path d = dir_ / NodeName(node);
    fs::create_directories(d);
    std::ofstream conf(d / "redis.conf");
    // The AOF, fsynced every second, on every node: the durability of an operator who keeps
    // Redis's data; no RDB saves; a backlog large enough for a partial resync; full syncs
    // straight over the socket, without the default 5 s wait for more replicas.
    conf << "bind 127.0.0.1\nport " << ports_[node] << "\ndaemonize no\ndir " << d.string()
         << "\nsave \"\"\nappendonly yes\nappendfsync everysec\nrepl-backlog-size 256mb\n"
            "repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n";
    if (node > 0) conf << "replicaof 127.0.0.1 " << ports_[0] << "\nreplica-read-only yes\n";
    conf.close();
    Spawned(node);
  }

  void Spawned(int node) {
    fs::path d = dir_ / NodeName(node);
    pids_[node] = Spawn({"/usr/bin/redis-server", (d / "redis.conf").string()}, d / "log", "", d);
    WaitFor([&] {
      redisContext* c = Connect(node);
      bool ok = c != nullptr;
      if (c != nullptr) redisFree(c);
      return ok;
    }, 30, absl::StrCat(NodeName(node), " to answer"));
  }

  void WaitReplicating(int replicas) {
    WaitFor([&] {
      redisContext* c = Connect(0);
      if (c == nullptr) return false;
      auto* r = static_cast<redisReply*>(redisCommand(c, "INFO replication"));
      bool ok = r != nullptr && r->type == REDIS_REPLY_STRING &&
                std::string(r->str, r->len).find(absl::StrCat("connected_slaves:", replicas)) !=
                    std::string::npos;
      if (r != nullptr) freeReplyObject(r);
      redisFree(c);
      return ok;
    }, 60, "the Redis replicas to connect");
  }

  redisContext* Connect(int node) {
    timeval tv{1, 0};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", ports_[node], tv);
    if (c == nullptr || c->err) {
      if (c != nullptr) redisFree(c);
      return nullptr;
    }
    return c;
  }

  static void Command(redisContext* c, const char* cmd) {
    auto* r = static_cast<redisReply*>(redisCommand(c, cmd));
    if (r == nullptr || r->type == REDIS_REPLY_ERROR) Die(absl::StrCat("Redis ", cmd, " failed"));
    freeReplyObject(r);
  }
};

// -------------------------------------------------------------------------------- PostgreSQL

class Postgres final : public PeerSystem {
 public:
  std::string name() const override { return "pg"; }

  void Start(int replicas) override {
    ports_[0] = FreePort();
    fs::path d = Data(0);
    fs::create_directories(dir_ / "pg");
    ChownTree(dir_ / "pg", "postgres");
    if (!RunToEnd({absl::StrCat(kPgBin, "/initdb"), "-D", d.string(), "-U", "postgres",
                   "--auth=trust", "-E", "UTF8", "--no-locale"},
                  dir_ / "pg" / "initdb.log", "postgres")) {
      Die(absl::StrCat("initdb failed; see ", (dir_ / "pg" / "initdb.log").string()));
    }
    std::ofstream conf(d / "postgresql.conf", std::ios::app);
    // Streaming replication with one synchronous standby of two available to the sessions
    // that ask for it; commits fsynced locally (synchronous_commit = local unless a session
    // sets otherwise); no checkpoint inside a run.
    conf << "\nlisten_addresses = '127.0.0.1'\nport = " << ports_[0]
         << "\nunix_socket_directories = '" << (dir_ / "pg").string()
         << "'\nmax_connections = 50\nshared_buffers = 512MB\nwal_level = replica\n"
            "max_wal_senders = 10\nmax_wal_size = 8GB\nmin_wal_size = 1GB\n"
            "checkpoint_timeout = 30min\nsynchronous_standby_names = 'ANY 1 (s1, s2)'\n"
            "synchronous_commit = local\nhot_standby = on\nfsync = on\n";
    conf.close();
    Spawned(0);
    Sql(0, "CREATE TABLE kv (k bytea PRIMARY KEY, v bytea NOT NULL)");
    for (int n = 1; n <= replicas; ++n) {
      double unused;
      (void)Standby(n, &unused);
    }
    WaitStreaming(replicas);
  }

  void Clear() override {
    Sql(0, "TRUNCATE kv");
    Sql(0, "CHECKPOINT");  // none inside the run that follows
  }

  void StopReplica(int node) override { Kill(node, SIGINT); }  // a fast shutdown
  void StartReplica(int node) override { Spawned(node); }

  int AddReplica(double* copy_s) override {
    int node = ports_.rbegin()->first + 1;
    return Standby(node, copy_s);
  }
  void RemoveReplica(int node) override {
    Kill(node, SIGINT);
    ports_.erase(node);
    std::error_code ec;
    fs::remove_all(Data(node), ec);
  }

 private:
  fs::path Data(int node) const { return dir_ / "pg" / absl::StrCat("node", node); }

  std::string Conninfo(int node) const {
    return absl::StrCat("host=127.0.0.1 port=", ports_.at(node),
                        " user=postgres dbname=postgres connect_timeout=2");
  }

  // A base backup of the primary into a new standby `node`, started: seconds of the backup.
  int Standby(int node, double* copy_s) {
    ports_[node] = FreePort();
    fs::path d = Data(node);
    auto t0 = Clock::now();
    if (!RunToEnd({absl::StrCat(kPgBin, "/pg_basebackup"), "-h", "127.0.0.1", "-p",
                   absl::StrCat(ports_[0]), "-U", "postgres", "-D", d.string(), "-X", "stream",
                   "-c", "fast", "-R"},
                  dir_ / "pg" / "basebackup.log", "postgres")) {
      Die(absl::StrCat("pg_basebackup failed; see ", (dir_ / "pg" / "basebackup.log").string()));
    }
    *copy_s = std::chrono::duration<double>(Clock::now() - t0).count();
    // Its own port, and its name in synchronous_standby_names (the WAL receiver's
    // application_name is the cluster_name).
    std::ofstream conf(d / "postgresql.auto.conf", std::ios::app);
    conf << "port = " << ports_[node] << "\ncluster_name = 's" << node << "'\n";
    conf.close();
    Spawned(node);
    return node;
  }

  void Spawned(int node) {
    fs::path d = Data(node);
    pids_[node] = Spawn({absl::StrCat(kPgBin, "/postgres"), "-D", d.string()},
                        dir_ / "pg" / absl::StrCat("node", node, ".log"), "postgres", dir_ / "pg");
    WaitFor([&] { return PQping(Conninfo(node).c_str()) == PQPING_OK; }, 60,
            absl::StrCat("PostgreSQL node ", node, " to answer"));
  }

  void WaitStreaming(int replicas) {
    WaitFor([&] {
      PGconn* c = PQconnectdb(Conninfo(0).c_str());
      bool ok = false;
      if (PQstatus(c) == CONNECTION_OK) {
        PGresult* r =
            PQexec(c, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'");
        ok = PQresultStatus(r) == PGRES_TUPLES_OK && std::atoi(PQgetvalue(r, 0, 0)) >= replicas;
        PQclear(r);
      }
      PQfinish(c);
      return ok;
    }, 60, "the PostgreSQL standbys to stream");
  }

  void Sql(int node, const char* sql) {
    PGconn* c = PQconnectdb(Conninfo(node).c_str());
    if (PQstatus(c) != CONNECTION_OK) Die(absl::StrCat("cannot reach PostgreSQL: ", PQerrorMessage(c)));
    PGresult* r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      Die(absl::StrCat(sql, ": ", PQresultErrorMessage(r)));
    }
    PQclear(r);
    PQfinish(c);
  }
};

}  // namespace

void InstallPeers() {
  std::vector<std::string> need;
  for (const char* p : {"redis-server", "postgresql-15", "postgresql-client-15"}) {
    if (!Installed(p)) need.push_back(p);
  }
  if (need.empty()) return;
  if (::geteuid() != 0) {
    Die(absl::StrCat("installing ", absl::StrJoin(need, " "), " needs root"));
  }
  std::fprintf(stderr, "peers: installing %s\n", absl::StrJoin(need, " ").c_str());
  // The packages' own services (ports 6379 and 5432) must not start: the benchmark runs its
  // own servers.
  bool made_policy = !fs::exists("/usr/sbin/policy-rc.d");
  if (made_policy) {
    std::ofstream("/usr/sbin/policy-rc.d") << "#!/bin/sh\nexit 101\n";
    ::chmod("/usr/sbin/policy-rc.d", 0755);
  }
  std::string cmd = absl::StrCat(
      "apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
      "--no-install-recommends ",
      absl::StrJoin(need, " "), " >&2");
  int rc = std::system(cmd.c_str());
  if (made_policy) ::unlink("/usr/sbin/policy-rc.d");
  if (rc != 0) Die(cmd + " failed");
}

PeerSystem::PeerSystem() {
  char tmpl[] = "/tmp/walship-peers-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) Die("cannot make a temporary directory");
  dir_ = tmpl;
  ::chmod(dir_.c_str(), 0755);  // PostgreSQL, as its own user, works below it
}

PeerSystem::~PeerSystem() {
  for (auto& [node, pid] : pids_) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  if (std::getenv("WALSHIP_BENCH_KEEP") != nullptr) {
    std::fprintf(stderr, "kept %s\n", dir_.c_str());
    return;
  }
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

void PeerSystem::Kill(int node, int sig) {
  auto it = pids_.find(node);
  if (it == pids_.end()) return;
  ::kill(it->second, sig);
  ::waitpid(it->second, nullptr, 0);
  pids_.erase(it);
}

std::unique_ptr<PeerSystem> MakeRedis() { return std::make_unique<Redis>(); }
std::unique_ptr<PeerSystem> MakePostgres() { return std::make_unique<Postgres>(); }

}  // namespace walship::bench::peers
