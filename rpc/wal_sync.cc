#include "rpc/wal_sync.h"

#include <spdlog/spdlog.h>

#include <atomic>

#include "replication/clock.h"
#include "rpc/node.h"

namespace walship::rpc {
namespace {

constexpr int64_t kSlowUs = 100'000;
constexpr int64_t kLogEveryUs = 1'000'000;

struct Timed {
  absl::Status status;
  int64_t began_us = 0;  // when the worker took it
  int64_t ended_us = 0;
};

}  // namespace

kj::Promise<absl::Status> SyncWalTimed(Node& node, const char* what) {
  replication::Clock* clock = replication::RealClock();
  const int64_t asked_us = clock->NowMicros();
  return node.node_pool()
      .Run([e = &node.engine(), clock]() {
        Timed t;
        t.began_us = clock->NowMicros();
        t.status = e->SyncWal();
        t.ended_us = clock->NowMicros();
        return t;
      })
      .catch_([clock](kj::Exception&& e) {  // the worker's queue was full
        int64_t now = clock->NowMicros();
        return Timed{absl::UnavailableError(e.getDescription().cStr()), now, now};
      })
      .then([asked_us, what](Timed t) {
        static std::atomic<int64_t> last_logged_us{0};
        int64_t took = t.ended_us - asked_us;
        int64_t last = last_logged_us.load(std::memory_order_relaxed);
        if (took >= kSlowUs && t.ended_us - last >= kLogEveryUs &&
            last_logged_us.compare_exchange_strong(last, t.ended_us)) {
          spdlog::info("slow WAL fsync: {} ms for {} ({} ms of it waiting for the node's worker)",
                       took / 1000, what, (t.began_us - asked_us) / 1000);
        }
        return t.status;
      });
}

}  // namespace walship::rpc
