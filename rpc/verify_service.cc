#include "rpc/verify_service.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "rpc/client_service.h"
#include "rpc/convert.h"
#include "rpc/node.h"

namespace walship::rpc {
namespace {

// SHA-256 over a range's keys and values, each preceded by its length (8 bytes, little end
// first), so that no two different ranges hash the same bytes.
class RangeHash {
 public:
  RangeHash() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~RangeHash() { EVP_MD_CTX_free(ctx_); }
  RangeHash(const RangeHash&) = delete;
  RangeHash& operator=(const RangeHash&) = delete;

  void Add(const std::string& key, const std::string& value) {
    Bytes(key);
    Bytes(value);
    ++keys_;
  }
  // The range's sum; starts the next range.
  RangeSum Finish(std::string last_key) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, md, &n);
    RangeSum sum{std::move(last_key), keys_, std::string(reinterpret_cast<char*>(md), 8)};
    EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
    keys_ = 0;
    return sum;
  }
  uint64_t keys() const { return keys_; }

 private:
  void Bytes(const std::string& s) {
    unsigned char len[8];
    uint64_t n = s.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    EVP_DigestUpdate(ctx_, len, sizeof len);
    EVP_DigestUpdate(ctx_, s.data(), s.size());
  }
  EVP_MD_CTX* ctx_;
  uint64_t keys_ = 0;
};

uint64_t NewId() {
  uint64_t id = 0;
  while (id == 0) RAND_bytes(reinterpret_cast<unsigned char*>(&id), sizeof id);
  return id;
}

}  // namespace

absl::StatusOr<std::vector<RangeSum>> ChecksumRanges(engine::Engine& engine,
                                                     const engine::ReadOptions& read,
                                                     const std::vector<std::string>& bounds,
                                                     uint32_t range_keys) {
  size_t key_bytes = 0;
  for (const std::string& b : bounds) key_bytes += b.size();
  if (bounds.size() > kMaxRanges || key_bytes > kMaxRangeKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("at most ", kMaxRanges, " ranges of ",
                                                   kMaxRangeKeyBytes, " bytes of keys"));
  }
  std::vector<RangeSum> out;
  RangeHash hash;
  size_t bound = 0;  // with bounds: the range being summed
  std::string last;
  engine::ScanOptions scan;
  scan.limit = 4096;
  scan.max_bytes = 4 << 20;
  while (true) {
    auto page = engine.Scan(scan, read);
    if (!page.ok()) return page.status();
    for (const engine::KeyValue& kv : *page) {
      if (!bounds.empty()) {
        // Ranges whose bound this key is past are complete (empty ones too).
        while (bound < bounds.size() && kv.key > bounds[bound]) {
          out.push_back(hash.Finish(bounds[bound]));
          ++bound;
        }
      }
      hash.Add(kv.key, kv.value);
      last = kv.key;
      if (bounds.empty() && hash.keys() == range_keys) {
        out.push_back(hash.Finish(kv.key));
        key_bytes += kv.key.size();
        if (out.size() > kMaxRanges || key_bytes > kMaxRangeKeyBytes) {
          return absl::InvalidArgumentError(absl::StrCat(
              "more than ", kMaxRanges, " ranges (or ", kMaxRangeKeyBytes,
              " bytes of their last keys) at ", range_keys, " keys each: give a larger "
              "--range-keys"));
        }
      }
    }
    if (page->empty()) break;
    scan.start = page->back().key + std::string(1, '\0');
  }
  if (!bounds.empty()) {
    for (; bound < bounds.size(); ++bound) out.push_back(hash.Finish(bounds[bound]));
    out.push_back(hash.Finish(""));  // the open range after the last bound
  } else if (hash.keys() > 0 || out.empty()) {
    out.push_back(hash.Finish(last));
  }
  return out;
}

VerifyService::VerifyService(Node& node, ClientService& clients)
    : node_(node), clients_(clients), tasks_(*this) {}

// Destroyed with its ClientService (the node stops): the held writes go with it, unwritten
// and unanswered as every queued write of a stopping node.
VerifyService::~VerifyService() = default;

void VerifyService::taskFailed(kj::Exception&& e) {
  spdlog::warn("verify: {}", e.getDescription().cStr());
}

kj::Promise<void> VerifyService::Serve(schema::VerifyRequest::Reader request,
                                       schema::VerifyReply::Builder reply) {
  DropIdle();
  ToCapnp(absl::OkStatus(), reply.initError());
  switch (request.which()) {
    case schema::VerifyRequest::HOLD: return Hold(request.getHold(), reply);
    case schema::VerifyRequest::SNAPSHOT: return SnapshotAt(request.getSnapshot(), reply);
    case schema::VerifyRequest::RESUME:
      Resume(request.getResume());
      return kj::READY_NOW;
    case schema::VerifyRequest::CHECKSUM: return Checksum(request.getChecksum(), reply);
    case schema::VerifyRequest::DROP:
      sessions_.erase(request.getDrop());
      return kj::READY_NOW;
  }
  ToCapnp(absl::UnimplementedError("a verify request this node does not know"),
          reply.initError());
  return kj::READY_NOW;
}

void VerifyService::DropIdle() {
  int64_t now = node_.MonoNowUs();
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    it = now - it->second.last_used_us > kIdleUs ? sessions_.erase(it) : std::next(it);
  }
}

absl::Status VerifyService::Keep(uint64_t id, Session session) {
  if (sessions_.size() >= kMaxSessions && sessions_.count(id) == 0) {
    return absl::UnavailableError(absl::StrCat("this node keeps ", kMaxSessions,
                                               " verify snapshots already; retry later"));
  }
  session.last_used_us = node_.MonoNowUs();
  sessions_[id] = std::move(session);
  return absl::OkStatus();
}

kj::Promise<bool> VerifyService::WriterIdle(uint32_t left_ms) {
  if (!clients_.writer_busy()) return true;
  if (left_ms == 0) return false;
  return node_.io().provider->getTimer().afterDelay(1 * kj::MILLISECONDS).then(
      [this, left_ms]() { return WriterIdle(left_ms - 1); });
}

kj::Promise<void> VerifyService::Hold(uint32_t hold_ms, schema::VerifyReply::Builder reply) {
  absl::Status refused = node_.role().WriteRefusal();
  if (refused.ok() && std::string(node_.role().name()) != "leader") {
    refused = absl::FailedPreconditionError("verify starts at the leader");
  }
  if (refused.ok() && holding_ != 0) {
    refused = absl::UnavailableError("another verify holds the writes now; retry later");
  }
  if (!refused.ok()) {
    ToCapnp(refused, reply.initError());
    return kj::READY_NOW;
  }
  uint64_t id = NewId();
  holding_ = id;
  clients_.HoldWrites(true);
  // The hold ends by itself, so a verify that went away never stops the writes for long.
  hold_ms = std::clamp<uint32_t>(hold_ms, 1, kMaxHoldMs);
  tasks_.add(node_.io().provider->getTimer().afterDelay(hold_ms * kj::MILLISECONDS).then(
      [this, id, hold_ms]() {
        if (holding_ != id) return;
        spdlog::warn("verify: writes held for {} ms, the most asked; letting them go on",
                     hold_ms);
        Resume(id);
      }));
  // A group being written when the hold began lands first: the snapshot holds it.
  return WriterIdle(1000).then([this, id, reply](bool idle) mutable {
    absl::Status s = holding_ != id ? absl::UnavailableError("the hold ended before it began")
                     : !idle        ? absl::UnavailableError("a write group did not finish in 1 s")
                                    : absl::OkStatus();
    ClientService::ReadAt at;
    if (s.ok()) {
      at = clients_.TakeSnapshot();
      s = Keep(id, Session{at.snapshot, at.seq, 0});
    }
    if (!s.ok()) {
      Resume(id);
      ToCapnp(s, reply.initError());
      return;
    }
    reply.setId(id);
    reply.setSeq(at.seq);
    reply.setEpoch(at.epoch);
  });
}

void VerifyService::Resume(uint64_t id) {
  if (holding_ == 0 || holding_ != id) return;
  holding_ = 0;
  clients_.HoldWrites(false);
}

kj::Promise<void> VerifyService::SnapshotAt(schema::VerifyAt::Reader at,
                                            schema::VerifyReply::Builder reply) {
  uint64_t id = at.getId();
  engine::SequenceNumber seq = at.getSeq();
  replication::ReadNeeds needs;
  needs.after = replication::ReadToken{at.getEpoch(), seq};
  return clients_.reads()
      .Wait(needs, std::min<uint32_t>(at.getWaitMs(), kMaxHoldMs))
      .then([this, id, seq, reply](absl::Status reached) mutable {
        if (reached.ok()) {
          ClientService::ReadAt now = clients_.TakeSnapshot();
          if (now.seq != seq) {
            reached = absl::FailedPreconditionError(absl::StrCat(
                "this node had applied up to seq ", now.seq, ", past ", seq,
                ", when its snapshot was taken: the leader's writes went on (its hold ended)"));
          } else {
            reached = Keep(id, Session{now.snapshot, now.seq, 0});
            reply.setSeq(now.seq);
            reply.setEpoch(now.epoch);
          }
        }
        ToCapnp(reached, reply.initError());
        reply.setId(id);
      });
}

kj::Promise<void> VerifyService::Checksum(schema::VerifyChecksum::Reader request,
                                          schema::VerifyReply::Builder reply) {
  auto it = sessions_.find(request.getId());
  if (it == sessions_.end()) {
    ToCapnp(absl::NotFoundError("no verify snapshot of this id here (dropped after 60 s "
                                "unused, or the node restarted)"),
            reply.initError());
    return kj::READY_NOW;
  }
  it->second.last_used_us = node_.MonoNowUs();
  std::vector<std::string> bounds;
  for (auto b : request.getBounds()) bounds.push_back(ToString(b));
  uint32_t range_keys = std::max<uint32_t>(request.getRangeKeys(), 1);
  reply.setSeq(it->second.seq);
  auto sum = node_.client_pool().Run(
      [e = &node_.engine(), snap = it->second.snapshot, bounds = std::move(bounds), range_keys]() {
        engine::ReadOptions read;
        read.snapshot = snap.get();
        return ChecksumRanges(*e, read, bounds, range_keys);
      });
  return sum.then([reply](absl::StatusOr<std::vector<RangeSum>> sums) mutable {
    ToCapnp(sums.status(), reply.initError());
    if (!sums.ok()) return;
    auto list = reply.initRanges(sums->size());
    for (size_t i = 0; i < sums->size(); ++i) {
      list[i].setLastKey(ToData((*sums)[i].last_key));
      list[i].setKeys((*sums)[i].keys);
      list[i].setDigest(ToData((*sums)[i].digest));
    }
  });
}

}  // namespace walship::rpc
