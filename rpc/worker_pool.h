// A bounded pool of threads for blocking work (fsync writes, large applies and scans,
// checkpoints), with results handed back to the KJ event loop that asked for them.
//
// Thread safety: Run() is called on the event-loop thread that created the pool; the
// returned promise resolves on that thread. The work function runs on a pool thread and must
// not touch KJ or Cap'n Proto objects of the loop.
#pragma once

#include <kj/async.h>
#include <kj/debug.h>
#include <kj/function.h>

#include <cstddef>
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace walship::rpc {

class WorkerPool {
 public:
  // `threads` workers; at most `max_queued` tasks waiting (Run() fails past it).
  WorkerPool(size_t threads, size_t max_queued);
  ~WorkerPool();  // finishes queued tasks, then joins

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs fn on a worker and resolves with its result on the calling (loop) thread. Rejects
  // with an overloaded exception when the queue is full.
  template <typename F>
  auto Run(F fn) -> kj::Promise<decltype(fn())> {
    using T = decltype(fn());
    auto paf = kj::newPromiseAndCrossThreadFulfiller<T>();
    bool queued = Enqueue(kj::Function<void()>(
        [fn = kj::mv(fn), f = kj::mv(paf.fulfiller)]() mutable { f->fulfill(fn()); }));
    if (!queued) return KJ_EXCEPTION(OVERLOADED, "worker queue full");
    return kj::mv(paf.promise);
  }

 private:
  bool Enqueue(kj::Function<void()> task);
  void Loop();

  const size_t max_queued_;
  absl::Mutex mu_;
  std::deque<kj::Function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace walship::rpc
