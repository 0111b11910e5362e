// Seeding a node from a checkpoint of another, as policy: what a checkpoint says about itself
// (its manifest), which of its files a transfer cut off earlier already holds, the node state
// a seeded node starts with, when a follower re-seeds by itself, when it counts as ready, and
// how its progress reads.
//
// A checkpoint directory (what `walship checkpoint --out DIR` writes, and what a follower
// stages in DATA_DIR/seed while it is seeded) holds:
//   MANIFEST.walship  the manifest below, in text (FormatManifest)
//   db/               the RocksDB checkpoint's files, exactly as the source listed them
//   verified          the files of db/ already received and checked, one per line
//                     ("name size crc"), so that a transfer cut off resumes after them
//
// Thread safety: plain functions and values.
#pragma once

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "replication/messages.h"
#include "replication/node_state.h"

namespace walship::replication {

// The manifest format this build writes and reads.
constexpr int kManifestVersion = 1;

struct SnapshotFile {
  std::string name;  // relative to db/; a plain file name (no '/', not "." or "..")
  uint64_t size = 0;
  uint32_t crc = 0;  // CRC-32 (zlib's) of the whole file
  bool operator==(const SnapshotFile&) const = default;
};

struct SnapshotManifest {
  std::string cluster;
  std::string database_id;
  std::string source;          // the node the checkpoint was taken on
  SequenceNumber seq = 0;      // the checkpoint holds every write up to here, nothing after
  Epoch epoch = 0;             // the source's epoch when it was taken
  std::vector<EpochEntry> history;  // the source's epoch history then
  int64_t taken_unix_ms = 0;   // when (wall clock of the source)
  std::vector<SnapshotFile> files;

  uint64_t TotalBytes() const;
};

std::string FormatManifest(const SnapshotManifest& m);
// Parses a manifest; `where` names it in errors (a file path, or "the manifest from NODE").
// kDataLoss naming the line when it is malformed, its history out of order or a file name
// unsafe; kFailedPrecondition naming both versions when written by another format version.
absl::StatusOr<SnapshotManifest> ParseManifest(absl::string_view text, absl::string_view where);

// The `verified` list of a staging dir: parse and format (one "name size crc" per line).
absl::StatusOr<std::vector<SnapshotFile>> ParseVerified(absl::string_view text,
                                                        absl::string_view where);
std::string FormatVerified(const SnapshotFile& f);

// Whether the checkpoint may seed a node of `cluster` that holds `state`: from the same
// cluster; and, when the node has a database already, the same database (re-seeding never
// crosses databases). The error names both sides.
absl::Status CheckSeedFor(const SnapshotManifest& m, const std::string& cluster,
                          const NodeState& state);

// What a transfer does with a staging dir: files already verified that the checkpoint lists
// identically (name, size and checksum: RocksDB never reuses a file number, so an SSTable of
// that name and checksum is that file) are kept; the others are fetched, and staged files the
// checkpoint does not list (or lists otherwise) are deleted first.
struct FetchPlan {
  std::vector<SnapshotFile> keep;
  std::vector<SnapshotFile> fetch;     // in the manifest's order
  std::vector<std::string> remove;     // staged names to delete
  uint64_t kept_bytes = 0;
  uint64_t fetch_bytes = 0;
};
FetchPlan PlanFetch(const SnapshotManifest& m, const std::vector<SnapshotFile>& verified);

// Whether the staged bytes of `f`, a file being fetched when an earlier transfer was cut off,
// may be kept and the fetch continue after them: the earlier transfer's manifest
// (`previous`, null when unknown) listed the file identically, so those bytes are a prefix of
// the same file (the whole file's checksum still decides at its end).
bool ResumesPartial(const SnapshotManifest* previous, const SnapshotFile& f);

// The node state a node seeded from `m` starts with: the checkpoint's database and epoch
// history, following `leader`, with no needs-snapshot verdict and no handover. The epoch
// never goes below what the node had seen (its highest epoch), so a seeded node never
// forgets an epoch.
NodeState StateAfterSeed(const NodeState& old, const SnapshotManifest& m,
                         const std::string& leader);

// What a follower does once its leader says it cannot serve it.
enum class ReseedPolicy {
  kAutomatic,  // fetch a checkpoint from the leader at once (the default)
  kOperator,   // wait for `walship reseed`
};
absl::StatusOr<ReseedPolicy> ParseReseedPolicy(absl::string_view s);
const char* Describe(ReseedPolicy p);

// A follower is ready (caught up enough to be read from and waited for by name) once it is
// within `ready_lag` sequence numbers of the leader's latest as the leader last told it.
bool IsReady(SequenceNumber applied, SequenceNumber leader_latest, uint64_t ready_lag);

// A transfer's progress, for status and the CLI.
struct SeedProgress {
  enum class Phase { kConnecting, kCopying, kVerifying, kInstalling, kFailed };
  Phase phase = Phase::kConnecting;
  std::string source;          // the node it copies from
  uint64_t done_bytes = 0;     // verified (kept or fetched)
  uint64_t total_bytes = 0;
  uint64_t bytes_per_sec = 0;  // fetch rate, recent
  std::string error;           // the last attempt's failure (kFailed, or retrying)
};
// "snapshot: copying 43% (180 MiB of 420 MiB, 95 MiB/s) from n1", and so on.
std::string DescribeProgress(const SeedProgress& p);
// "12.3 MiB", "420 B".
std::string HumanBytes(uint64_t bytes);

}  // namespace walship::replication
