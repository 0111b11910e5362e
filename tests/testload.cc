// walship-testload: writes seeded random batches (puts with binary values, deletes, range
// deletes; 1-8 ops each) to a node, one batch per call, for the multi-process tests. Values
// are 8-127 bytes, or exactly --value-bytes.
// Prints "last_seq N" and the number of batches acknowledged. Stops at the first error
// (exit 3) after printing what was acknowledged so far. With --follow, a write refused
// because the node does not lead (or is handing leadership over) goes to the node the
// refusal names and is sent again, for up to 30 s: such a refusal applied nothing.
// With --unique-puts every batch is one put of a key never written before ("u" and the batch
// number), and with --acked-file each acknowledged key is appended to that file as soon as
// its ack arrives, so a test can check every acknowledged write after a crash. --mode,
// --acks and --level ask for the replication each write waits for.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <chrono>
#include <random>
#include <thread>

#include <fstream>

#include "absl/time/time.h"
#include "replication/durability.h"
#include "rpc/client.h"
#include "rpc/convert.h"

int main(int argc, char** argv) {
  CLI::App app{"walship-testload: random write batches for tests"};
  std::string endpoint;
  uint64_t batches = 1000, seed = 1, keys = 2000, value_bytes = 0;
  app.add_option("--endpoint", endpoint)->required();
  app.add_option("--batches", batches);
  app.add_option("--seed", seed);
  app.add_option("--keys", keys, "key space");
  app.add_option("--value-bytes", value_bytes, "size of every put's value (0: 8-127 bytes)");
  bool follow = false, unique_puts = false;
  app.add_flag("--follow", follow, "follow refusals that name the leader");
  app.add_flag("--unique-puts", unique_puts, "one put of a new key per batch");
  std::string acked_file, mode, level;
  uint32_t acks = 0, wait_ms = 0;
  app.add_option("--acked-file", acked_file, "append each acknowledged key here");
  app.add_option("--mode", mode, "async | semi-sync | sync");
  app.add_option("--acks", acks, "semi-sync: followers");
  app.add_option("--level", level, "received | flushed | applied");
  app.add_option("--wait-ms", wait_ms, "how long a write may wait for followers");
  CLI11_PARSE(app, argc, argv);

  walship::rpc::WriteOptions options;
  options.acks = acks;
  options.wait = absl::Milliseconds(wait_ms);
  if (!mode.empty()) options.mode = *walship::replication::ParseMode(mode);
  if (!level.empty()) options.level = *walship::replication::ParseAckLevel(level);
  std::ofstream acked_out;
  if (!acked_file.empty()) acked_out.open(acked_file, std::ios::app);
  auto client = walship::rpc::Client::Connect(endpoint, absl::Seconds(5));
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
    return 3;
  }
  (*client)->SetWriteOptions(options);
  std::mt19937_64 rng(seed);
  uint64_t last = 0, acked = 0, followed = 0;
  for (uint64_t i = 0; i < batches; ++i) {
    std::vector<walship::engine::WriteOp> ops;
    int n = unique_puts ? 0 : 1 + static_cast<int>(rng() % 8);
    if (unique_puts) {
      char key[32];
      std::snprintf(key, sizeof key, "u%08llu", static_cast<unsigned long long>(i));
      ops.push_back({walship::engine::OpType::kPut, key, std::to_string(seed)});
    }
    for (int j = 0; j < n; ++j) {
      char key[32];
      std::snprintf(key, sizeof key, "key%08llu", static_cast<unsigned long long>(rng() % keys));
      uint64_t kind = rng() % 20;
      if (kind == 0) {
        ops.push_back({walship::engine::OpType::kDeleteRange, key, std::string(key) + "5"});
      } else if (kind < 4) {
        ops.push_back({walship::engine::OpType::kDelete, key, ""});
      } else {
        size_t size = 8 + rng() % 120;
        std::string value(value_bytes > 0 ? value_bytes : size, '\0');
        for (char& c : value) c = static_cast<char>(rng());
        ops.push_back({walship::engine::OpType::kPut, key, value});
      }
    }
    auto r = (*client)->Write(ops);
    auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (follow && !r.ok() && std::chrono::steady_clock::now() < give_up &&
           !walship::rpc::LeaderHint(r.status()).empty() &&
           (walship::rpc::IsNotLeader(r.status()) || absl::IsUnavailable(r.status()))) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      auto next = walship::rpc::Client::Connect(walship::rpc::LeaderHint(r.status()),
                                                absl::Seconds(5));
      if (!next.ok()) continue;
      client = std::move(next);
      (*client)->SetWriteOptions(options);
      ++followed;
      r = (*client)->Write(ops);
    }
    if (!r.ok()) {
      std::printf("last_seq %llu\nacked %llu\n", static_cast<unsigned long long>(last),
                  static_cast<unsigned long long>(acked));
      std::fprintf(stderr, "write %llu failed: %s\n", static_cast<unsigned long long>(i),
                   r.status().ToString().c_str());
      return 3;
    }
    last = r->last_seq;
    ++acked;
    if (acked_out.is_open()) {
      for (const auto& op : ops) acked_out << op.key << "\n";
      acked_out.flush();
    }
  }
  std::printf("last_seq %llu\nacked %llu\nfollowed %llu\n", static_cast<unsigned long long>(last),
              static_cast<unsigned long long>(acked), static_cast<unsigned long long>(followed));
  return 0;
}
