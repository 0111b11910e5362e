#include "engine/wal_cursor.h"

#include <rocksdb/transaction_log.h>
#include <rocksdb/write_batch.h>

#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "engine/batch_format.h"
#include "engine/rocks_status.h"

namespace walship::engine {
namespace {

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
          std::vector<Batch> parts = SplitAtWriteTimes(Batch{seq, count, br.writeBatchPtr->Data()});
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

}  // namespace

std::unique_ptr<WalCursor> NewRocksWalCursor(rocksdb::DB* db, SequenceNumber from_seq) {
  return std::make_unique<WalCursorImpl>(db, from_seq);
}

}  // namespace walship::engine
