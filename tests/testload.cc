// walship-testload: writes seeded random batches (puts with binary values, deletes, range
// deletes; 1-8 ops each) to a node, one batch per call, for the multi-process tests. Values
// are 8-127 bytes, or exactly --value-bytes.
// Prints "last_seq N" and the number of batches acknowledged. Stops at the first error
// (exit 3) after printing what was acknowledged so far. With --follow, a write refused
// because the node does not lead (or is handing leadership over) goes to the node the
// refusal names and is sent again, for up to 30 s: such a refusal applied nothing.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <chrono>
#include <random>
#include <thread>

#include "absl/time/time.h"
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
  bool follow = false;
  app.add_flag("--follow", follow, "follow refusals that name the leader");
  CLI11_PARSE(app, argc, argv);

  auto client = walship::rpc::Client::Connect(endpoint, absl::Seconds(5));
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
    return 3;
  }
  std::mt19937_64 rng(seed);
  uint64_t last = 0, acked = 0, followed = 0;
  for (uint64_t i = 0; i < batches; ++i) {
    std::vector<walship::engine::WriteOp> ops;
    int n = 1 + static_cast<int>(rng() % 8);
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
  }
  std::printf("last_seq %llu\nacked %llu\nfollowed %llu\n", static_cast<unsigned long long>(last),
              static_cast<unsigned long long>(acked), static_cast<unsigned long long>(followed));
  return 0;
}
