#include "engine/engine.h"

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/check.h"
#include "engine/batch_format.h"
#include "engine/info_log.h"
#include "engine/requests.h"
#include "engine/rocks_status.h"
#include "engine/wal_cursor.h"

namespace walship::engine {
namespace {

constexpr uint64_t kMaxScanLimit = 100000;

// Records the background error that stops RocksDB's writes, and its end.
//
// Thread safety: RocksDB calls it from its background threads; Get() from any thread.
class StorageErrorListener final : public rocksdb::EventListener {
 public:
  void OnBackgroundError(rocksdb::BackgroundErrorReason reason, rocksdb::Status* error) override {
    if (error == nullptr || error->ok()) return;
    absl::MutexLock lock(&mu_);
    error_ = absl::StrCat(ReasonName(reason), ": ", error->ToString());
    if (reason == rocksdb::BackgroundErrorReason::kWriteCallback && wal_failed_.empty()) {
      wal_failed_ = error_;
      has_wal_failed_.store(true, std::memory_order_release);
    }
  }
  void OnErrorRecoveryEnd(const rocksdb::BackgroundErrorRecoveryInfo& info) override {
    if (info.new_bg_error.ok()) Clear();
  }
  void Clear() {
    absl::MutexLock lock(&mu_);
    error_.clear();
  }
  std::string Get() const {
    absl::MutexLock lock(&mu_);
    return error_;
  }
  // The first failed write of the WAL ("" when none); never cleared (Engine::WalFailed).
  // Checked on every write and apply: no lock until one has failed.
  std::string WalFailed() const {
    if (!has_wal_failed_.load(std::memory_order_acquire)) return "";
    absl::MutexLock lock(&mu_);
    return wal_failed_;
  }

 private:
  static const char* ReasonName(rocksdb::BackgroundErrorReason reason) {
    switch (reason) {
      case rocksdb::BackgroundErrorReason::kFlush:
        return "flushing a memtable";
      case rocksdb::BackgroundErrorReason::kCompaction:
        return "compacting";
      case rocksdb::BackgroundErrorReason::kWriteCallback:
        return "writing the WAL";
      case rocksdb::BackgroundErrorReason::kMemTable:
        return "writing a memtable";
      case rocksdb::BackgroundErrorReason::kManifestWrite:
        return "writing the manifest";
      case rocksdb::BackgroundErrorReason::kFlushNoWAL:
        return "flushing a memtable";
      case rocksdb::BackgroundErrorReason::kManifestWriteNoWAL:
        return "writing the manifest";
    }
    return "in the background";
  }

  mutable absl::Mutex mu_;
  std::string error_ ABSL_GUARDED_BY(mu_);
  std::string wal_failed_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> has_wal_failed_{false};
};

class EngineImpl final : public Engine {
 public:
  EngineImpl(std::unique_ptr<rocksdb::DB> db, std::vector<rocksdb::ColumnFamilyHandle*> families,
             std::unique_ptr<rocksdb::CompactionFilter> request_expiry,
             const EngineOptions& options, std::shared_ptr<StorageErrorListener> errors)
      : request_expiry_(std::move(request_expiry)),
        db_(std::move(db)),
        families_(std::move(families)),
        request_retention_seconds_(options.request_retention_seconds),
        wal_retention_bytes_(options.wal_retention_bytes),
        wal_pinned_max_bytes_(options.wal_pinned_max_bytes),
        wal_pinned_max_age_(std::chrono::seconds(options.wal_pinned_max_seconds)),
        errors_(std::move(errors)) {}
  ~EngineImpl() override {
    for (rocksdb::ColumnFamilyHandle* f : families_) {
      rocksdb::Status s = db_->DestroyColumnFamilyHandle(f);
      (void)s;  // the default family's handle is the database's own: nothing to destroy
    }
    rocksdb::Status s = db_->Close();
    (void)s;  // nothing more to do on close failure; the WAL already holds every write
  }

  absl::StatusOr<Batch> Write(absl::Span<const WriteOp> ops, const WriteOptions& options) override {
    if (options.disable_wal) {
      return absl::InvalidArgumentError(
          "writes without the WAL are refused: they would leave a hole in the replication log");
    }
    if (ops.empty()) return absl::InvalidArgumentError("a write needs at least one op");
    WALSHIP_RETURN_IF_ERROR(WalFailed());
    rocksdb::WriteBatch wb;
    // One writer at a time (class comment): the batch gets the numbers after `before`.
    SequenceNumber before = db_->GetLatestSequenceNumber();
    if (options.write_time_us > 0) {
      std::string blob = WriteTimeBlob(options.write_time_us);
      rocksdb::Status s = wb.PutLogData(rocksdb::Slice(blob));
      if (!s.ok()) return FromRocks(s);
    }
    for (const WriteOp& op : ops) {
      rocksdb::Status s;
      switch (op.type) {
        case OpType::kPut:
          s = wb.Put(op.key, op.value);
          break;
        case OpType::kDelete:
          s = wb.Delete(op.key);
          break;
        case OpType::kDeleteRange:
          s = wb.DeleteRange(op.key, op.value);
          break;
      }
      if (!s.ok()) return FromRocks(s);
    }
    for (const RequestRecord& r : options.requests) {
      if (r.id.empty() || r.id.size() > kMaxRequestIdBytes || r.ops == 0 ||
          r.first_op + r.ops > ops.size() || options.write_time_us <= 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "request id of ", r.id.size(), " bytes for ops ", r.first_op, "+", r.ops, " of ",
            ops.size(), options.write_time_us <= 0 ? " with no write time" : "",
            ": an id has 1 to ", kMaxRequestIdBytes,
            " bytes, names its ops, and is kept from its write time"));
      }
      RequestOutcome o{before + 1 + r.first_op, before + r.first_op + r.ops, options.write_time_us,
                       r.epoch};
      rocksdb::Status s = wb.Put(families_[1], r.id, EncodeRequestValue(o));
      if (!s.ok()) return FromRocks(s);
    }
    rocksdb::Status s = db_->Write(ToRocks(options), &wb);
    if (!s.ok()) return FromRocks(s);
    Batch batch{before + 1, wb.Count(), wb.Data()};
    // One writer at a time (class comment): the batch got exactly the next numbers.
    WALSHIP_CHECKF(db_->GetLatestSequenceNumber() == batch.last_seq(),
                   "concurrent writers: latest %llu, expected %llu",
                   static_cast<unsigned long long>(db_->GetLatestSequenceNumber()),
                   static_cast<unsigned long long>(batch.last_seq()));
    WALSHIP_CHECK(DecodeFixed64(batch.data.data()) == batch.first_seq);
    return batch;
  }

  absl::Status ApplyReplicated(Batch batch, const WriteOptions& options) override {
    if (options.disable_wal) {
      return absl::InvalidArgumentError("replicated batches are always written to the WAL");
    }
    if (batch.count == 0) {
      return absl::DataLossError(absl::StrCat("empty batch at seq ", batch.first_seq));
    }
    SequenceNumber latest = db_->GetLatestSequenceNumber();
    if (batch.first_seq != latest + 1) {
      return absl::FailedPreconditionError(
          absl::StrCat("batch starts at seq ", batch.first_seq, " but this database ends at ",
                       latest, "; only a batch starting at ", latest + 1, " may be applied"));
    }
    WALSHIP_RETURN_IF_ERROR(CheckHeader(batch));
    // The bytes move into the WriteBatch that is checked and then written: no copies.
    rocksdb::WriteBatch wb(std::move(batch.data));
    WALSHIP_RETURN_IF_ERROR(CheckRecords(wb, batch.first_seq, batch.count, nullptr));
    WALSHIP_RETURN_IF_ERROR(WalFailed());
    rocksdb::Status s = db_->Write(ToRocks(options), &wb);
    if (!s.ok()) return FromRocks(s);
    WALSHIP_CHECK(db_->GetLatestSequenceNumber() == batch.last_seq());
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Get(std::string_view key, const ReadOptions& read) override {
    std::string value;
    rocksdb::Status s = db_->Get(ToRocks(read), db_->DefaultColumnFamily(),
                                 rocksdb::Slice(key.data(), key.size()), &value);
    if (!s.ok()) return FromRead(s);
    return value;
  }

  absl::StatusOr<std::optional<RequestOutcome>> FindRequest(const std::string& id, int64_t now_us,
                                                            const ReadOptions& read) override {
    std::string value;
    rocksdb::Status s = db_->Get(ToRocks(read), families_[1], id, &value);
    if (s.IsNotFound()) return std::optional<RequestOutcome>();
    if (!s.ok()) return FromRead(s);
    std::optional<RequestOutcome> o = DecodeRequestValue(value);
    if (!o.has_value()) {
      return absl::DataLossError(
          absl::StrCat("the record of a request id holds ", value.size(), " bytes of no format"));
    }
    if (RequestExpired(o->write_time_us, request_retention_seconds_, now_us)) {
      return std::optional<RequestOutcome>();
    }
    return o;
  }

  absl::StatusOr<std::vector<KeyValue>> Scan(const ScanOptions& options,
                                             const ReadOptions& read) override {
    uint64_t limit = std::min(options.limit, kMaxScanLimit);
    std::vector<KeyValue> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ToRocks(read)));
    const std::string& seek = options.start > options.prefix ? options.start : options.prefix;
    uint64_t bytes = 0;
    for (it->Seek(seek); it->Valid() && out.size() < limit; it->Next()) {
      if (options.max_bytes > 0 && bytes >= options.max_bytes) break;
      if (!it->key().starts_with(options.prefix)) break;
      bytes += it->key().size() + it->value().size();
      out.push_back(KeyValue{it->key().ToString(), it->value().ToString()});
    }
    if (!it->status().ok()) return FromRead(it->status());
    return out;
  }

  std::shared_ptr<const Snapshot> GetSnapshot() override {
    return std::make_shared<SnapshotImpl>(db_.get());
  }

  SequenceNumber LatestSequence() override { return db_->GetLatestSequenceNumber(); }

  absl::StatusOr<std::unique_ptr<WalCursor>> NewWalCursor(SequenceNumber from_seq) override {
    if (from_seq == 0) return absl::InvalidArgumentError("WAL positions start at 1");
    return NewRocksWalCursor(db_.get(), from_seq);
  }

  absl::StatusOr<SequenceNumber> CreateCheckpoint(const std::string& dir) override {
    // A checkpoint flushes and reads the WAL's state: not while the storage has failed (see
    // SyncWal).
    if (absl::Status error = StorageError(); !error.ok()) return error;
    rocksdb::Checkpoint* raw = nullptr;
    rocksdb::Status s = rocksdb::Checkpoint::Create(db_.get(), &raw);
    if (!s.ok()) return FromRocks(s);
    std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
    s = checkpoint->CreateCheckpoint(dir);
    if (!s.ok()) return FromRocks(s);
    // The figure CreateCheckpoint could report is a lower bound while writes go on; the
    // opened copy's own latest sequence is exact.
    return CheckpointSequence(dir);
  }

  absl::Status IngestExternalFiles(const std::vector<std::string>&) override {
    return absl::FailedPreconditionError(
        "file ingestion is refused: it changes data without a WAL record, so followers "
        "would never receive it");
  }

  absl::Status Flush() override {
    rocksdb::FlushOptions fo;
    fo.wait = true;
    return FromRocks(db_->Flush(fo, families_));
  }

  uint64_t ApproximateSizeBytes() override {
    uint64_t sst = 0, mem = 0;
    db_->GetIntProperty("rocksdb.total-sst-files-size", &sst);
    db_->GetIntProperty("rocksdb.cur-size-all-mem-tables", &mem);
    return sst + mem;
  }

  EngineFigures Figures() override {
    EngineFigures f;
    db_->GetIntProperty("rocksdb.total-sst-files-size", &f.sst_bytes);
    db_->GetIntProperty("rocksdb.cur-size-all-mem-tables", &f.memtable_bytes);
    db_->GetIntProperty("rocksdb.estimate-num-keys", &f.estimated_keys);
    db_->GetIntProperty("rocksdb.estimate-pending-compaction-bytes",
                        &f.pending_compaction_bytes);
    db_->GetIntProperty("rocksdb.num-running-compactions", &f.running_compactions);
    db_->GetIntProperty("rocksdb.num-running-flushes", &f.running_flushes);
    uint64_t stopped = 0;
    db_->GetIntProperty("rocksdb.is-write-stopped", &stopped);
    f.writes_stopped = stopped != 0;
    db_->GetIntProperty("rocksdb.actual-delayed-write-rate", &f.delayed_write_rate);
    db_->GetIntProperty("rocksdb.background-errors", &f.background_errors);
    // The maps' values are decimal text; a value RocksDB leaves out stays 0.
    auto number = [](const std::map<std::string, std::string>& m, const char* key) {
      auto it = m.find(key);
      return it == m.end() ? uint64_t{0} : static_cast<uint64_t>(std::strtoull(
                                               it->second.c_str(), nullptr, 10));
    };
    std::map<std::string, std::string> db_stats, cf_stats;
    if (db_->GetMapProperty("rocksdb.dbstats", &db_stats)) {
      f.stall_micros = number(db_stats, "db.user_write_stall_micros");
      f.wal_bytes_written = number(db_stats, "db.wal_bytes_written");
      f.wal_syncs = number(db_stats, "db.wal_syncs");
    }
    if (db_->GetMapProperty("rocksdb.cfstats", &cf_stats)) {
      f.stalls_slowed = number(cf_stats, "io_stalls.total_slowdown");
      f.stalls_stopped = number(cf_stats, "io_stalls.total_stop");
    }
    return f;
  }

  absl::Status SyncWal() override {
    // After a failed WAL write RocksDB stops writes, but SyncWAL would still sync the WAL
    // writer that failed, which RocksDB 7.8 asserts against (its Debian build keeps asserts):
    // report the error instead. The listener hears of the failure before the write returns.
    if (absl::Status error = StorageError(); !error.ok()) return error;
    WALSHIP_RETURN_IF_ERROR(WalFailed());
    return FromRocks(db_->SyncWAL());
  }

  absl::Status WalFailed() override {
    std::string failed = errors_->WalFailed();
    if (failed.empty()) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat("the WAL could not be written (", failed,
                                               "); the node must restart to go on: "
                                               "RocksDB recovers from its WAL at start"));
  }

  absl::Status StorageError() override {
    std::string error = errors_->Get();
    if (error.empty()) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat("the storage failed ", error, "; RocksDB refuses writes until it recovers"));
  }

  absl::Status Resume() override {
    if (errors_->Get().empty()) return absl::OkStatus();
    rocksdb::Status s = db_->Resume();
    if (s.IsBusy()) {
      return absl::UnavailableError(
          absl::StrCat("RocksDB is recovering by itself from: ", errors_->Get()));
    }
    if (!s.ok()) return FromRocks(s);
    errors_->Clear();
    return absl::OkStatus();
  }

  absl::StatusOr<WalTrim> TrimWalArchive(SequenceNumber keep_from) override {
    WalTrim trim;
    // Files enter the archive by rename, which changes its mtime: while that and keep_from
    // stay, the last trim's answer holds and the WAL files need not be listed again.
    std::error_code ec;
    auto archive_mtime = std::filesystem::last_write_time(db_->GetName() + "/archive", ec);
    const auto now = std::filesystem::file_time_type::clock::now();
    if (!ec && trimmed_archive_mtime_.has_value() && *trimmed_archive_mtime_ == archive_mtime &&
        trimmed_keep_from_ == keep_from && now < trimmed_until_) {
      return trimmed_;
    }
    // Past this, a file kept for the readers ages past wal_pinned_max_seconds: trim again.
    std::filesystem::file_time_type until = std::filesystem::file_time_type::max();
    rocksdb::VectorLogPtr files;
    rocksdb::Status s = db_->GetSortedWalFiles(files);  // oldest first
    if (!s.ok()) return FromRocks(s);
    for (const auto& f : files) {
      if (f->Type() == rocksdb::kArchivedLogFile) trim.archived_bytes += f->SizeFileBytes();
    }
    std::vector<bool> deleted(files.size(), false);
    for (size_t i = 0; i < files.size() && wal_retention_bytes_ > 0; ++i) {
      const auto& f = files[i];
      if (trim.archived_bytes <= wal_retention_bytes_) break;
      if (f->Type() != rocksdb::kArchivedLogFile) continue;
      // The file holds [its start, the next file's start): needed when that reaches keep_from.
      bool needed = i + 1 == files.size() || files[i + 1]->StartSequence() > keep_from;
      if (needed && trim.archived_bytes <= wal_retention_bytes_ + wal_pinned_max_bytes_) {
        if (wal_pinned_max_age_.count() == 0) break;
        // Files are oldest first: when this one is young enough, so are the rest.
        auto written = std::filesystem::last_write_time(db_->GetName() + f->PathName(), ec);
        if (ec) break;  // its age unknown: kept, as without an age limit
        if (now - written <= wal_pinned_max_age_) {
          until = written + wal_pinned_max_age_;
          break;
        }
      }
      s = db_->DeleteFile(f->PathName());
      if (!s.ok() && std::filesystem::exists(db_->GetName() + f->PathName())) {
        return absl::InternalError(absl::StrCat("deleting archived WAL file ", f->PathName(), ": ",
                                                s.ToString(), " (", trim.deleted_files,
                                                " files deleted before it)"));
      }
      // Deleted, or already gone (RocksDB's own purge may have run meanwhile).
      trim.archived_bytes -= f->SizeFileBytes();
      trim.deleted_bytes += f->SizeFileBytes();
      ++trim.deleted_files;
      deleted[i] = true;
    }
    for (size_t i = 0; i < files.size(); ++i) {
      if (deleted[i]) continue;
      trim.files.push_back(WalFileSpan{files[i]->StartSequence(), files[i]->SizeFileBytes()});
    }
    if (wal_retention_bytes_ > 0 && trim.archived_bytes > wal_retention_bytes_) {
      trim.pinned_bytes = trim.archived_bytes - wal_retention_bytes_;
    }
    // Our own deletions changed the mtime too: take it after them.
    archive_mtime = std::filesystem::last_write_time(db_->GetName() + "/archive", ec);
    if (!ec) {
      trimmed_archive_mtime_ = archive_mtime;
      trimmed_keep_from_ = keep_from;
      trimmed_until_ = until;
      trimmed_ = trim;
      trimmed_.deleted_files = trimmed_.deleted_bytes = 0;
    }
    return trim;
  }

 private:
  class SnapshotImpl final : public Snapshot {
   public:
    explicit SnapshotImpl(rocksdb::DB* db) : db_(db), snapshot_(db->GetSnapshot()) {}
    ~SnapshotImpl() override { db_->ReleaseSnapshot(snapshot_); }
    SequenceNumber seq() const override { return snapshot_->GetSequenceNumber(); }
    const rocksdb::Snapshot* get() const { return snapshot_; }

   private:
    rocksdb::DB* db_;
    const rocksdb::Snapshot* snapshot_;
  };

  static rocksdb::ReadOptions ToRocks(const ReadOptions& read) {
    rocksdb::ReadOptions ro;
    if (read.snapshot != nullptr) {
      ro.snapshot = static_cast<const SnapshotImpl*>(read.snapshot)->get();
    }
    if (read.cache_only) ro.read_tier = rocksdb::kBlockCacheTier;
    return ro;
  }

  // A read that needed a file while cache_only (RocksDB: Incomplete) is kResourceExhausted.
  static absl::Status FromRead(const rocksdb::Status& s) {
    if (s.IsIncomplete()) {
      return absl::ResourceExhaustedError("the read needs the disk: " + s.ToString());
    }
    return FromRocks(s);
  }

  static rocksdb::WriteOptions ToRocks(const WriteOptions& options) {
    rocksdb::WriteOptions wo;
    wo.sync = options.sync;
    wo.no_slowdown = options.no_slowdown;
    wo.disableWAL = false;
    return wo;
  }

  // Declared before db_: the database uses it until it is closed.
  std::unique_ptr<rocksdb::CompactionFilter> request_expiry_;
  std::unique_ptr<rocksdb::DB> db_;
  // The default column family and kRequestsColumnFamily, in that order.
  std::vector<rocksdb::ColumnFamilyHandle*> families_;
  const uint64_t request_retention_seconds_;
  const uint64_t wal_retention_bytes_;
  const uint64_t wal_pinned_max_bytes_;
  const std::chrono::seconds wal_pinned_max_age_;  // 0: no age limit
  std::shared_ptr<StorageErrorListener> errors_;
  // The archive's mtime when TrimWalArchive last listed it, and what it held then.
  std::optional<std::filesystem::file_time_type> trimmed_archive_mtime_;
  SequenceNumber trimmed_keep_from_ = 0;
  WalTrim trimmed_;                                // what that trim left
  std::filesystem::file_time_type trimmed_until_;  // and until when it holds
};

}  // namespace

uint64_t WalBytesFrom(const std::vector<WalFileSpan>& files, SequenceNumber seq) {
  uint64_t bytes = 0;
  for (size_t i = files.size(); i-- > 0;) {
    bytes += files[i].bytes;
    if (files[i].start_seq <= seq) break;
  }
  return bytes;
}

absl::StatusOr<SequenceNumber> Engine::CheckpointSequence(const std::string& dir) {
  rocksdb::Options options;
  std::vector<std::string> names;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(options, dir, &names);
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& name : names) families.emplace_back(name, options);
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* ro = nullptr;
  if (s.ok()) s = rocksdb::DB::OpenForReadOnly(options, dir, families, &handles, &ro);
  if (!s.ok()) {
    return absl::DataLossError(
        absl::StrCat("cannot open the database in ", dir, ": ", s.ToString()));
  }
  std::unique_ptr<rocksdb::DB> copy(ro);
  SequenceNumber seq = copy->GetLatestSequenceNumber();
  for (rocksdb::ColumnFamilyHandle* h : handles) {
    rocksdb::Status d = copy->DestroyColumnFamilyHandle(h);
    (void)d;  // a read-only copy about to be closed: a handle not released loses nothing
  }
  return seq;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Open(const EngineOptions& options) {
  rocksdb::Options ro;
  ro.create_if_missing = options.create_if_missing;
  ro.write_buffer_size = options.write_buffer_bytes;
  ro.max_open_files = options.max_open_files;
  // Keep obsolete WAL files in <db>/archive, where GetUpdatesSince still finds them.
  // RocksDB checks these limits every WAL_ttl_seconds / 2 when only the age limit is set, and
  // only every 10 minutes once a size limit is set.
  if (options.wal_retention_bytes == 0 && options.wal_retention_seconds == 0) {
    return absl::InvalidArgumentError(
        "WAL retention needs a size or an age limit; with neither, RocksDB deletes obsolete WAL "
        "files at once and lagging followers could never catch up");
  }
  uint64_t limit = options.wal_retention_bytes == 0
                       ? 0
                       : options.wal_retention_bytes + options.wal_pinned_max_bytes;
  ro.WAL_size_limit_MB = (limit + (1 << 20) - 1) >> 20;
  ro.WAL_ttl_seconds = options.wal_retention_seconds;
  ro.manual_wal_flush = false;
  ro.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  // Pipelined and unordered writes would break "one write, one WAL record, in order".
  ro.enable_pipelined_write = false;
  ro.unordered_write = false;
  ro.two_write_queues = false;
  // RocksDB's LOG, written by walship (engine/info_log.h): RocksDB's own logger aborts the
  // process on its next line once a write to the file failed (a full disk).
  // (Not for a database that must exist and does not: the log would create its directory.)
  if (options.create_if_missing || std::filesystem::exists(options.path)) {
    ro.info_log = std::make_shared<InfoLog>(options.path + "/LOG");
  }
  ro.max_background_jobs = 2;
  auto errors = std::make_shared<StorageErrorListener>();
  ro.listeners.push_back(errors);
  if (options.env != nullptr) ro.env = options.env;
  // Request ids (engine/requests.h) live in a column family of their own, created in a
  // database that has none yet; expired ones go at compaction, and files of them older than
  // the retention are compacted (ttl) so that they do go.
  ro.create_missing_column_families = true;
  // A WAL file is kept live until every family has flushed what it holds, and the ids'
  // small memtable fills slowly: past this much live WAL RocksDB flushes it (RocksDB's own
  // bound, 4 x all write buffers, would let 544 MiB build up to read at the next start).
  ro.max_total_wal_size = 4 * options.write_buffer_bytes;
  auto request_expiry = NewRequestExpiryFilter(options.request_retention_seconds);
  rocksdb::ColumnFamilyOptions requests(ro);
  requests.write_buffer_size = 4 << 20;
  // Nearly every lookup is of an id never seen (a first attempt): bloom filters, in the
  // memtable and in every file, answer those without reading a block.
  rocksdb::BlockBasedTableOptions requests_table;
  requests_table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  requests.table_factory.reset(rocksdb::NewBlockBasedTableFactory(requests_table));
  requests.memtable_prefix_bloom_size_ratio = 0.1;
  requests.memtable_whole_key_filtering = true;
  requests.compaction_filter = request_expiry.get();
  requests.ttl = options.request_retention_seconds;
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions(ro)},
      {kRequestsColumnFamily, requests}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s =
      rocksdb::DB::Open(rocksdb::DBOptions(ro), options.path, families, &handles, &raw);
  if (s.ok() && handles[1]->GetID() != kRequestsColumnFamilyId) {
    // Replicated batches name it by number: it must be the same on every node.
    uint32_t id = handles[1]->GetID();
    // Refused before any use: a handle not released here loses nothing, the database closes.
    for (rocksdb::ColumnFamilyHandle* h : handles) (void)raw->DestroyColumnFamilyHandle(h);
    delete raw;
    return absl::FailedPreconditionError(absl::StrCat(
        "database ", options.path, ": column family ", kRequestsColumnFamily, " has id ", id,
        ", not ", kRequestsColumnFamilyId, "; it was not made by walship"));
  }
  if (!s.ok()) {
    if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
      return absl::FailedPreconditionError(
          absl::StrCat("database ", options.path, " is in use by another process: ", s.ToString()));
    }
    return FromRocks(s);
  }
  return std::unique_ptr<Engine>(new EngineImpl(std::unique_ptr<rocksdb::DB>(raw),
                                                std::move(handles), std::move(request_expiry),
                                                options, std::move(errors)));
}

}  // namespace walship::engine
