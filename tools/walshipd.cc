// walshipd: runs one walship node from the cluster config.
#include <kj/async-unix.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <string>

#include "replication/membership.h"
#include "rpc/node_server.h"
#include "tools/config.h"
#include "tools/log_format.h"

int main(int argc, char** argv) {
  // Before any thread exists (RocksDB starts its own), so that every thread blocks these
  // signals and the event loop receives them.
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);

  CLI::App app{"walshipd: one node of a walship cluster (replicated RocksDB key-value store)"};
  std::string config_path, node_id;
  app.add_option("--config", config_path, "cluster config file (TOML; see docs/config.md)")
      ->required();
  app.add_option("--node", node_id, "id of the node to run, as in the config's [[node]] id")
      ->required();
  std::string restore_from;
  app.add_option("--restore-from", restore_from,
                 "seed this follower's data dir from a checkpoint directory (walship checkpoint "
                 "--out DIR) before it starts: verified, then put in place of its data, which "
                 "stays as it was if the checkpoint is refused");
  std::string listen, data_dir;
  app.add_option("--listen", listen,
                 "HOST:PORT to listen on, for a node that is not in the config file (one added "
                 "at run time with walship add-follower)");
  app.add_option("--data-dir", data_dir, "its data directory (with --listen)");
  std::string advertise;
  app.add_option("--advertise", advertise,
                 "HOST:PORT the other nodes and clients dial, for a node added at run time "
                 "whose --listen they cannot (0.0.0.0, or behind a NAT)");
  std::string http_listen;
  app.add_option("--http-listen", http_listen,
                 "HOST:PORT to serve /metrics, /health, /leader and /replica on (over the "
                 "node's http_listen in the config file)");
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("walshipd");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [" + node_id + "] %v");
  spdlog::set_default_logger(logger);

  auto config = walship::tools::LoadConfig(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "walshipd: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<walship::tools::NodeConfig> node =
      walship::tools::NodeToRun(*config, node_id, listen, data_dir);
  if (!node.ok()) {
    std::fprintf(stderr, "walshipd: %s\n", std::string(node.status().message()).c_str());
    return 2;
  }
  if (!advertise.empty()) {
    if (config->Find(node_id) != nullptr) {
      std::fprintf(stderr, "walshipd: --advertise is for a node added at run time; node %s is "
                   "in the file, which gives its advertise address\n", node_id.c_str());
      return 2;
    }
    if (absl::Status s = walship::replication::CheckAddress(advertise); !s.ok()) {
      std::fprintf(stderr, "walshipd: --advertise: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    node->advertise = advertise;
  }
  if (walship::tools::IsWildcard(node->advertise)) {
    std::fprintf(stderr, "walshipd: %s is a wildcard nobody can dial: give --advertise HOST:PORT\n",
                 node->advertise.c_str());
    return 2;
  }
  walship::tools::UseLogFormat(*logger, node_id, config->log_format);
  walship::rpc::NodeServerOptions options = walship::tools::ServerOptionsFor(*config, *node);
  options.restore_from = restore_from;
  if (absl::Status s = walship::tools::CheckNodeTls(*config, *node); !s.ok()) {
    std::fprintf(stderr, "walshipd: %s: %s\n", config_path.c_str(),
                 std::string(s.message()).c_str());
    return 2;
  }
  if (!http_listen.empty()) {
    if (absl::Status s = walship::replication::CheckAddress(http_listen); !s.ok()) {
      std::fprintf(stderr, "walshipd: --http-listen: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    if (http_listen == options.listen) {
      std::fprintf(stderr, "walshipd: --http-listen: %s is the node's listen address too\n",
                   http_listen.c_str());
      return 2;
    }
    options.http_listen = http_listen;
  }
  // Anyone who can reach a node without a secret may read and write every key and follow it.
  if (options.secret.empty() && !walship::tools::IsLoopback(options.listen)) {
    spdlog::warn("!!! listening on {} WITHOUT A CLUSTER SECRET: anyone who reaches this address "
                 "can read and write every key and copy the whole database. Set [cluster] "
                 "secret_file (docs/operations.md). !!!",
                 options.listen);
  }
  auto server = walship::rpc::NodeServer::Open(std::move(options));
  if (!server.ok()) {
    spdlog::error("cannot start: {}", server.status().ToString());
    // No room to open the database (after a full disk stopped it): a supervisor may retry.
    return absl::IsResourceExhausted(server.status()) ? walship::rpc::kExitWalFailed : 1;
  }
  absl::Status s = (*server)->Run();
  if (!s.ok()) {
    spdlog::error("{}", s.ToString());
    return 1;
  }
  return 0;
}
