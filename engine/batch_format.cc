// The bytes of a RocksDB WriteBatch as walship writes, checks, joins and splits them.
#include "engine/batch_format.h"

#include <rocksdb/write_batch.h>

#include <cstring>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "engine/engine.h"
#include "engine/requests.h"

namespace walship::engine {
namespace {

// One record of a batch, as ForEachRecord finds it.
struct Record {
  size_t offset = 0;           // of its type byte in the batch's bytes
  unsigned char tag = 0;
  std::string_view fields[2];  // its length-prefixed strings (key, value; blob)
  bool consumes_seq = true;    // put, delete, range delete: one sequence number each
};

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

// Walks a batch's records. Accepts only what walship itself writes (put, delete, delete
// range, single delete, log data) in the default column family, and request records (puts
// into kRequestsColumnFamilyId, engine/requests.h), so a malformed or foreign batch from a
// peer is refused before it reaches the WAL. Optionally collects the ops (request records
// are not ops: they come after every op of their write).
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
    if (cf == kRequestsColumnFamilyId && type == OpType::kPut) {
      absl::Status s = CheckRequestRecord(a.ToStringView(), b.ToStringView());
      if (!s.ok()) return rocksdb::Status::Corruption(std::string(s.message()));
      ++records_;
      return rocksdb::Status::OK();
    }
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

// Walks the records of a batch's bytes (after its 12-byte header), calling `fn` for each.
// Only the record types walship writes are known: put (0x01), delete (0x00), single delete
// (0x07), range delete (0x0F), log data (0x03) and no-op (0x0D), all in the default column
// family, and a put into the requests column family (0x05, its id first); any other type,
// or a record that runs past the end, is kDataLoss.
template <typename Fn>
absl::Status ForEachRecord(const std::string& data, Fn&& fn) {
  const char* begin = data.data();
  const char* p = begin + kBatchHeaderBytes;
  const char* end = begin + data.size();
  while (p < end) {
    Record r;
    r.offset = static_cast<size_t>(p - begin);
    r.tag = static_cast<unsigned char>(*p++);
    int strings = 0;
    switch (r.tag) {
      case 0x01: case 0x0F: strings = 2; break;  // put: key, value; range delete: begin, end
      case 0x00: case 0x07: strings = 1; break;  // delete, single delete: key
      case 0x03: strings = 1; r.consumes_seq = false; break;  // log data: blob
      case 0x0D: r.consumes_seq = false; break;               // no-op
      case 0x05: {  // put into a column family: its id, key, value
        uint32_t cf = 0;
        if (!GetVarint32(&p, end, &cf) || cf != kRequestsColumnFamilyId) {
          return absl::DataLossError(absl::StrCat(
              "record at byte ", r.offset, " is for column family ", cf, "; walship writes "
              "only the default and its request ids (", kRequestsColumnFamilyId, ")"));
        }
        strings = 2;
        break;
      }
      default:
        return absl::DataLossError(absl::StrCat(
            "record of type ", static_cast<int>(r.tag), " at byte ", r.offset,
            ": walship writes only puts, deletes, range deletes and log data in the default "
            "column family"));
    }
    for (int i = 0; i < strings; ++i) {
      if (!GetLengthPrefixed(&p, end, &r.fields[i])) {
        return absl::DataLossError(absl::StrCat("record of type ", static_cast<int>(r.tag),
                                                " runs past the end of the batch"));
      }
    }
    fn(r);
  }
  return absl::OkStatus();
}

bool IsWriteTime(const Record& r) {
  return r.tag == 0x03 && r.fields[0].size() == kWriteTimeBlobBytes &&
         std::memcmp(r.fields[0].data(), kWriteTimeTag, 4) == 0;
}

// Checks the record framing and types of a batch (ForEachRecord) and that no range delete
// ends before it begins. It runs before RocksDB's own walk (WriteBatch::Iterate), which
// asserts on some malformed records of other types (a commit with an empty timestamp, say)
// instead of returning an error: with Debian's assertions on, a peer's bytes could abort the
// process. RocksDB refuses a reversed range only when inserting it into the memtable, after
// the batch is in the WAL and has consumed its sequence numbers: caught here, before anything.
absl::Status CheckRecordTypes(const std::string& data) {
  bool reversed = false;
  absl::Status s = ForEachRecord(data, [&](const Record& r) {
    reversed = reversed || (r.tag == 0x0F && r.fields[0] > r.fields[1]);
  });
  if (!s.ok()) return s;
  if (reversed) return absl::DataLossError("a range delete whose end key sorts before its begin key");
  return absl::OkStatus();
}

}  // namespace

std::string WriteTimeBlob(int64_t write_time_us) {
  std::string blob(kWriteTimeBlobBytes, '\0');
  std::memcpy(blob.data(), kWriteTimeTag, 4);
  EncodeFixed64(blob.data() + 4, static_cast<uint64_t>(write_time_us));
  return blob;
}

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

// Every batch a walship leader writes begins with its write-time record, and a follower
// applies the batches of a message joined under one header with those records kept in place:
// so each write-time record after the first record starts the next of the leader's batches.
std::vector<Batch> SplitAtWriteTimes(Batch batch) {
  std::vector<size_t> starts;  // offsets of the records that start a part
  std::vector<uint64_t> counts(1, 0);
  bool any_record = false;
  absl::Status walked = ForEachRecord(batch.data, [&](const Record& r) {
    if (IsWriteTime(r) && any_record) {
      starts.push_back(r.offset);
      counts.push_back(0);
    }
    any_record = true;
    if (r.consumes_seq) ++counts.back();
  });
  // Malformed framing comes back whole: the apply path refuses such bytes, and a cursor
  // reports positions inside them as inside a batch.
  if (!walked.ok() || starts.empty()) return {std::move(batch)};
  const std::string& d = batch.data;
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
