#include "tools/checkpoint.h"

#include <kj/async-io.h>
#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "rpc/checkpoint_files.h"
#include "rpc/peer_client.h"
#include "rpc/snapshot_fetch.h"

namespace walship::tools {
namespace {

constexpr int kBarWidth = 30;
// Without a terminal, a line at most this often (and at each phase).
constexpr int64_t kLineEveryUs = 3'000'000;

}  // namespace

std::string ProgressBar(const replication::SeedProgress& p) {
  using Phase = replication::SeedProgress::Phase;
  if (p.phase != Phase::kCopying) return replication::DescribeProgress(p);
  uint64_t pct = p.total_bytes == 0 ? 100 : p.done_bytes * 100 / p.total_bytes;
  int filled = static_cast<int>(pct * kBarWidth / 100);
  return absl::StrCat("[", std::string(filled, '#'), std::string(kBarWidth - filled, '.'), "] ",
                      pct, "% ", replication::HumanBytes(p.done_bytes), " of ",
                      replication::HumanBytes(p.total_bytes), ", ",
                      replication::HumanBytes(p.bytes_per_sec), "/s");
}

absl::StatusOr<replication::SnapshotManifest> FetchCheckpointTo(const std::string& endpoint,
                                                                const std::string& cluster,
                                                                const rpc::ConnectOptions& connect,
                                                                const std::string& out,
                                                                ProgressStyle style) {
  if (::access((out + "/" + rpc::kManifestFile).c_str(), F_OK) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        out, " holds a complete checkpoint already (", rpc::kManifestFile, "); give another "
        "directory"));
  }
  auto security = rpc::MakePeerSecurity(connect.secret, connect.tls);
  if (!security.ok()) return security.status();
  auto io = kj::setupAsyncIo();
  kj::Timer& timer = io.provider->getTimer();
  int64_t last_line_us = -kLineEveryUs;
  replication::SeedProgress::Phase last_phase = replication::SeedProgress::Phase::kConnecting;
  rpc::FetchOptions fo;
  fo.dir = out;
  fo.cluster = cluster;
  fo.source = endpoint;
  fo.progress = [&](const replication::SeedProgress& p) {
    if (style == ProgressStyle::kNone) return;
    std::string line = ProgressBar(p);
    if (style == ProgressStyle::kTerminal) {
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
      if (p.phase != replication::SeedProgress::Phase::kCopying) std::fprintf(stderr, "\n");
      return;
    }
    int64_t now = (timer.now() - kj::origin<kj::TimePoint>()) / kj::MICROSECONDS;
    if (p.phase == last_phase && now - last_line_us < kLineEveryUs) return;
    last_phase = p.phase;
    last_line_us = now;
    std::fprintf(stderr, "%s\n", line.c_str());
  };
  absl::StatusOr<replication::SnapshotManifest> result = absl::UnknownError("not run");
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() {
                result = rpc::ConnectToPeer(io, endpoint, security->security)
                             .then([&](kj::Own<rpc::PeerClient> conn) {
                               auto fetched = rpc::FetchCheckpoint(
                                   timer, conn->node.castAs<rpc::schema::PeerService>(),
                                   std::move(fo));
                               return fetched.attach(kj::mv(conn));
                             })
                             .wait(io.waitScope);
              })) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach ", endpoint, ": ", e->getDescription().cStr()));
  }
  if (style == ProgressStyle::kTerminal && !result.ok()) std::fprintf(stderr, "\n");
  return result;
}

}  // namespace walship::tools
