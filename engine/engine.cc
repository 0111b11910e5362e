#include "engine/engine.h"

#include <rocksdb/db.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/transaction_log.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>

#include <cstring>
#include <deque>
#include <filesystem>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/check.h"
#include "engine/rocks_status.h"

namespace walship::engine {
namespace {

constexpr size_t kBatchHeaderBytes = 12;  // fixed64 sequence + fixed32 count
constexpr uint64_t kMaxScanLimit = 100000;
// The write-time record Write() puts first in a batch: RocksDB's LogData record (type byte
// kTypeLogData = 0x03, varint32 length, blob), whose blob is the tag "wsT1" and a fixed64 of
// microseconds since the epoch.
constexpr char kLogDataType = 0x03;
constexpr char kWriteTimeTag[] = "wsT1";
constexpr size_t kWriteTimeBlobBytes = 4 + 8;

uint64_t DecodeFixed64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);  // little-endian hosts only (x86_64, aarch64)
  return v;
}
uint32_t DecodeFixed32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void EncodeFixed64(char* p, uint64_t v) { std::memcpy(p, &v, sizeof v); }
void EncodeFixed32(char* p, uint32_t v) { std::memcpy(p, &v, sizeof v); }

// Walks a batch's records. Accepts only what walship itself writes (put, delete, delete
// range, single delete, log data) in the default column family, so a malformed or foreign
// batch from a peer is refused before it reaches the WAL. Optionally collects the ops.
class BatchChecker : public rocksdb::WriteBatch::Handler {
 public:
  explicit BatchChecker(std::vector<WriteOp>* ops) : ops_(ops) {}

  rocksdb::Status PutCF(uint32_t cf, const rocksdb::Slice& key,
                        const rocksdb::Slice& value) override {
    return Record(cf, OpType::kPut, key, value);
  }
  rocksdb::Status DeleteCF(uint32_t cf, const rocksdb::Slice& key) override {
    return Record(cf, OpType::kDelete, key, rocksdb::Slice());
  }
  rocksdb::Status SingleDeleteCF(uint32_t cf, const rocksdb::Slice& key) override {
    return Record(cf, OpType::kDelete, key, rocksdb::Slice());
  }
  rocksdb::Status DeleteRangeCF(uint32_t cf, const rocksdb::Slice& begin,
                                const rocksdb::Slice& end) override {
    return Record(cf, OpType::kDeleteRange, begin, end);
  }
  rocksdb::Status MergeCF(uint32_t, const rocksdb::Slice&, const rocksdb::Slice&) override {
    return rocksdb::Status::Corruption("merge records are not used by walship");
  }
  rocksdb::Status PutBlobIndexCF(uint32_t, const rocksdb::Slice&,
                                 const rocksdb::Slice&) override {
    return rocksdb::Status::Corruption("blob index records are not used by walship");
  }
  void LogData(const rocksdb::Slice&) override {}
  // RocksDB asserts that these markers' handlers succeed (write_batch.cc, and Debian's
  // RocksDB is built with assertions): refusing one there would abort the process on a
  // peer's bytes. So they succeed, note the refusal and stop the walk (Continue).
  rocksdb::Status MarkBeginPrepare(bool) override { return RefuseTwoPhase(); }
  rocksdb::Status MarkEndPrepare(const rocksdb::Slice&) override { return RefuseTwoPhase(); }
  rocksdb::Status MarkCommit(const rocksdb::Slice&) override { return RefuseTwoPhase(); }
  rocksdb::Status MarkRollback(const rocksdb::Slice&) override { return RefuseTwoPhase(); }
  rocksdb::Status MarkNoop(bool) override { return rocksdb::Status::OK(); }
  bool Continue() override { return refusal_.empty(); }

  uint64_t records() const { return records_; }
  // Why the walk stopped early, or "".
  const std::string& refusal() const { return refusal_; }

 private:
  rocksdb::Status Record(uint32_t cf, OpType type, const rocksdb::Slice& a,
                         const rocksdb::Slice& b) {
    if (cf != 0) {
      return rocksdb::Status::Corruption(
          absl::StrCat("record for column family ", cf, "; walship uses only the default"));
    }
    ++records_;
    if (ops_ != nullptr) ops_->push_back(WriteOp{type, a.ToString(), b.ToString()});
    return rocksdb::Status::OK();
  }

  rocksdb::Status RefuseTwoPhase() {
    refusal_ = "two-phase-commit records are not allowed";
    return rocksdb::Status::OK();
  }

  std::vector<WriteOp>* ops_;
  uint64_t records_ = 0;
  std::string refusal_;
};

// Checks a batch's header against its first_seq/count.
absl::Status CheckHeader(const Batch& batch) {
  if (batch.data.size() < kBatchHeaderBytes) {
    return absl::DataLossError(absl::StrCat("batch at seq ", batch.first_seq, " has ",
                                            batch.data.size(), " bytes, less than its header"));
  }
  uint64_t header_seq = DecodeFixed64(batch.data.data());
  uint32_t header_count = DecodeFixed32(batch.data.data() + 8);
  if (header_count != batch.count || header_seq != batch.first_seq) {
    return absl::DataLossError(absl::StrCat("batch header says seq ", header_seq, " count ",
                                            header_count, " but it was sent as seq ",
                                            batch.first_seq, " count ", batch.count));
  }
  return absl::OkStatus();
}

// Reads a varint32 at `*p` (before `end`), advancing `*p`; false when it runs past `end`.
bool GetVarint32(const char** p, const char* end, uint32_t* value) {
  uint32_t result = 0;
  for (uint32_t shift = 0; shift <= 28 && *p < end; shift += 7) {
    uint32_t byte = static_cast<unsigned char>(*(*p)++);
    result |= (byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *value = result;
      return true;
    }
  }
  return false;
}

// Reads a length-prefixed string into `out`; false when it runs past `end`.
bool GetLengthPrefixed(const char** p, const char* end, std::string_view* out) {
  uint32_t n = 0;
  if (!GetVarint32(p, end, &n) || static_cast<size_t>(end - *p) < n) return false;
  *out = std::string_view(*p, n);
  *p += n;
  return true;
}

// Checks the record framing of a batch's bytes (after its 12-byte header) and that every
// record is of a type walship writes: put (0x01), delete (0x00), single delete (0x07),
// range delete (0x0F, begin <= end), log data (0x03) and no-op (0x0D), all in the default
// column family.
// It runs before RocksDB's own walk (WriteBatch::Iterate), which asserts on some malformed
// records of other types (a commit with an empty timestamp, say) instead of returning an
// error: with Debian's assertions on, a peer's bytes could abort the process.
absl::Status CheckRecordTypes(const std::string& data) {
  const char* p = data.data() + kBatchHeaderBytes;
  const char* end = data.data() + data.size();
  while (p < end) {
    unsigned char tag = static_cast<unsigned char>(*p++);
    int strings = 0;
    switch (tag) {
      case 0x01: strings = 2; break;        // put: key, value
      case 0x00: case 0x07: strings = 1; break;  // delete, single delete: key
      case 0x0F: strings = 2; break;        // range delete: begin, end
      case 0x03: strings = 1; break;        // log data: blob
      case 0x0D: strings = 0; break;        // no-op
      default:
        return absl::DataLossError(absl::StrCat(
            "record of type ", static_cast<int>(tag), " at byte ", p - 1 - data.data(),
            ": walship writes only puts, deletes, range deletes and log data in the default "
            "column family"));
    }
    std::string_view fields[2];
    for (int i = 0; i < strings; ++i) {
      if (!GetLengthPrefixed(&p, end, &fields[i])) {
        return absl::DataLossError(absl::StrCat("record of type ", static_cast<int>(tag),
                                                " runs past the end of the batch"));
      }
    }
    // RocksDB refuses such a range only when inserting it into the memtable, after the batch
    // is in the WAL and has consumed its sequence numbers: caught here, before anything.
    if (tag == 0x0F && fields[0] > fields[1]) {
      return absl::DataLossError("a range delete whose end key sorts before its begin key");
    }
  }
  return absl::OkStatus();
}

// Walks the records of `wb` (whose header was checked) and counts them against `count`.
absl::Status CheckRecords(const rocksdb::WriteBatch& wb, SequenceNumber first_seq,
                          uint64_t count, std::vector<WriteOp>* ops) {
  if (absl::Status s = CheckRecordTypes(wb.Data()); !s.ok()) {
    return absl::DataLossError(absl::StrCat("batch at seq ", first_seq, ": ", s.message()));
  }
  BatchChecker checker(ops);
  rocksdb::Status s = wb.Iterate(&checker);
  if (!s.ok()) {
    return absl::DataLossError(
        absl::StrCat("batch at seq ", first_seq, " is malformed: ", s.ToString()));
  }
  if (!checker.refusal().empty()) {
    return absl::DataLossError(
        absl::StrCat("batch at seq ", first_seq, " is refused: ", checker.refusal()));
  }
  if (checker.records() != count) {
    return absl::DataLossError(absl::StrCat("batch at seq ", first_seq, " holds ",
                                            checker.records(), " records, header says ",
                                            count));
  }
  return absl::OkStatus();
}

// Splits one WAL record back into the writes it joined. Every batch a walship leader writes
// begins with its write-time record, and a follower applies the batches of a message joined
// under one header (one WAL record, one write) with those records kept in place: so each
// write-time record after the first one starts the next of the leader's batches, and a
// follower's WAL serves the leader's batch boundaries as the leader's own does. A record
// with at most one write time (a leader's own writes) comes back whole, without a copy.
// Unknown or malformed framing also comes back whole (the apply path refuses those).
std::vector<Batch> SplitAtWriteTimes(Batch batch) {
  const std::string& d = batch.data;
  const char* begin = d.data();
  const char* p = begin + kBatchHeaderBytes;
  const char* end = begin + d.size();
  std::vector<size_t> starts;  // offsets of the records that start a part
  std::vector<uint64_t> counts(1, 0);
  bool any_record = false;
  while (p < end) {
    const char* record = p;
    unsigned char tag = static_cast<unsigned char>(*p++);
    int strings = 0;
    bool consumes = true;
    switch (tag) {
      case 0x01: case 0x0F: strings = 2; break;
      case 0x00: case 0x07: strings = 1; break;
      case 0x03: strings = 1; consumes = false; break;
      case 0x0D: consumes = false; break;
      default: return {std::move(batch)};
    }
    std::string_view fields[2];
    for (int i = 0; i < strings; ++i) {
      if (!GetLengthPrefixed(&p, end, &fields[i])) return {std::move(batch)};
    }
    bool write_time = tag == 0x03 && fields[0].size() == kWriteTimeBlobBytes &&
                      std::memcmp(fields[0].data(), kWriteTimeTag, 4) == 0;
    if (write_time && any_record) {
      starts.push_back(static_cast<size_t>(record - begin));
      counts.push_back(0);
    }
    any_record = true;
    if (consumes) ++counts.back();
  }
  if (starts.empty()) return {std::move(batch)};
  starts.insert(starts.begin(), kBatchHeaderBytes);
  starts.push_back(d.size());
  std::vector<Batch> parts;
  SequenceNumber seq = batch.first_seq;
  for (size_t i = 0; i + 1 < starts.size(); ++i) {
    Batch part;
    part.first_seq = seq;
    part.count = counts[i];
    part.data.reserve(kBatchHeaderBytes + starts[i + 1] - starts[i]);
    part.data.resize(kBatchHeaderBytes);
    EncodeFixed64(part.data.data(), seq);
    EncodeFixed32(part.data.data() + 8, static_cast<uint32_t>(part.count));
    part.data.append(d, starts[i], starts[i + 1] - starts[i]);
    seq += part.count;
    parts.push_back(std::move(part));
  }
  return parts;
}

class WalCursorImpl final : public WalCursor {
 public:
  WalCursorImpl(rocksdb::DB* db, SequenceNumber from_seq) : db_(db), next_seq_(from_seq) {}

  SequenceNumber next_seq() const override { return next_seq_; }

  absl::StatusOr<std::optional<Batch>> Next() override {
    if (!parts_.empty()) {  // the rest of a record that joined several batches
      Batch part = std::move(parts_.front());
      parts_.pop_front();
      next_seq_ = part.next_seq();
      return part;
    }
    if (iter_ != nullptr) {
      // iter_ was valid once (we never keep one that was not), so Next() is safe: it
      // advances past the batch we returned, or picks up writes appended since the end.
      iter_->Next();
      if (!iter_->Valid()) {
        rocksdb::Status s = iter_->status();
        iter_.reset();
        // TryAgain: the WAL switched files; a new iterator is needed. OK at the end of the
        // log: nothing new, unless the latest sequence says otherwise (then reopen).
        if (!s.ok() && !s.IsTryAgain()) return FromRocks(s);
        if (db_->GetLatestSequenceNumber() < next_seq_) return std::nullopt;
      }
    }
    if (iter_ == nullptr) {
      SequenceNumber latest = db_->GetLatestSequenceNumber();
      if (next_seq_ > latest + 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "WAL position ", next_seq_, " is beyond the end of the log (latest ", latest, ")"));
      }
      if (next_seq_ == latest + 1) return std::nullopt;
      std::unique_ptr<rocksdb::TransactionLogIterator> it;
      rocksdb::Status s = db_->GetUpdatesSince(next_seq_, &it);
      if (!s.ok()) return FromRocks(s);
      if (!it->Valid()) {
        s = it->status();
        if (s.IsTryAgain()) return std::nullopt;  // raced with a WAL switch; retry later
        if (!s.ok()) return FromRocks(s);
        return Gap(0);  // the log holds nothing at or after next_seq_ though latest >= it
      }
      iter_ = std::move(it);
    }
    return TakeCurrent();
  }

 private:
  // Examines the iterator's current batch: returns it if it starts at next_seq_, skips empty
  // batches and batches that end before next_seq_, and reports anything else.
  absl::StatusOr<std::optional<Batch>> TakeCurrent() {
    while (true) {
      WALSHIP_CHECK(iter_->Valid());
      rocksdb::BatchResult br = iter_->GetBatch();
      SequenceNumber seq = br.sequence;
      uint64_t count = br.writeBatchPtr->Count();
      if (count != 0) {
        if (seq > next_seq_) {
          iter_.reset();
          return Gap(seq);
        }
        if (seq + count > next_seq_) {
          // A follower's record may join several of the leader's batches: split it, and
          // serve the part that starts at next_seq_ and then the parts after it.
          std::vector<Batch> parts =
              SplitAtWriteTimes(Batch{seq, count, br.writeBatchPtr->Data()});
          size_t at = 0;
          while (at < parts.size() && parts[at].first_seq < next_seq_) ++at;
          if (at == parts.size() || parts[at].first_seq != next_seq_) {
            iter_.reset();
            return absl::InvalidArgumentError(
                absl::StrCat("WAL position ", next_seq_, " is inside the batch [", seq, ", ",
                             seq + count, "); positions must be batch boundaries"));
          }
          for (size_t i = at + 1; i < parts.size(); ++i) {
            if (parts[i].count > 0) parts_.push_back(std::move(parts[i]));
          }
          Batch batch = std::move(parts[at]);
          next_seq_ = batch.next_seq();
          return batch;
        }
      }
      iter_->Next();
      if (!iter_->Valid()) {
        rocksdb::Status s = iter_->status();
        iter_.reset();
        if (!s.ok() && !s.IsTryAgain()) return FromRocks(s);
        return std::nullopt;
      }
    }
  }

  absl::Status Gap(SequenceNumber found_seq) const {
    return absl::OutOfRangeError(absl::StrCat(
        "WAL gap: position ", next_seq_, " is no longer in the WAL",
        found_seq != 0 ? absl::StrCat(" (oldest batch found starts at ", found_seq, ")") : "",
        "; the reader must be re-seeded from a checkpoint"));
  }

  rocksdb::DB* db_;
  SequenceNumber next_seq_;
  std::unique_ptr<rocksdb::TransactionLogIterator> iter_;  // null or was valid once
  std::deque<Batch> parts_;  // the parts of iter_'s record not yet returned, in order
};

// Records the background error that stops RocksDB's writes, and its end.
//
// Thread safety: RocksDB calls it from its background threads; Get() from any thread.
class StorageErrorListener final : public rocksdb::EventListener {
 public:
  void OnBackgroundError(rocksdb::BackgroundErrorReason reason, rocksdb::Status* error) override {
    if (error == nullptr || error->ok()) return;
    absl::MutexLock lock(&mu_);
    error_ = absl::StrCat(ReasonName(reason), ": ", error->ToString());
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

 private:
  static const char* ReasonName(rocksdb::BackgroundErrorReason reason) {
    switch (reason) {
      case rocksdb::BackgroundErrorReason::kFlush: return "flushing a memtable";
      case rocksdb::BackgroundErrorReason::kCompaction: return "compacting";
      case rocksdb::BackgroundErrorReason::kWriteCallback: return "writing the WAL";
      case rocksdb::BackgroundErrorReason::kMemTable: return "writing a memtable";
      case rocksdb::BackgroundErrorReason::kManifestWrite: return "writing the manifest";
      case rocksdb::BackgroundErrorReason::kFlushNoWAL: return "flushing a memtable";
      case rocksdb::BackgroundErrorReason::kManifestWriteNoWAL: return "writing the manifest";
    }
    return "in the background";
  }

  mutable absl::Mutex mu_;
  std::string error_ ABSL_GUARDED_BY(mu_);
};

class EngineImpl final : public Engine {
 public:
  EngineImpl(std::unique_ptr<rocksdb::DB> db, uint64_t wal_retention_bytes,
             std::shared_ptr<StorageErrorListener> errors)
      : db_(std::move(db)),
        wal_retention_bytes_(wal_retention_bytes),
        errors_(std::move(errors)) {}
  ~EngineImpl() override {
    rocksdb::Status s = db_->Close();
    (void)s;  // nothing more to do on close failure; the WAL already holds every write
  }

  absl::StatusOr<Batch> Write(absl::Span<const WriteOp> ops,
                              const WriteOptions& options) override {
    if (options.disable_wal) {
      return absl::InvalidArgumentError(
          "writes without the WAL are refused: they would leave a hole in the replication log");
    }
    if (ops.empty()) return absl::InvalidArgumentError("a write needs at least one op");
    rocksdb::WriteBatch wb;
    if (options.write_time_us > 0) {
      char blob[kWriteTimeBlobBytes];
      std::memcpy(blob, kWriteTimeTag, 4);
      EncodeFixed64(blob + 4, static_cast<uint64_t>(options.write_time_us));
      rocksdb::Status s = wb.PutLogData(rocksdb::Slice(blob, sizeof blob));
      if (!s.ok()) return FromRocks(s);
    }
    for (const WriteOp& op : ops) {
      rocksdb::Status s;
      switch (op.type) {
        case OpType::kPut: s = wb.Put(op.key, op.value); break;
        case OpType::kDelete: s = wb.Delete(op.key); break;
        case OpType::kDeleteRange: s = wb.DeleteRange(op.key, op.value); break;
      }
      if (!s.ok()) return FromRocks(s);
    }
    SequenceNumber before = db_->GetLatestSequenceNumber();
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
      return absl::FailedPreconditionError(absl::StrCat(
          "batch starts at seq ", batch.first_seq, " but this database ends at ", latest,
          "; only a batch starting at ", latest + 1, " may be applied"));
    }
    WALSHIP_RETURN_IF_ERROR(CheckHeader(batch));
    // The bytes move into the WriteBatch that is checked and then written: no copies.
    rocksdb::WriteBatch wb(std::move(batch.data));
    WALSHIP_RETURN_IF_ERROR(CheckRecords(wb, batch.first_seq, batch.count, nullptr));
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
    return std::unique_ptr<WalCursor>(new WalCursorImpl(db_.get(), from_seq));
  }

  absl::StatusOr<SequenceNumber> CreateCheckpoint(const std::string& dir) override {
    rocksdb::Checkpoint* raw = nullptr;
    rocksdb::Status s = rocksdb::Checkpoint::Create(db_.get(), &raw);
    if (!s.ok()) return FromRocks(s);
    std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
    s = checkpoint->CreateCheckpoint(dir);
    if (!s.ok()) return FromRocks(s);
    // The figure CreateCheckpoint could report is a lower bound while writes go on; the
    // opened copy's own latest sequence is exact.
    rocksdb::Options options;
    rocksdb::DB* ro = nullptr;
    s = rocksdb::DB::OpenForReadOnly(options, dir, &ro);
    if (!s.ok()) return FromRocks(s);
    std::unique_ptr<rocksdb::DB> copy(ro);
    return copy->GetLatestSequenceNumber();
  }

  absl::Status IngestExternalFiles(const std::vector<std::string>&) override {
    return absl::FailedPreconditionError(
        "file ingestion is refused: it changes data without a WAL record, so followers "
        "would never receive it");
  }

  absl::Status Flush() override {
    rocksdb::FlushOptions fo;
    fo.wait = true;
    return FromRocks(db_->Flush(fo));
  }

  uint64_t ApproximateSizeBytes() override {
    uint64_t sst = 0, mem = 0;
    db_->GetIntProperty("rocksdb.total-sst-files-size", &sst);
    db_->GetIntProperty("rocksdb.cur-size-all-mem-tables", &mem);
    return sst + mem;
  }

  absl::Status SyncWal() override { return FromRocks(db_->SyncWAL()); }

  absl::Status StorageError() override {
    std::string error = errors_->Get();
    if (error.empty()) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat("the storage failed ", error,
                                               "; RocksDB refuses writes until it recovers"));
  }

  absl::Status Resume() override {
    if (errors_->Get().empty()) return absl::OkStatus();
    rocksdb::Status s = db_->Resume();
    if (s.IsBusy()) {
      return absl::UnavailableError(absl::StrCat(
          "RocksDB is recovering by itself from: ", errors_->Get()));
    }
    if (!s.ok()) return FromRocks(s);
    errors_->Clear();
    return absl::OkStatus();
  }

  absl::StatusOr<WalTrim> TrimWalArchive() override {
    WalTrim trim;
    if (wal_retention_bytes_ == 0) return trim;
    // Files enter the archive by rename, which changes its mtime: while that stays, the last
    // trim's answer holds and the WAL files need not be listed again.
    std::error_code ec;
    auto archive_mtime = std::filesystem::last_write_time(db_->GetName() + "/archive", ec);
    if (!ec && trimmed_archive_mtime_.has_value() && *trimmed_archive_mtime_ == archive_mtime) {
      trim.archived_bytes = trimmed_archive_bytes_;
      return trim;
    }
    rocksdb::VectorLogPtr files;
    rocksdb::Status s = db_->GetSortedWalFiles(files);  // oldest first
    if (!s.ok()) return FromRocks(s);
    for (const auto& f : files) {
      if (f->Type() == rocksdb::kArchivedLogFile) trim.archived_bytes += f->SizeFileBytes();
    }
    for (const auto& f : files) {
      if (trim.archived_bytes <= wal_retention_bytes_) break;
      if (f->Type() != rocksdb::kArchivedLogFile) continue;
      s = db_->DeleteFile(f->PathName());
      if (!s.ok() && std::filesystem::exists(db_->GetName() + f->PathName())) {
        return absl::InternalError(absl::StrCat("deleting archived WAL file ", f->PathName(),
                                                ": ", s.ToString(), " (", trim.deleted_files,
                                                " files deleted before it)"));
      }
      // Deleted, or already gone (RocksDB's own purge may have run meanwhile).
      trim.archived_bytes -= f->SizeFileBytes();
      trim.deleted_bytes += f->SizeFileBytes();
      ++trim.deleted_files;
    }
    // Our own deletions changed the mtime too: take it after them.
    archive_mtime = std::filesystem::last_write_time(db_->GetName() + "/archive", ec);
    if (!ec) {
      trimmed_archive_mtime_ = archive_mtime;
      trimmed_archive_bytes_ = trim.archived_bytes;
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

  std::unique_ptr<rocksdb::DB> db_;
  const uint64_t wal_retention_bytes_;
  std::shared_ptr<StorageErrorListener> errors_;
  // The archive's mtime when TrimWalArchive last listed it, and what it held then.
  std::optional<std::filesystem::file_time_type> trimmed_archive_mtime_;
  uint64_t trimmed_archive_bytes_ = 0;
};

}  // namespace

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
  ro.WAL_size_limit_MB = (options.wal_retention_bytes + (1 << 20) - 1) >> 20;
  ro.WAL_ttl_seconds = options.wal_retention_seconds;
  ro.manual_wal_flush = false;
  ro.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  // Pipelined and unordered writes would break "one write, one WAL record, in order".
  ro.enable_pipelined_write = false;
  ro.unordered_write = false;
  ro.two_write_queues = false;
  ro.keep_log_file_num = 4;
  ro.max_background_jobs = 2;
  auto errors = std::make_shared<StorageErrorListener>();
  ro.listeners.push_back(errors);
  if (options.env != nullptr) ro.env = options.env;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(ro, options.path, &raw);
  if (!s.ok()) {
    if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
      return absl::FailedPreconditionError(absl::StrCat(
          "database ", options.path, " is in use by another process: ", s.ToString()));
    }
    return FromRocks(s);
  }
  return std::unique_ptr<Engine>(
      new EngineImpl(std::unique_ptr<rocksdb::DB>(raw), options.wal_retention_bytes,
                     std::move(errors)));
}

absl::StatusOr<Batch> ConcatBatches(absl::Span<const Batch* const> batches) {
  if (batches.empty()) return absl::InvalidArgumentError("no batches to join");
  if (batches.size() == 1) return *batches[0];
  Batch out;
  out.first_seq = batches[0]->first_seq;
  size_t bytes = kBatchHeaderBytes;
  for (const Batch* b : batches) {
    if (b->data.size() < kBatchHeaderBytes) {
      return absl::InvalidArgumentError(absl::StrCat("batch at seq ", b->first_seq,
                                                     " is shorter than its header"));
    }
    bytes += b->data.size() - kBatchHeaderBytes;
  }
  out.data.reserve(bytes);
  out.data.resize(kBatchHeaderBytes);
  for (const Batch* b : batches) {
    if (b->first_seq != out.first_seq + out.count) {
      return absl::InvalidArgumentError(absl::StrCat("batch at seq ", b->first_seq,
                                                     " does not follow seq ",
                                                     out.first_seq + out.count - 1));
    }
    out.count += b->count;
    out.data.append(b->data, kBatchHeaderBytes, std::string::npos);
  }
  if (out.count > UINT32_MAX) return absl::InvalidArgumentError("joined batch too large");
  EncodeFixed64(out.data.data(), out.first_seq);
  EncodeFixed32(out.data.data() + 8, static_cast<uint32_t>(out.count));
  return out;
}

absl::StatusOr<Batch> ConcatBatches(absl::Span<const Batch> batches) {
  std::vector<const Batch*> ptrs;
  ptrs.reserve(batches.size());
  for (const Batch& b : batches) ptrs.push_back(&b);
  return ConcatBatches(absl::MakeConstSpan(ptrs));
}

int64_t BatchWriteTime(const Batch& batch) {
  const std::string& d = batch.data;
  constexpr size_t kAt = kBatchHeaderBytes;
  if (d.size() < kAt + 2 + kWriteTimeBlobBytes || d[kAt] != kLogDataType ||
      d[kAt + 1] != static_cast<char>(kWriteTimeBlobBytes) ||
      std::memcmp(d.data() + kAt + 2, kWriteTimeTag, 4) != 0) {
    return 0;
  }
  return static_cast<int64_t>(DecodeFixed64(d.data() + kAt + 2 + 4));
}

absl::StatusOr<std::vector<WriteOp>> DecodeBatch(const Batch& batch) {
  std::vector<WriteOp> ops;
  WALSHIP_RETURN_IF_ERROR(CheckHeader(batch));
  WALSHIP_RETURN_IF_ERROR(CheckRecords(rocksdb::WriteBatch(batch.data), batch.first_seq,
                                       batch.count, &ops));
  return ops;
}

}  // namespace walship::engine
