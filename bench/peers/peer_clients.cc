#include "bench/peers/peer_clients.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>

#include "absl/strings/str_cat.h"
#include "bench/bench_cluster.h"

namespace walship::bench::peers {
namespace {

// A socket that connected to itself: the port it dialled was free and in the ephemeral
// range, and the kernel gave the dialler that same port (TCP's simultaneous open).
bool SelfConnected(int fd) {
  sockaddr_in self{}, peer{};
  socklen_t a = sizeof(self), b = sizeof(peer);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &a) != 0) return false;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &b) != 0) return false;
  return self.sin_port == peer.sin_port && self.sin_addr.s_addr == peer.sin_addr.s_addr;
}

class RedisClient final : public KvClient {
 public:
  RedisClient(redisContext* c, int wait) : c_(c), wait_(wait) {}
  ~RedisClient() override { redisFree(c_); }

  absl::Status Put(const std::string& key, const std::string& value) override {
    if (absl::Status s = Reply(redisCommand(c_, "SET %b %b", key.data(), key.size(),
                                            value.data(), value.size()));
        !s.ok()) {
      return s;
    }
    if (wait_ == 0) return absl::OkStatus();
    auto* r = static_cast<redisReply*>(redisCommand(c_, "WAIT %d 0", wait_));
    if (r == nullptr) return absl::UnavailableError(absl::StrCat("Redis WAIT: ", c_->errstr));
    bool ok = r->type == REDIS_REPLY_INTEGER && r->integer >= wait_;
    freeReplyObject(r);
    return ok ? absl::OkStatus() : absl::UnavailableError("Redis WAIT: too few replicas");
  }

  absl::Status PutMany(uint64_t start, uint64_t n, size_t value_size, size_t per) override {
    for (uint64_t i = start; i < start + n; i += per) {
      uint64_t end = std::min(start + n, i + per);
      for (uint64_t k = i; k < end; ++k) {
        std::string key = Key(k), value = Value(k, value_size);
        redisAppendCommand(c_, "SET %b %b", key.data(), key.size(), value.data(), value.size());
      }
      for (uint64_t k = i; k < end; ++k) {
        void* r = nullptr;
        if (redisGetReply(c_, &r) != REDIS_OK) {
          return absl::UnavailableError(absl::StrCat("Redis: ", c_->errstr));
        }
        if (absl::Status s = Reply(r); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<std::string>> Get(const std::string& key) override {
    auto* r = static_cast<redisReply*>(redisCommand(c_, "GET %b", key.data(), key.size()));
    if (r == nullptr) return absl::UnavailableError(absl::StrCat("Redis GET: ", c_->errstr));
    std::optional<std::string> out;
    absl::Status s;
    if (r->type == REDIS_REPLY_STRING) {
      out = std::string(r->str, r->len);
    } else if (r->type != REDIS_REPLY_NIL) {
      s = absl::UnavailableError(absl::StrCat("Redis GET: ", r->type == REDIS_REPLY_ERROR
                                                                 ? std::string(r->str, r->len)
                                                                 : "an unexpected reply"));
    }
    freeReplyObject(r);
    if (!s.ok()) return s;
    return out;
  }

 private:
  absl::Status Reply(void* reply) {
    auto* r = static_cast<redisReply*>(reply);
    if (r == nullptr) return absl::UnavailableError(absl::StrCat("Redis: ", c_->errstr));
    absl::Status s = r->type == REDIS_REPLY_ERROR
                         ? absl::UnavailableError(absl::StrCat("Redis: ", std::string(r->str, r->len)))
                         : absl::OkStatus();
    freeReplyObject(r);
    return s;
  }

  redisContext* c_;
  int wait_;
};

class PgClient final : public KvClient {
 public:
  explicit PgClient(PGconn* c) : c_(c) {}
  ~PgClient() override { PQfinish(c_); }

  absl::Status Prepare(const std::string& sync_commit) {
    if (absl::Status s = Exec(absl::StrCat("SET synchronous_commit TO ", sync_commit)); !s.ok()) {
      return s;
    }
    PGresult* r = PQprepare(c_, "put",
                            "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET "
                            "v = EXCLUDED.v",
                            2, nullptr);
    absl::Status s = Check(r, PGRES_COMMAND_OK, "PREPARE put");
    if (!s.ok()) return s;
    r = PQprepare(c_, "get", "SELECT v FROM kv WHERE k = $1", 1, nullptr);
    return Check(r, PGRES_COMMAND_OK, "PREPARE get");
  }

  absl::Status Put(const std::string& key, const std::string& value) override {
    const char* values[] = {key.data(), value.data()};
    int lengths[] = {static_cast<int>(key.size()), static_cast<int>(value.size())};
    int formats[] = {1, 1};
    return Check(PQexecPrepared(c_, "put", 2, values, lengths, formats, 1), PGRES_COMMAND_OK,
                 "INSERT");
  }

  absl::Status PutMany(uint64_t start, uint64_t n, size_t value_size, size_t per) override {
    for (uint64_t i = start; i < start + n; i += per) {
      uint64_t end = std::min(start + n, i + per);
      // One statement of `per` rows, one transaction (autocommit).
      std::string sql = "INSERT INTO kv (k, v) VALUES ";
      std::vector<std::string> data;
      data.reserve(2 * (end - i));
      for (uint64_t k = i; k < end; ++k) {
        size_t p = data.size();
        absl::StrAppend(&sql, k == i ? "" : ", ", "($", p + 1, ", $", p + 2, ")");
        data.push_back(Key(k));
        data.push_back(Value(k, value_size));
      }
      sql += " ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v";
      std::vector<const char*> values;
      std::vector<int> lengths, formats;
      for (const std::string& d : data) {
        values.push_back(d.data());
        lengths.push_back(static_cast<int>(d.size()));
        formats.push_back(1);
      }
      absl::Status s = Check(PQexecParams(c_, sql.c_str(), static_cast<int>(values.size()),
                                          nullptr, values.data(), lengths.data(), formats.data(),
                                          1),
                             PGRES_COMMAND_OK, "INSERT");
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<std::string>> Get(const std::string& key) override {
    const char* values[] = {key.data()};
    int lengths[] = {static_cast<int>(key.size())};
    int formats[] = {1};
    PGresult* r = PQexecPrepared(c_, "get", 1, values, lengths, formats, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      absl::Status s = absl::UnavailableError(absl::StrCat("SELECT: ", PQresultErrorMessage(r)));
      PQclear(r);
      return s;
    }
    std::optional<std::string> out;
    if (PQntuples(r) > 0) out = std::string(PQgetvalue(r, 0, 0), PQgetlength(r, 0, 0));
    PQclear(r);
    return out;
  }

 private:
  absl::Status Exec(const std::string& sql) {
    return Check(PQexec(c_, sql.c_str()), PGRES_COMMAND_OK, sql);
  }
  absl::Status Check(PGresult* r, ExecStatusType want, const std::string& what) {
    absl::Status s = PQresultStatus(r) == want
                         ? absl::OkStatus()
                         : absl::UnavailableError(absl::StrCat(what, ": ", PQresultErrorMessage(r)));
    PQclear(r);
    return s;
  }

  PGconn* c_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvClient>> Connect(const std::string& system, int port,
                                                  const ClientOptions& options) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (system == "redis") {
      timeval tv{2, 0};
      redisContext* c = redisConnectWithTimeout("127.0.0.1", port, tv);
      if (c == nullptr || c->err) {
        std::string why = c == nullptr ? "out of memory" : c->errstr;
        if (c != nullptr) redisFree(c);
        return absl::UnavailableError(absl::StrCat("Redis on port ", port, ": ", why));
      }
      if (SelfConnected(c->fd)) {
        redisFree(c);
        continue;
      }
      // No command waits for ever (a W3 `WAIT 1 0` included): a run stops with an error.
      timeval command_tv{60, 0};
      redisSetTimeout(c, command_tv);
      return std::unique_ptr<KvClient>(
          std::make_unique<RedisClient>(c, options.redis_wait_replicas));
    }
    if (system == "pg") {
      std::string info = absl::StrCat("host=127.0.0.1 port=", port,
                                      " user=postgres dbname=postgres connect_timeout=2"
                                      " options='-c statement_timeout=60000'");
      PGconn* c = PQconnectdb(info.c_str());
      if (PQstatus(c) != CONNECTION_OK) {
        absl::Status s = absl::UnavailableError(
            absl::StrCat("PostgreSQL on port ", port, ": ", PQerrorMessage(c)));
        PQfinish(c);
        return s;
      }
      if (SelfConnected(PQsocket(c))) {
        PQfinish(c);
        continue;
      }
      auto client = std::make_unique<PgClient>(c);
      if (absl::Status s = client->Prepare(options.pg_synchronous_commit); !s.ok()) return s;
      return std::unique_ptr<KvClient>(std::move(client));
    }
    return absl::InvalidArgumentError(absl::StrCat("no peer system '", system, "'"));
  }
  return absl::UnavailableError(absl::StrCat("connecting to port ", port, " reached itself"));
}

}  // namespace walship::bench::peers
