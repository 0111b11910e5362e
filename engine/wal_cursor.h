// The WAL cursor over RocksDB's own WAL iterator (engine/ only; WalCursor is in engine.h).
#pragma once

#include <rocksdb/db.h>

#include <memory>

#include "engine/engine.h"

namespace walship::engine {

// A cursor over `db`'s WAL (live and archived files) from `from_seq`, which should be a batch
// boundary. `db` must outlive it.
std::unique_ptr<WalCursor> NewRocksWalCursor(rocksdb::DB* db, SequenceNumber from_seq);

}  // namespace walship::engine
