// The node store: one RocksDB database opened with replication-safe options.
//
// This is the only part of walship that includes <rocksdb/...>. Every type in this header is
// ours, so a RocksDB API change touches this folder only.
//
// Thread safety: an Engine may be used from any thread. Reads, scans, cursors and checkpoints
// may run concurrently with each other and with a write. Write() and ApplyReplicated() must be
// serialised by the caller (one writer at a time): with one writer, each call becomes exactly
// one WAL record, so the batch boundaries a WalCursor returns are the boundaries the writer
// saw. Two concurrent writers could be merged by RocksDB into one WAL record, and a follower
// positioned between them could then not be served from the WAL.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/types.h"

namespace rocksdb {
class Env;
}  // namespace rocksdb

namespace walship::engine {

struct EngineOptions {
  // Directory of the RocksDB database. Created when missing and create_if_missing is set.
  std::string path;
  bool create_if_missing = true;
  // Archived WAL kept for followers that are behind, in bytes; 0 means no size limit.
  // Callers enforce it promptly with TrimWalArchive() (RocksDB checks its own limit only
  // every 10 minutes).
  uint64_t wal_retention_bytes = uint64_t{1} << 30;
  // How far beyond wal_retention_bytes the archive may grow to keep the WAL that known
  // readers still need (TrimWalArchive's keep_from); 0: never beyond. RocksDB's own size
  // limit (WAL_size_limit_MB, whole MiB) is the sum of the two.
  uint64_t wal_pinned_max_bytes = uint64_t{4} << 30;
  // And for at most this long: a file kept only for the readers whose last write is older
  // than this is deleted all the same (a reader that far behind is re-seeded). 0: no age
  // limit.
  uint64_t wal_pinned_max_seconds = 0;
  // Archived WAL files older than this are deleted (RocksDB WAL_ttl_seconds); 0 means no age
  // limit. With no size limit, RocksDB checks every wal_retention_seconds / 2. At least one
  // of the two limits must be set (else kInvalidArgument).
  uint64_t wal_retention_seconds = 0;
  // Size of one memtable; when full it is flushed to an SSTable and the WAL switches file.
  uint64_t write_buffer_bytes = 64 << 20;
  // Files RocksDB keeps open (SSTables); -1 keeps every one open. The node sets it so that
  // RocksDB's files and its connections fit the process's file-descriptor limit together.
  int max_open_files = -1;
  // How long a request id is remembered with its write (FindRequest); 0: for ever.
  uint64_t request_retention_seconds = 600;
  // Tests only: the RocksDB Env (file system) to run on, to inject I/O errors; null is the
  // default. Not owned; must outlive the engine.
  rocksdb::Env* env = nullptr;
};

struct WriteOptions {
  // fsync the WAL before returning.
  bool sync = false;
  // Return kResourceExhausted instead of blocking when RocksDB would stall the write
  // (flush or compaction behind). Meant for the event-loop thread, which must never block.
  bool no_slowdown = false;
  // Writing without the WAL would consume sequence numbers with no shippable record, so a
  // write that sets this is refused with kInvalidArgument. It exists so that the refusal is
  // explicit and tested rather than a missing knob someone adds later.
  bool disable_wal = false;
  // When > 0, Write() puts this time (µs since the epoch) into the batch as a LogData record
  // placed first: it travels with the batch through the WAL and replication, consumes no
  // sequence number and is not visible to reads. BatchWriteTime() reads it back.
  int64_t write_time_us = 0;
  // Write() only: the writes of the batch that carry a request id. Each gets a record at the
  // end of the batch (after every op, so the ops keep their sequence numbers) that
  // FindRequest finds, on this node and on every node the batch is replicated to. Each
  // record consumes a sequence number, and is kept for request_retention_seconds from
  // write_time_us. kInvalidArgument when an id is empty or longer than kMaxRequestIdBytes,
  // its ops are not within the batch, or there is no write_time_us.
  std::vector<RequestRecord> requests;
};

struct WalFileSpan {
  SequenceNumber start_seq = 0;  // the first sequence number the file holds
  uint64_t bytes = 0;
};

struct WalTrim {
  uint64_t deleted_files = 0;
  uint64_t deleted_bytes = 0;
  uint64_t archived_bytes = 0;  // what the archive holds afterwards
  uint64_t pinned_bytes = 0;    // of those, kept past wal_retention_bytes for keep_from
  // Every WAL file left (archived and live), oldest first: how much WAL a reader at a given
  // position holds back (WalBytesFrom).
  std::vector<WalFileSpan> files;
};

// RocksDB's figures an operator watches (walship's /metrics), read from its properties.
struct EngineFigures {
  uint64_t sst_bytes = 0;
  uint64_t memtable_bytes = 0;
  uint64_t estimated_keys = 0;
  uint64_t pending_compaction_bytes = 0;  // RocksDB's estimate of what compaction must rewrite
  uint64_t running_compactions = 0;
  uint64_t running_flushes = 0;
  bool writes_stopped = false;        // RocksDB stops writes now (too many L0 files, ...)
  uint64_t delayed_write_rate = 0;    // bytes/s writes are slowed to now; 0: not slowed
  uint64_t stall_micros = 0;          // time writes spent stalled since the database opened
  uint64_t stalls_slowed = 0;         // writes slowed, then stopped, since it opened
  uint64_t stalls_stopped = 0;
  uint64_t wal_bytes_written = 0;     // since it opened
  uint64_t wal_syncs = 0;
  uint64_t background_errors = 0;
};

// The bytes of WAL from the file that holds `seq` to the end of `files`.
uint64_t WalBytesFrom(const std::vector<WalFileSpan>& files, SequenceNumber seq);

struct KeyValue {
  std::string key;
  std::string value;
};

struct ScanOptions {
  std::string start;   // first key at or after this
  std::string prefix;  // only keys with this prefix; empty for all
  uint64_t limit = 1000;
  // Stop once the keys and values taken reach this many bytes (0: no bound); the item that
  // crosses it is included, so a scan always makes progress.
  uint64_t max_bytes = 0;
};

// A consistent view of the database at one sequence number, for a read served later (on
// another thread) that must see exactly what was there when it was asked. Destroying it lets
// RocksDB drop what only it kept. Thread-safe; may outlive nothing but its Engine.
class Snapshot {
 public:
  virtual ~Snapshot() = default;
  virtual SequenceNumber seq() const = 0;
};

struct ReadOptions {
  const Snapshot* snapshot = nullptr;  // null: the latest data
  // Serve the read only from memory (memtables and RocksDB's block cache): a read that would
  // have to read a file returns kResourceExhausted and nothing. Meant for the event-loop
  // thread, which must never wait for the disk; the caller retries without it elsewhere.
  bool cache_only = false;
};

// Reads whole batches from the WAL in sequence order, starting exactly at a batch boundary
// and never across a gap. A WAL record that joins several batches written with a write time
// (a follower applies a message's batches as one record) is split again at each batch's
// write-time record, so the batches come back as they were written; a batch written without
// a write time has no boundary inside a joined record. Not thread-safe; one reader at a time.
class WalCursor {
 public:
  virtual ~WalCursor() = default;

  // Returns the batch that starts at next_seq() and advances past it, or std::nullopt when
  // the cursor has reached the end of the log (call again later: new writes are picked up).
  // Errors:
  //   kOutOfRange:      the WAL no longer holds next_seq() (purged): a gap. The reader must be
  //                     re-seeded from a checkpoint; the cursor never skips ahead.
  //   kInvalidArgument: next_seq() lies inside a batch, or beyond the end of the log.
  //   others:           I/O or corruption, with RocksDB's message.
  virtual absl::StatusOr<std::optional<Batch>> Next() = 0;

  // Sequence number of the next batch this cursor will return.
  virtual SequenceNumber next_seq() const = 0;
};

class Engine {
 public:
  // Opens (or creates) the database. kFailedPrecondition when another process holds it.
  static absl::StatusOr<std::unique_ptr<Engine>> Open(const EngineOptions& options);

  virtual ~Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Writes `ops` atomically as one batch and returns it with its assigned first_seq, count and
  // bytes (as the WAL holds them). Caller serialises writes (see the class comment).
  // kResourceExhausted: would stall and options.no_slowdown was set; nothing was written.
  // kInvalidArgument: an empty op list, or options.disable_wal.
  virtual absl::StatusOr<Batch> Write(absl::Span<const WriteOp> ops,
                                      const WriteOptions& options) = 0;

  // Applies a batch shipped from the leader, byte for byte, so that this database consumes the
  // same sequence numbers. Requires batch.first_seq == LatestSequence() + 1 (else
  // kFailedPrecondition, nothing applied) and a well-formed batch whose header count equals
  // batch.count (else kDataLoss). kResourceExhausted as for Write.
  // Takes the batch by value so that a caller that moves it in pays no copy.
  virtual absl::Status ApplyReplicated(Batch batch, const WriteOptions& options) = 0;

  // Point read. kNotFound when absent; kResourceExhausted when read.cache_only and the value
  // is not in memory.
  virtual absl::StatusOr<std::string> Get(std::string_view key, const ReadOptions& read) = 0;
  absl::StatusOr<std::string> Get(std::string_view key) { return Get(key, ReadOptions{}); }
  // kResourceExhausted as for Get.
  virtual absl::StatusOr<std::vector<KeyValue>> Scan(const ScanOptions& options,
                                                     const ReadOptions& read) = 0;
  absl::StatusOr<std::vector<KeyValue>> Scan(const ScanOptions& options) {
    return Scan(options, ReadOptions{});
  }

  // A view of the database as it is now (see Snapshot).
  virtual std::shared_ptr<const Snapshot> GetSnapshot() = 0;

  // Sequence number of the last op written or applied (0 for an empty database).
  virtual SequenceNumber LatestSequence() = 0;

  // The outcome of the write that carried request id `id` (WriteOptions::requests), written
  // here or replicated, or nullopt when none did within request_retention_seconds before
  // `now_us` (µs since the epoch). kDataLoss when its record is not one walship writes;
  // with read.cache_only, kResourceExhausted when the answer needs the disk.
  virtual absl::StatusOr<std::optional<RequestOutcome>> FindRequest(
      const std::string& id, int64_t now_us, const ReadOptions& read = ReadOptions{}) = 0;

  // A cursor positioned at `from_seq`, which should be a batch boundary (1 for the start).
  virtual absl::StatusOr<std::unique_ptr<WalCursor>> NewWalCursor(SequenceNumber from_seq) = 0;

  // Makes a consistent copy of the database in `dir` (which must not exist) and returns the
  // sequence number it holds, read from the opened copy (RocksDB's own figure is only a lower
  // bound while writes go on).
  virtual absl::StatusOr<SequenceNumber> CreateCheckpoint(const std::string& dir) = 0;

  // File ingestion changes state without a WAL record, so followers could never see it:
  // always refused with kFailedPrecondition.
  virtual absl::Status IngestExternalFiles(const std::vector<std::string>& files) = 0;

  // Flushes the memtable to an SSTable and switches to a new WAL file (tests, admin).
  virtual absl::Status Flush() = 0;

  // Bytes of SSTables, memtables and live WAL (an estimate).
  virtual uint64_t ApproximateSizeBytes() = 0;

  // RocksDB's figures for monitoring. Builds its statistics maps: not for every request.
  virtual EngineFigures Figures() { return {}; }

  // Fsyncs the WAL.
  virtual absl::Status SyncWal() = 0;

  // The error that stopped RocksDB's writes (a failed flush or compaction, a full disk, a
  // failed WAL write), or OK. While it is set RocksDB refuses every write with it.
  virtual absl::Status StorageError() = 0;

  // Why a write to the WAL failed, or OK while none has. Once one has, this database takes no
  // more writes or WAL syncs, and must not be closed: RocksDB 7.8 (Debian's build keeps its
  // asserts) aborts the process on any later use of that WAL file's writer, closing the
  // database included, and its own recovery can leave that writer in place. The node exits
  // instead (a process exit loses nothing the kernel holds) and, started again, RocksDB
  // replays the WAL and drops its torn last record, a write that was never acknowledged.
  virtual absl::Status WalFailed() = 0;

  // Asks RocksDB to recover from the storage error once its cause is gone (DB::Resume). OK
  // when writes work again (also when there was no error); kUnavailable while RocksDB is
  // recovering by itself (a full disk); otherwise the error that remains.
  virtual absl::Status Resume() = 0;

  // Deletes the oldest archived WAL files until the archive holds at most
  // wal_retention_bytes (RocksDB itself checks that limit only every 10 minutes), except
  // files holding sequence numbers at or after `keep_from` (what the readers still need),
  // which are kept until the archive would pass wal_retention_bytes + wal_pinned_max_bytes,
  // or, with wal_pinned_max_seconds, until their last write is that old. Readers that needed a
  // deleted file then get kOutOfRange (a gap) from their cursor. Deletes nothing when
  // wal_retention_bytes is 0. Lists the WAL files again only when the archive or keep_from
  // changed since the last call. One call at a time (it is not thread-safe with itself).
  virtual absl::StatusOr<WalTrim> TrimWalArchive(SequenceNumber keep_from) = 0;
  absl::StatusOr<WalTrim> TrimWalArchive() { return TrimWalArchive(UINT64_MAX); }

  // The sequence number of a checkpoint directory's database (opened read-only), or the
  // error that opening it gives (naming the directory).
  static absl::StatusOr<SequenceNumber> CheckpointSequence(const std::string& dir);

 protected:
  Engine() = default;
};

// Joins consecutive batches (each first_seq equal to the previous next_seq) into one batch
// that consumes the same sequence numbers when applied. kInvalidArgument if not contiguous
// or malformed.
absl::StatusOr<Batch> ConcatBatches(absl::Span<const Batch* const> batches);
absl::StatusOr<Batch> ConcatBatches(absl::Span<const Batch> batches);

// The write time Write() stored in the batch (WriteOptions::write_time_us), or 0 when it
// carries none. For concatenated batches, the time of the first. Reads a fixed place of the
// bytes; does not walk the batch.
int64_t BatchWriteTime(const Batch& batch);

// Decodes a batch's bytes back into operations (tests, debugging, the CLI). kDataLoss when the
// bytes are malformed.
absl::StatusOr<std::vector<WriteOp>> DecodeBatch(const Batch& batch);

}  // namespace walship::engine
