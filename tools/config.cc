#include "tools/config.h"

#include "replication/seeding.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <set>

#include <toml++/toml.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "rpc/auth.h"
#include "tools/config_error.h"
#include "tools/config_coordinator.h"
#include "tools/config_tls.h"

namespace walship::tools {
namespace {

namespace fs = std::filesystem;

// One tunable: its key, and how to store an integer, boolean or word into the options.
struct Tunable {
  const char* key;
  enum Kind { kUint, kBool, kWord } kind;
  std::function<void(rpc::NodeServerOptions&, uint64_t)> set;
  uint64_t min = 0, max = UINT64_MAX;
  // kWord: stores the word, or says why it is not one of the allowed.
  std::function<absl::Status(rpc::NodeServerOptions&, const std::string&)> set_word = nullptr;
};

// A kWord tunable parsed by `parse` into the field `field` picks of the options.
template <typename Parse, typename Field>
Tunable Word(const char* key, Parse parse, Field field) {
  return Tunable{key, Tunable::kWord, nullptr, 0, 0,
                 [parse, field](rpc::NodeServerOptions& o, const std::string& w) {
                   auto v = parse(w);
                   if (!v.ok()) return v.status();
                   field(o) = *v;
                   return absl::OkStatus();
                 }};
}

const std::vector<Tunable>& ReplicationTunables() {
  using O = rpc::NodeServerOptions;
  static const std::vector<Tunable> kTunables = {
      {"wal_retention_bytes", Tunable::kUint,
       [](O& o, uint64_t v) { o.engine.wal_retention_bytes = v; }},
      {"wal_retention_seconds", Tunable::kUint,
       [](O& o, uint64_t v) { o.engine.wal_retention_seconds = v; }},
      {"request_retention_s", Tunable::kUint,
       [](O& o, uint64_t v) { o.engine.request_retention_seconds = v; }},
      {"write_buffer_bytes", Tunable::kUint,
       [](O& o, uint64_t v) { o.engine.write_buffer_bytes = v; }, 64 << 10, 1ull << 34},
      {"max_tail_bytes", Tunable::kUint,
       [](O& o, uint64_t v) { o.leader.max_tail_bytes = v; }, 0, 1ull << 34},
      {"max_ship_bytes", Tunable::kUint,
       [](O& o, uint64_t v) { o.leader.max_ship_bytes = v; }, 1024, 32ull << 20},
      {"ack_delay_us", Tunable::kUint,
       [](O& o, uint64_t v) { o.ack_delay_us = static_cast<uint32_t>(v); }, 0, 1000000},
      {"max_ship_hold_us", Tunable::kUint,
       [](O& o, uint64_t v) { o.max_ship_hold_us = static_cast<uint32_t>(v); }, 0, 1000000},
      {"min_ship_interval_us", Tunable::kUint,
       [](O& o, uint64_t v) { o.min_ship_interval_us = static_cast<uint32_t>(v); }, 0, 1000000},
      {"max_inflight_ships", Tunable::kUint,
       [](O& o, uint64_t v) { o.max_inflight_ships = static_cast<uint32_t>(v); }, 1, 64},
      {"failover", Tunable::kBool, [](O& o, uint64_t v) { o.failover = v != 0; }},
      {"election_timeout_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.election_timeout_ms = static_cast<uint32_t>(v); }, 50, 600000},
      {"election_jitter_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.election_jitter_ms = static_cast<uint32_t>(v); }, 0, 600000},
      {"lease_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.lease_ms = static_cast<uint32_t>(v); }, 20, 600000},
      {"phi_threshold", Tunable::kUint,
       [](O& o, uint64_t v) { o.phi_threshold = static_cast<uint32_t>(v); }, 0, 100},
      {"max_failover_lag", Tunable::kUint,
       [](O& o, uint64_t v) { o.max_failover_lag = v; }},
      {"phi_min_std_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.phi_min_std_ms = static_cast<uint32_t>(v); }, 1, 60000},
      {"heartbeat_interval_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.heartbeat_interval_ms = static_cast<uint32_t>(v); }, 1, 60000},
      {"heartbeat_timeout_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.heartbeat_timeout_ms = static_cast<uint32_t>(v); }, 10, 600000},
      {"reconnect_min_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.reconnect_min_ms = static_cast<uint32_t>(v); }, 1, 60000},
      {"reconnect_max_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.reconnect_max_ms = static_cast<uint32_t>(v); }, 1, 600000},
      {"follower_fsync_interval_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.follower_fsync_interval_ms = static_cast<uint32_t>(v); }, 1,
       600000},
      {"max_pending_writes", Tunable::kUint,
       [](O& o, uint64_t v) { o.max_pending_writes = static_cast<uint32_t>(v); }, 1, 1u << 24},
      {"max_pending_write_bytes", Tunable::kUint,
       [](O& o, uint64_t v) { o.max_pending_write_bytes = v; }, 1ull << 20, 1ull << 36},
      {"max_write_group_ops", Tunable::kUint,
       [](O& o, uint64_t v) { o.max_write_group_ops = static_cast<uint32_t>(v); }, 1, 1u << 20},
      {"worker_threads", Tunable::kUint,
       [](O& o, uint64_t v) { o.worker_threads = static_cast<uint32_t>(v); }, 1, 64},
      {"max_client_connections", Tunable::kUint,
       [](O& o, uint64_t v) { o.max_client_connections = static_cast<uint32_t>(v); }, 1,
       1u << 20},
      {"preamble_timeout_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.preamble_timeout_ms = static_cast<uint32_t>(v); }, 10, 600000},
      {"client_idle_timeout_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.client_idle_timeout_ms = static_cast<uint32_t>(v); }, 0,
       86400000},
      {"fsync_writes", Tunable::kBool, [](O& o, uint64_t v) { o.fsync_writes = v != 0; }},
      {"fsync_apply", Tunable::kBool, [](O& o, uint64_t v) { o.fsync_apply = v != 0; }},
      Word("mode", replication::ParseMode, [](O& o) -> auto& { return o.commit.cluster.mode; }),
      {"acks", Tunable::kUint,
       [](O& o, uint64_t v) { o.commit.cluster.acks = static_cast<uint32_t>(v); }, 1, 1000},
      Word("ack_level", replication::ParseAckLevel,
           [](O& o) -> auto& { return o.commit.cluster.level; }),
      {"leader_recovery_wait_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.leader_recovery_wait_ms = static_cast<uint32_t>(v); }, 0,
       3600000},
      {"sync_timeout_ms", Tunable::kUint,
       [](O& o, uint64_t v) { o.commit.timeout_ms = static_cast<uint32_t>(v); }, 1, 3600000},
      Word("on_sync_timeout", replication::ParsePolicy,
           [](O& o) -> auto& { return o.commit.on_timeout; }),
      {"wal_pinned_max_bytes", Tunable::kUint,
       [](O& o, uint64_t v) { o.engine.wal_pinned_max_bytes = v; }},
      {"wal_pinned_max_seconds", Tunable::kUint,
       [](O& o, uint64_t v) { o.engine.wal_pinned_max_seconds = v; }},
      {"snapshot_max_bytes_per_sec", Tunable::kUint,
       [](O& o, uint64_t v) { o.snapshot_max_bytes_per_sec = v; }},
      Word("reseed", replication::ParseReseedPolicy, [](O& o) -> auto& { return o.reseed; }),
      {"ready_lag", Tunable::kUint, [](O& o, uint64_t v) { o.ready_lag = v; }},
  };
  return kTunables;
}

absl::Status CheckListen(const ConfigError& err, const toml::source_region& where,
                         const std::string& key, const std::string& listen) {
  size_t colon = listen.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port == 0 || port > 65535) {
    return err.At(where, key,
                  absl::StrCat("'", listen, "' is not host:port with a port in 1-65535"));
  }
  return absl::OkStatus();
}

// An optional host:port key of a [[node]] table into `out` (left as it is when absent).
absl::Status OptionalAddress(const ConfigError& err, const toml::table& t,
                             const std::string& prefix, const char* key, std::string& out) {
  const toml::node* v = t.get(key);
  if (v == nullptr) return absl::OkStatus();
  std::string full = absl::StrCat(prefix, ".", key);
  if (!v->is_string()) return err.At(v->source(), full, "must be a string \"host:port\"");
  out = *v->value<std::string>();
  return CheckListen(err, v->source(), full, out);
}

absl::Status ReadTunables(const ConfigError& err, const toml::table& table,
                          const std::string& section, rpc::NodeServerOptions& options) {
  for (auto&& [k, v] : table) {
    std::string key(k.str());
    std::string full = absl::StrCat(section, ".", key);
    const Tunable* t = nullptr;
    for (const Tunable& cand : ReplicationTunables()) {
      if (key == cand.key) t = &cand;
    }
    if (t == nullptr) return err.At(k.source(), full, "unknown key");
    if (t->kind == Tunable::kWord) {
      if (!v.is_string()) return err.At(v.source(), full, "must be a string");
      if (absl::Status s = t->set_word(options, *v.value<std::string>()); !s.ok()) {
        return err.At(v.source(), full, std::string(s.message()));
      }
      continue;
    }
    if (t->kind == Tunable::kBool) {
      if (!v.is_boolean()) return err.At(v.source(), full, "must be true or false");
      t->set(options, *v.value<bool>() ? 1 : 0);
      continue;
    }
    if (!v.is_integer()) return err.At(v.source(), full, "must be an integer");
    int64_t n = *v.value<int64_t>();
    if (n < 0 || static_cast<uint64_t>(n) < t->min || static_cast<uint64_t>(n) > t->max) {
      return err.At(v.source(), full,
                    absl::StrCat(n, " is out of range [", t->min, ", ", t->max, "]"));
    }
    t->set(options, static_cast<uint64_t>(n));
  }
  return absl::OkStatus();
}

// A secret read from a file or the config: one line, its end of line dropped; refused when
// others may read where it is kept (as MongoDB refuses a keyFile they may read) or when it is
// too short to resist a guess.
absl::Status CheckSecret(const std::string& secret, const std::string& what) {
  if (secret.size() < rpc::auth::kMinSecretBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " holds ", secret.size(), " bytes; a cluster secret needs at least ",
        rpc::auth::kMinSecretBytes, " (make one with: openssl rand -base64 32)"));
  }
  return absl::OkStatus();
}

absl::Status CheckPrivate(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %s may be read by others (mode %04o); it holds the cluster secret: chmod 600 it",
        what, path, st.st_mode & 07777));
  }
  return absl::OkStatus();
}

absl::Status ReadSecret(const ConfigError& err, const toml::table& cluster,
                        const std::string& config_path, const fs::path& base,
                        std::string& secret, std::string& source) {
  const toml::node* inline_secret = cluster.get("secret");
  const toml::node* file = cluster.get("secret_file");
  if (inline_secret != nullptr && file != nullptr) {
    return err.At(file->source(), "cluster.secret_file",
                  "give the secret or a file holding it, not both");
  }
  if (inline_secret != nullptr) {
    if (!inline_secret->is_string()) {
      return err.At(inline_secret->source(), "cluster.secret", "must be a string");
    }
    secret = *inline_secret->value<std::string>();
    source = config_path;
    if (absl::Status s = CheckSecret(secret, "the secret"); !s.ok()) {
      return err.At(inline_secret->source(), "cluster.secret", std::string(s.message()));
    }
    if (absl::Status s = CheckPrivate(config_path, "the file"); !s.ok()) {
      return err.At(inline_secret->source(), "cluster.secret",
                    absl::StrCat(s.message(), ", or move the secret to a secret_file"));
    }
  } else if (file != nullptr) {
    if (!file->is_string()) {
      return err.At(file->source(), "cluster.secret_file", "must be a string");
    }
    fs::path p = *file->value<std::string>();
    if (p.is_relative()) p = base / p;
    absl::StatusOr<std::string> read = LoadSecretFile(p.string());
    if (!read.ok()) {
      return err.At(file->source(), "cluster.secret_file", std::string(read.status().message()));
    }
    secret = *read;
    source = p.string();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RequiredString(const ConfigError& err, const toml::table& table,
                                           const toml::source_region& table_where,
                                           const std::string& prefix, const char* key) {
  const toml::node* v = table.get(key);
  if (v == nullptr) return err.At(table_where, absl::StrCat(prefix, ".", key), "missing");
  if (!v->is_string()) {
    return err.At(v->source(), absl::StrCat(prefix, ".", key), "must be a string");
  }
  std::string s = *v->value<std::string>();
  if (s.empty()) return err.At(v->source(), absl::StrCat(prefix, ".", key), "is empty");
  return s;
}

}  // namespace

const NodeConfig* ClusterConfig::Find(const std::string& id) const {
  for (const NodeConfig& n : nodes) {
    if (n.id == id) return &n;
  }
  return nullptr;
}

const NodeConfig* ClusterConfig::Leader() const {
  for (const NodeConfig& n : nodes) {
    if (n.role == "leader") return &n;
  }
  return nullptr;
}

bool IsWildcard(const std::string& address) {
  std::string host = address.substr(0, address.rfind(':'));
  return host == "0.0.0.0" || host == "[::]" || host == "::" || host.empty();
}

absl::StatusOr<std::string> LoadSecretFile(const std::string& path) {
  if (absl::Status s = CheckPrivate(path, "the secret file"); !s.ok()) return s;
  std::ifstream in(path, std::ios::binary);
  std::string secret((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read the secret file ", path));
  }
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  if (secret.find('\n') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("the secret file ", path, " holds more than one line"));
  }
  if (absl::Status s = CheckSecret(secret, absl::StrCat("the secret file ", path)); !s.ok()) {
    return s;
  }
  return secret;
}

absl::StatusOr<ClusterConfig> LoadConfig(const std::string& path) {
  ConfigError err(path);
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::string why(e.description());
    if (e.source().begin.line == 0) return err.File(why);
    return err.At(e.source(), "syntax", why);
  }
  ClusterConfig config;
  config.path = path;
  fs::path base = fs::absolute(fs::path(path)).parent_path();
  const toml::table* cluster = nullptr;
  const toml::array* nodes = nullptr;
  const toml::table* tls = nullptr;
  const toml::table* coordinator = nullptr;
  for (auto&& [k, v] : root) {
    std::string key(k.str());
    if (key == "cluster") {
      cluster = v.as_table();
      if (cluster == nullptr) return err.At(v.source(), "cluster", "must be a table [cluster]");
    } else if (key == "node") {
      nodes = v.as_array();
      if (nodes == nullptr || !nodes->is_array_of_tables()) {
        return err.At(v.source(), "node", "must be an array of tables [[node]]");
      }
    } else if (key == "replication") {
      const toml::table* t = v.as_table();
      if (t == nullptr) return err.At(v.source(), "replication", "must be a table");
      if (absl::Status s = ReadTunables(err, *t, "replication", config.defaults); !s.ok()) {
        return s;
      }
    } else if (key == "log") {
      const toml::table* t = v.as_table();
      if (t == nullptr) return err.At(v.source(), "log", "must be a table [log]");
      for (auto&& [lk, lv] : *t) {
        std::string full = absl::StrCat("log.", std::string(lk.str()));
        if (lk.str() != "format") return err.At(lk.source(), full, "unknown key");
        std::optional<std::string> format = lv.value<std::string>();
        if (!lv.is_string() || (*format != "text" && *format != "json")) {
          return err.At(lv.source(), full, "must be \"text\" or \"json\"");
        }
        config.log_format = *format;
      }
    } else if (key == "tls") {
      tls = v.as_table();
      if (tls == nullptr) return err.At(v.source(), "tls", "must be a table [tls]");
    } else if (key == "coordinator") {
      coordinator = v.as_table();
      if (coordinator == nullptr) {
        return err.At(v.source(), "coordinator", "must be a table [coordinator]");
      }
    } else {
      return err.At(k.source(), key, "unknown key (expected cluster, replication, log, tls, "
                                     "coordinator or node)");
    }
  }
  if (cluster == nullptr) return err.File("[cluster] table is missing");
  auto name = RequiredString(err, *cluster, cluster->source(), "cluster", "name");
  if (!name.ok()) return name.status();
  config.name = *name;
  for (auto&& [k, v] : *cluster) {
    if (k.str() != "name" && k.str() != "secret" && k.str() != "secret_file") {
      return err.At(k.source(), absl::StrCat("cluster.", std::string(k.str())),
                    "unknown key (tunables go in [replication])");
    }
  }
  if (absl::Status s =
          ReadSecret(err, *cluster, path, base, config.secret, config.secret_source);
      !s.ok()) {
    return s;
  }
  if (tls != nullptr) {
    if (absl::Status s = ReadTlsSection(err, *tls, base, config); !s.ok()) return s;
  }
  if (coordinator != nullptr) {
    if (absl::Status s = ReadCoordinatorSection(err, *coordinator, config); !s.ok()) return s;
    if (config.defaults.coordinator.prefix.empty()) {
      config.defaults.coordinator.prefix = absl::StrCat("/walship/", config.name);
    }
  }
  if (nodes == nullptr || nodes->empty()) return err.File("no [[node]] is defined");

  std::map<std::string, std::string> listen_owner, dir_owner, advertise_owner;
  int leaders = 0;
  for (size_t i = 0; i < nodes->size(); ++i) {
    const toml::table& t = *(*nodes)[i].as_table();
    std::string prefix = absl::StrCat("node[", i + 1, "]");
    for (auto&& [k, v] : t) {
      std::string key(k.str());
      if (key != "id" && key != "listen" && key != "data_dir" && key != "role" &&
          key != "http_listen" && key != "advertise" && key != "tls_cert_file" &&
          key != "tls_key_file") {
        return err.At(k.source(), absl::StrCat(prefix, ".", key), "unknown key");
      }
    }
    NodeConfig n;
    auto id = RequiredString(err, t, t.source(), prefix, "id");
    if (!id.ok()) return id.status();
    if (!replication::CheckNodeId(*id).ok()) {
      return err.At(t.get("id")->source(), prefix + ".id",
                    "must be 1 to 64 letters, digits, '.', '_' or '-' (and not \"-\" alone)");
    }
    n.id = *id;
    auto listen = RequiredString(err, t, t.source(), prefix, "listen");
    if (!listen.ok()) return listen.status();
    n.listen = *listen;
    const toml::source_region& listen_at = t.get("listen")->source();
    if (absl::Status s = CheckListen(err, listen_at, prefix + ".listen", n.listen); !s.ok()) {
      return s;
    }
    if (absl::Status s = OptionalAddress(err, t, prefix, "http_listen", n.http_listen); !s.ok()) {
      return s;
    }
    if (!n.http_listen.empty() && n.http_listen == n.listen) {
      return err.At(t.get("http_listen")->source(), prefix + ".http_listen",
                    absl::StrCat(n.http_listen, " is the node's listen address too; the HTTP "
                                 "port needs one of its own"));
    }
    if (absl::Status s = OptionalAddress(err, t, prefix, "advertise", n.advertise); !s.ok()) {
      return s;
    }
    if (!n.advertise.empty()) {
      if (IsWildcard(n.advertise)) {
        return err.At(t.get("advertise")->source(), prefix + ".advertise",
                      absl::StrCat(n.advertise, " is a wildcard; give the address others dial"));
      }
    } else if (IsWildcard(n.listen)) {
      return err.At(listen_at, prefix + ".listen",
                    absl::StrCat(n.listen, " is a wildcard nobody can dial: give the node an "
                                 "advertise = \"host:port\" that the others reach it at"));
    } else {
      n.advertise = n.listen;
    }
    if (absl::Status s = ReadNodeTls(err, t, prefix, base, n); !s.ok()) return s;
    auto dir = RequiredString(err, t, t.source(), prefix, "data_dir");
    if (!dir.ok()) return dir.status();
    n.data_dir = fs::path(*dir).is_absolute() ? *dir : (base / *dir).lexically_normal().string();
    if (const toml::node* role = t.get("role")) {
      if (!role->is_string() ||
          (*role->value<std::string>() != "leader" && *role->value<std::string>() != "follower")) {
        return err.At(role->source(), prefix + ".role", "must be \"leader\" or \"follower\"");
      }
      n.role = *role->value<std::string>();
    } else if (nodes->size() == 1) {
      n.role = "leader";
    } else {
      return err.At(t.source(), prefix + ".role",
                    "missing (required when the cluster has more than one node)");
    }
    if (config.Find(n.id) != nullptr) {
      return err.At(t.get("id")->source(), prefix + ".id",
                    absl::StrCat("duplicate node id '", n.id, "'"));
    }
    if (auto it = listen_owner.find(n.listen); it != listen_owner.end()) {
      return err.At(listen_at, prefix + ".listen",
                    absl::StrCat("duplicate listen address ", n.listen, " (also node ",
                                 it->second, ")"));
    }
    if (auto it = dir_owner.find(n.data_dir); it != dir_owner.end()) {
      return err.At(t.get("data_dir")->source(), prefix + ".data_dir",
                    absl::StrCat("duplicate data_dir ", n.data_dir, " (also node ", it->second,
                                 ")"));
    }
    if (!n.http_listen.empty()) {
      if (auto it = listen_owner.find(n.http_listen); it != listen_owner.end()) {
        return err.At(t.get("http_listen")->source(), prefix + ".http_listen",
                      absl::StrCat("duplicate address ", n.http_listen, " (also node ",
                                   it->second, ")"));
      }
      listen_owner[n.http_listen] = n.id;
    }
    if (n.advertise != n.listen) {
      if (auto it = advertise_owner.find(n.advertise); it != advertise_owner.end()) {
        return err.At(t.get("advertise")->source(), prefix + ".advertise",
                      absl::StrCat("duplicate advertise address ", n.advertise, " (also node ",
                                   it->second, ")"));
      }
    }
    advertise_owner[n.advertise] = n.id;
    listen_owner[n.listen] = n.id;
    dir_owner[n.data_dir] = n.id;
    if (n.role == "leader") {
      if (++leaders > 1) {
        return err.At(t.get("role")->source(), prefix + ".role",
                      absl::StrCat("a second leader ('", n.id, "' after '",
                                   config.Leader()->id, "'); exactly one node is the leader"));
      }
    }
    config.nodes.push_back(std::move(n));
  }
  if (leaders == 0) {
    return err.File("no node has role = \"leader\"; exactly one node must be the leader");
  }
  if (absl::Status s = CheckTlsConfig(err, config); !s.ok()) return s;
  const rpc::NodeServerOptions& d = config.defaults;
  if (d.engine.wal_retention_bytes == 0 && d.engine.wal_retention_seconds == 0) {
    return err.File(
        "wal_retention_bytes and wal_retention_seconds are both 0; set at least one so lagging "
        "followers can catch up from the WAL");
  }
  const size_t followers = config.nodes.size() - 1;
  if (d.commit.cluster.mode == replication::ReplicationMode::kSemiSync &&
      d.commit.cluster.acks > followers) {
    return err.File(absl::StrCat("replication.acks = ", d.commit.cluster.acks,
                                 " but the cluster has ", followers,
                                 followers == 1 ? " follower" : " followers",
                                 ": semi-sync could never acknowledge a write"));
  }
  if (d.reconnect_min_ms > d.reconnect_max_ms) {
    return err.File("reconnect_min_ms is larger than reconnect_max_ms");
  }
  // A held ack keeps a message in flight, and the leader sends no heartbeat meanwhile: the
  // longest silence a follower sees is about the ack delay plus the heartbeat interval.
  if (uint64_t{d.ack_delay_us} * 4 > uint64_t{d.heartbeat_timeout_ms} * 1000 ||
      uint64_t{d.ack_delay_us} + uint64_t{d.heartbeat_interval_ms} * 1000 >=
          uint64_t{d.heartbeat_timeout_ms} * 1000) {
    return err.File(absl::StrCat(
        "ack_delay_us (", d.ack_delay_us, ") must be at most a quarter of heartbeat_timeout_ms (",
        d.heartbeat_timeout_ms, " ms), and with heartbeat_interval_ms (",
        d.heartbeat_interval_ms, " ms) below it, or followers would time out"));
  }
  // The lease must end before any voter stops refusing votes for the leader it heard (by a
  // margin for clocks that run at different rates), and be renewed several times within it.
  if (d.failover && uint64_t{d.ack_delay_us} * 4 > uint64_t{d.lease_ms} * 1000) {
    return err.File(absl::StrCat("ack_delay_us (", d.ack_delay_us, ") must be at most a quarter "
                                 "of lease_ms (", d.lease_ms, " ms): held acks would let the "
                                 "leader's lease lapse"));
  }
  if (d.failover && (uint64_t{d.lease_ms} * 10 > uint64_t{d.election_timeout_ms} * 9 ||
                     uint64_t{d.heartbeat_interval_ms} * 3 > d.lease_ms)) {
    return err.File(absl::StrCat(
        "lease_ms (", d.lease_ms, ") must be at most 90% of election_timeout_ms (",
        d.election_timeout_ms, ") and at least three heartbeat_interval_ms (",
        d.heartbeat_interval_ms, "), or a leader could outlive its lease or lose it between "
        "heartbeats"));
  }
  return config;
}

absl::StatusOr<NodeConfig> NodeToRun(const ClusterConfig& config, const std::string& id,
                                     const std::string& listen, const std::string& data_dir) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(config.path, ": node.id: --node '", id,
                                                   "' ", why));
  };
  if (const NodeConfig* n = config.Find(id); n != nullptr) {
    if (!listen.empty() || !data_dir.empty()) {
      return bad("is in the file, which gives its listen address and data_dir; --listen and "
                 "--data-dir are for a node added at run time");
    }
    return *n;
  }
  if (listen.empty() || data_dir.empty()) {
    std::string ids;
    for (const NodeConfig& n : config.nodes) absl::StrAppend(&ids, ids.empty() ? "" : ", ", n.id);
    return bad(absl::StrCat("is not in the file (nodes: ", ids, "); a node added at run time "
                            "(walship add-follower) needs --listen and --data-dir"));
  }
  if (absl::Status s = replication::CheckNodeId(id); !s.ok()) return bad(std::string(s.message()));
  if (absl::Status s = replication::CheckAddress(listen); !s.ok()) {
    return bad(absl::StrCat("--listen: ", s.message()));
  }
  NodeConfig n;
  n.id = id;
  n.listen = listen;
  n.advertise = listen;  // walshipd --advertise replaces it
  n.data_dir = fs::absolute(data_dir).lexically_normal().string();
  n.role = "follower";
  for (const NodeConfig& other : config.nodes) {
    if (other.listen == n.listen) return bad(absl::StrCat("node ", other.id, " listens on ", listen));
    if (other.data_dir == n.data_dir) {
      return bad(absl::StrCat("node ", other.id, " has data_dir ", n.data_dir));
    }
  }
  return n;
}

rpc::NodeServerOptions ServerOptionsFor(const ClusterConfig& config, const NodeConfig& node) {
  rpc::NodeServerOptions o = config.defaults;
  o.cluster = config.name;
  o.node_id = node.id;
  o.listen = node.listen;
  o.http_listen = node.http_listen;
  o.advertise = node.advertise.empty() ? node.listen : node.advertise;
  o.secret = config.secret;
  o.tls = config.tls;
  if (!node.tls_cert_file.empty()) {
    o.tls.cert_file = node.tls_cert_file;
    o.tls.key_file = node.tls_key_file;
  }
  o.data_dir = node.data_dir;
  o.is_leader = node.role == "leader";
  o.leader.members_only = true;  // only the other nodes of the file may follow it
  o.leader.seed_new_followers = true;  // a new follower starts from a checkpoint
  for (const NodeConfig& n : config.nodes) {
    if (n.id == node.id) continue;
    o.leader.members.push_back(n.id);
    o.peers[n.id] = n.advertise;
  }
  if (const NodeConfig* leader = config.Leader(); leader != nullptr && !o.is_leader) {
    o.leader_id = leader->id;
    o.leader_address = leader->advertise;
  }
  return o;
}

}  // namespace walship::tools
