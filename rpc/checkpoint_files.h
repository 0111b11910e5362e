// Checkpoint directories on disk (the layout is in replication/seeding.h): checksums, the
// verified list of a transfer under way, checking a whole directory, staging one into a data
// dir, and installing a staged seed in place of a node's database.
//
// A node's data dir while it is seeded:
//   db/        its database (the old one, kept until the new copy is verified)
//   seed/      the checkpoint being received; complete once seed/MANIFEST.walship exists
//   db.old/    the old database during the swap, deleted once the node state names the new
//
// Thread safety: plain functions; they block on the disk (call them off the event loop for
// large directories, or before it runs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "replication/node_state.h"
#include "replication/seeding.h"

namespace walship::rpc {

inline constexpr char kManifestFile[] = "MANIFEST.walship";
inline constexpr char kVerifiedFile[] = "verified";
// The manifest of the transfer under way (the files not yet verified may be partly there).
inline constexpr char kFetchingFile[] = "fetching";

// CRC-32 (zlib) of bytes, continuing from `crc` (0 to start).
uint32_t Crc32(uint32_t crc, const void* data, size_t n);
// The size and CRC-32 of a whole file.
absl::StatusOr<replication::SnapshotFile> ChecksumFile(const std::string& path);
// The text of a whole file.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// Writes `contents` to `path` durably: a temporary file, fsync, rename, fsync of the directory.
absl::Status WriteFileDurably(const std::string& path, const std::string& contents);
// Appends `line` to `path` and fsyncs it.
absl::Status AppendDurably(const std::string& path, const std::string& line);
// Fsyncs a directory (after files were created, renamed or deleted in it).
absl::Status SyncDir(const std::string& dir);

// The files of `dir`/verified (none when it does not exist).
absl::StatusOr<std::vector<replication::SnapshotFile>> ReadVerified(const std::string& dir);

// Checks a complete checkpoint directory: its manifest parses, db/ holds exactly the listed
// files with their sizes and checksums, and the database opens at the manifest's sequence
// number. Any fault is an error naming the file.
absl::StatusOr<replication::SnapshotManifest> VerifyCheckpointDir(const std::string& dir);

// Free bytes on the file system holding `dir`.
absl::StatusOr<uint64_t> FreeBytes(const std::string& dir);

// Copies the checkpoint directory `from` (verified already) into `data_dir`/seed, complete
// only once every file is there (the manifest goes last). Checks the free space first.
absl::Status StageCheckpoint(const std::string& from, const std::string& data_dir);

// When `data_dir`/seed holds a complete checkpoint, puts it in place of `data_dir`/db and
// saves the node state it starts with (replication::StateAfterSeed, following `leader`), so
// that the old database is gone only once the new one is in place and named. Safe to run
// again after a crash at any step. Returns the manifest when it installed one, nullopt when
// there was nothing to install.
absl::StatusOr<std::optional<replication::SnapshotManifest>> InstallStagedSeed(
    const std::string& data_dir, const std::string& state_path, const std::string& leader);

}  // namespace walship::rpc
