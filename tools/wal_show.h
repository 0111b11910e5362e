// `walship wal show`: the batches a node's WAL holds from a position on, decoded, as the node
// would ship them to a follower (docs/cli.md). For debugging: what a write became, which
// epoch it was written under, where a follower's stream stands.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/types.h"
#include "rpc/client.h"

namespace walship::tools {

// One operation in the `write` command's input syntax, in the CLI's byte escapes:
// "put KEY VALUE", "del KEY", "delrange BEGIN END".
std::string FormatOp(const engine::WriteOp& op);
// The same as JSON: {"op": "put"|"del"|"delrange", "key", "value" (put) or "end" (delrange)}.
nlohmann::json OpToJson(const engine::WriteOp& op);

// `page` as read from `from`: a header line per batch (its sequence numbers, epoch, ops,
// bytes, write time) and its operations indented, then a line saying where to go on; or, with
// `json`, one JSON object ({"from", "latest_seq", "next_seq", "batches": [...]}, keys and
// values in the CLI's escapes). kDataLoss when a batch's bytes do not decode.
absl::StatusOr<std::string> FormatWalPage(const rpc::WalPage& page, uint64_t from, bool json);

}  // namespace walship::tools
