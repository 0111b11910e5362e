#include "tools/wal_show.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "tools/escape.h"

namespace walship::tools {

std::string FormatOp(const engine::WriteOp& op) {
  switch (op.type) {
    case engine::OpType::kPut: return absl::StrCat("put ", Escape(op.key), " ", Escape(op.value));
    case engine::OpType::kDelete: return absl::StrCat("del ", Escape(op.key));
    case engine::OpType::kDeleteRange:
      return absl::StrCat("delrange ", Escape(op.key), " ", Escape(op.value));
  }
  return "?";
}

nlohmann::json OpToJson(const engine::WriteOp& op) {
  nlohmann::json o = {{"op", op.type == engine::OpType::kPut      ? "put"
                             : op.type == engine::OpType::kDelete ? "del"
                                                                  : "delrange"},
                      {"key", Escape(op.key)}};
  if (op.type != engine::OpType::kDelete) {
    o[op.type == engine::OpType::kPut ? "value" : "end"] = Escape(op.value);
  }
  return o;
}

absl::StatusOr<std::string> FormatWalPage(const rpc::WalPage& page, uint64_t from, bool json) {
  nlohmann::json batches = nlohmann::json::array();
  std::string text;
  uint64_t next = from;
  for (const rpc::WalPage::Entry& e : page.batches) {
    const engine::Batch& b = e.batch;
    auto ops = engine::DecodeBatch(b);
    if (!ops.ok()) {
      return absl::DataLossError(absl::StrCat("the batch at seq ", b.first_seq,
                                              " does not decode: ", ops.status().message()));
    }
    int64_t written_us = engine::BatchWriteTime(b);
    next = b.next_seq();
    if (json) {
      nlohmann::json list = nlohmann::json::array();
      for (const engine::WriteOp& op : *ops) list.push_back(OpToJson(op));
      batches.push_back({{"first_seq", b.first_seq},
                         {"last_seq", b.last_seq()},
                         {"count", b.count},
                         {"epoch", e.epoch},
                         {"bytes", b.data.size()},
                         {"write_time_us", written_us},
                         {"ops", std::move(list)}});
      continue;
    }
    absl::StrAppend(&text, "batch seq ", b.first_seq, "-", b.last_seq(), ", epoch ",
                    e.epoch == 0 ? "unknown" : std::to_string(e.epoch), ", ", ops->size(),
                    ops->size() == 1 ? " op, " : " ops, ", b.data.size(), " bytes");
    if (written_us > 0) {
      absl::StrAppend(&text, ", written ",
                      absl::FormatTime("%Y-%m-%d %H:%M:%E6S UTC",
                                       absl::FromUnixMicros(written_us), absl::UTCTimeZone()));
    }
    absl::StrAppend(&text, "\n");
    for (const engine::WriteOp& op : *ops) absl::StrAppend(&text, "  ", FormatOp(op), "\n");
  }
  if (json) {
    nlohmann::json out = {{"from", from},
                          {"latest_seq", page.latest_seq},
                          {"next_seq", next},
                          {"batches", std::move(batches)}};
    return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  if (page.batches.empty()) {
    absl::StrAppend(&text, "no batches from seq ", from, ": the node's latest seq is ",
                    page.latest_seq, "\n");
  } else if (next <= page.latest_seq) {
    absl::StrAppend(&text, page.batches.size(), " batches; more from seq ", next,
                    " (the node's latest is ", page.latest_seq, "): --from ", next, "\n");
  } else {
    absl::StrAppend(&text, page.batches.size(),
                    page.batches.size() == 1 ? " batch" : " batches",
                    ", up to the node's latest seq ", page.latest_seq, "\n");
  }
  return text;
}

}  // namespace walship::tools
