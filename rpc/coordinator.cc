#include "rpc/coordinator.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace walship::rpc {
namespace {

using json = nlohmann::json;

uint32_t CallTimeoutMs(const CoordinatorOptions& o) {
  return std::max<uint32_t>(100, o.lease_ttl_s * 1000 / 3);
}

}  // namespace

std::string EncodeLeaderValue(const std::string& node, const std::string& address,
                              const std::string& cluster) {
  return json{{"node", node}, {"address", address}, {"cluster", cluster}}.dump();
}

absl::StatusOr<replication::LeaderKey> DecodeLeaderValue(const std::string& value) {
  json j = json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.value("node", json()).is_string() ||
      !j.value("address", json()).is_string() || !j.value("cluster", json()).is_string()) {
    return absl::DataLossError(absl::StrCat(
        "the leader key holds ", value.substr(0, 100),
        ", not {\"node\", \"address\", \"cluster\"} as walship writes it"));
  }
  replication::LeaderKey k;
  k.node = j["node"].get<std::string>();
  k.address = j["address"].get<std::string>();
  k.cluster = j["cluster"].get<std::string>();
  return k;
}

std::string EncodeCandidacy(const std::string& node, const replication::LogPosition& p) {
  return json{{"node", node}, {"seq", p.seq}, {"epoch", p.epoch}, {"epoch_leader", p.leader}}
      .dump();
}

absl::StatusOr<replication::Candidacy> DecodeCandidacy(const std::string& value) {
  json j = json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.value("node", json()).is_string() ||
      !j.value("seq", json()).is_number_unsigned() ||
      !j.value("epoch", json()).is_number_unsigned() ||
      !j.value("epoch_leader", json()).is_string()) {
    return absl::DataLossError(absl::StrCat("a candidacy holds ", value.substr(0, 100),
                                            ", not {\"node\", \"seq\", \"epoch\", "
                                            "\"epoch_leader\"}"));
  }
  replication::Candidacy c;
  c.node = j["node"].get<std::string>();
  c.position.seq = j["seq"].get<uint64_t>();
  c.position.epoch = j["epoch"].get<uint64_t>();
  c.position.leader = j["epoch_leader"].get<std::string>();
  return c;
}

Coordinator::Coordinator(kj::AsyncIoContext& io, CoordinatorOptions options, std::string self,
                         std::string address, std::string cluster,
                         std::function<int64_t()> now_us)
    : io_(io),
      options_(std::move(options)),
      self_(std::move(self)),
      address_(std::move(address)),
      cluster_(std::move(cluster)),
      now_us_(std::move(now_us)),
      etcd_(io, options_.etcd, CallTimeoutMs(options_)),
      tasks_(*this) {}

Coordinator::~Coordinator() noexcept(false) = default;

void Coordinator::taskFailed(kj::Exception&& e) {
  spdlog::warn("coordinator task failed: {}", e.getDescription().cStr());
}

void Coordinator::Start() {
  spdlog::info("leadership through etcd at {} (keys under {}, lease time-to-live {} s)",
               absl::StrJoin(options_.etcd, ", "), options_.prefix, options_.lease_ttl_s);
  tasks_.add(LeaseLoop());
  tasks_.add(PollLoop());
}

void Coordinator::Notify() {
  if (listener_) listener_();
}

void Coordinator::NoteError(const absl::Status& s) {
  std::string e(s.message());
  if (e != error_) spdlog::warn("etcd: {}", e);
  error_ = std::move(e);
}

kj::Promise<void> Coordinator::LeaseLoop() {
  return RenewLease()
      .catch_([this](kj::Exception&& e) {
        NoteError(absl::InternalError(
            absl::StrCat("renewing the lease failed: ", e.getDescription().cStr())));
        return options_.poll_ms;
      })
      .then([this](uint32_t delay_ms) {
        return io_.provider->getTimer()
            .afterDelay(delay_ms * kj::MILLISECONDS)
            .then([this]() { return LeaseLoop(); });
      });
}

// The node's lease: granted when it has none, renewed a third of its time-to-live apart (a
// failed renewal is tried again a poll interval later).
kj::Promise<uint32_t> Coordinator::RenewLease() {
  const uint32_t renew_ms = options_.lease_ttl_s * 1000 / 3;
  int64_t sent = now_us_();
  if (lease_id_ == 0) {
    return etcd_.Grant(options_.lease_ttl_s).then([this, sent, renew_ms](
                                                      absl::StatusOr<EtcdLease> g) {
      if (!g.ok()) {
        NoteError(g.status());
        return options_.poll_ms;
      }
      lease_id_ = g->id;
      lease_.OnRenewed(sent, g->ttl_s);
      error_.clear();
      spdlog::info("etcd: lease {:x} granted ({} s)", lease_id_, g->ttl_s);
      Notify();
      return renew_ms;
    });
  }
  return etcd_.KeepAlive(lease_id_).then([this, sent, renew_ms](absl::StatusOr<int64_t> ttl) {
    if (!ttl.ok()) {
      NoteError(ttl.status());
      Notify();
      return options_.poll_ms;
    }
    error_.clear();
    if (*ttl <= 0) {
      spdlog::warn("etcd: lease {:x} has expired; asking for a new one", lease_id_);
      lease_.OnLost();
      lease_id_ = 0;
      Notify();
      return 0u;
    }
    bool was_alive = lease_.Holds(now_us_());
    lease_.OnRenewed(sent, *ttl);
    if (!was_alive) Notify();
    return renew_ms;
  });
}

kj::Promise<void> Coordinator::PollLoop() {
  return ReadLeaderKey()
      .catch_([this](kj::Exception&& e) {
        NoteError(absl::InternalError(
            absl::StrCat("reading the leader key failed: ", e.getDescription().cStr())));
      })
      .then([this]() {
        return io_.provider->getTimer()
            .afterDelay(options_.poll_ms * kj::MILLISECONDS)
            .then([this]() { return PollLoop(); });
      });
}

kj::Promise<void> Coordinator::ReadLeaderKey() {
  int64_t sent = now_us_();
  return etcd_.Get(leader_key()).then([this, sent](absl::StatusOr<std::optional<EtcdKv>> kv) {
    // Sent before this node took or gave up the key: it knows better than this answer.
    if (sent < changed_us_) return;
    if (!kv.ok()) {
      NoteError(kv.status());
      leader_known_ = false;
    } else {
      leader_known_ = true;
      read_us_ = sent;
      if (!kv->has_value()) {
        leader_.reset();
      } else {
        absl::StatusOr<replication::LeaderKey> k = DecodeLeaderValue((*kv)->value);
        if (!k.ok()) {
          // Held by something walship cannot read: nobody here takes it over.
          NoteError(k.status());
          k = replication::LeaderKey{};
        } else if (k->cluster != cluster_) {
          NoteError(absl::FailedPreconditionError(absl::StrCat(
              "the leader key ", leader_key(), " names cluster '", k->cluster, "', not '",
              cluster_, "': two clusters share the prefix")));
        }
        k->epoch = static_cast<replication::Epoch>((*kv)->create_revision);
        k->lease = (*kv)->lease;
        if (!k->node.empty()) last_holder_ = k->node;
        leader_ = *k;
        // Taken under this node's lease by a role that has ended since (the take's answer
        // came after the follower turned to re-seeding): no role here leads it, so it goes.
        if (!listener_ && k->node == self_ && lease_id_ != 0 && k->lease == lease_id_) {
          spdlog::warn("etcd: the leader key names this node, but no role here leads; "
                       "giving it up");
          ReleaseInBackground(k->epoch);
        }
      }
    }
    Notify();
  });
}

// A read of the key that failed changes nothing here: a key bound to this node's live lease
// leaves etcd only when this node gives it up (or an operator deletes it by hand).
bool Coordinator::Holds(replication::Epoch epoch) const {
  return leader_.has_value() && leader_->node == self_ &&
         leader_->epoch == epoch && lease_id_ != 0 && leader_->lease == lease_id_ &&
         lease_.Holds(now_us_());
}

kj::Promise<absl::StatusOr<replication::Epoch>> Coordinator::Take() {
  if (lease_id_ == 0 || !lease_.Holds(now_us_())) {
    return absl::StatusOr<replication::Epoch>(absl::UnavailableError(
        "this node holds no live etcd lease to bind the leader key to"));
  }
  int64_t lease = lease_id_;
  return etcd_.CreateIfAbsent(leader_key(), EncodeLeaderValue(self_, address_, cluster_), lease)
      .then([this, lease](absl::StatusOr<EtcdCreate> c) -> absl::StatusOr<replication::Epoch> {
        if (!c.ok()) return c.status();
        if (!c->created) {
          std::string holder = "another node";
          if (c->holder.has_value()) {
            if (auto k = DecodeLeaderValue(c->holder->value); k.ok()) {
              holder = absl::StrCat("'", k->node, "'");
            }
          }
          return absl::FailedPreconditionError(
              absl::StrCat("the leader key is held by ", holder));
        }
        replication::LeaderKey k{self_, address_, cluster_,
                                 static_cast<replication::Epoch>(c->revision), lease};
        leader_ = k;
        leader_known_ = true;
        last_holder_ = self_;
        changed_us_ = now_us_();
        spdlog::warn("etcd: took the leader key {} at revision {}", leader_key(), c->revision);
        return k.epoch;
      });
}

kj::Promise<absl::StatusOr<bool>> Coordinator::Release(replication::Epoch epoch) {
  return etcd_.DeleteIfCreated(leader_key(), static_cast<int64_t>(epoch))
      .then([this, epoch](absl::StatusOr<bool> deleted) {
        if (deleted.ok() && leader_.has_value() && leader_->epoch == epoch) {
          leader_.reset();
          changed_us_ = now_us_();
        }
        return deleted;
      });
}

void Coordinator::ReleaseInBackground(replication::Epoch epoch) {
  tasks_.add(Release(epoch).then([this, epoch](absl::StatusOr<bool> deleted) {
    if (!deleted.ok()) {
      NoteError(deleted.status());
    } else if (*deleted) {
      spdlog::info("etcd: gave up the leader key of epoch {}", epoch);
    }
  }));
}

kj::Promise<absl::Status> Coordinator::Publish(const replication::LogPosition& position) {
  if (lease_id_ == 0) {
    return absl::UnavailableError("this node holds no etcd lease to bind its candidacy to");
  }
  return etcd_.Put(absl::StrCat(options_.prefix, "/candidates/", self_),
                   EncodeCandidacy(self_, position), lease_id_);
}

void Coordinator::Withdraw() {
  tasks_.add(etcd_.Delete(absl::StrCat(options_.prefix, "/candidates/", self_))
                 .then([this](absl::Status s) {
                   if (!s.ok()) NoteError(s);
                 }));
}

kj::Promise<absl::StatusOr<std::vector<replication::Candidacy>>> Coordinator::Candidacies() {
  return etcd_.GetPrefix(absl::StrCat(options_.prefix, "/candidates/"))
      .then([this](absl::StatusOr<std::vector<EtcdKv>> kvs)
                -> absl::StatusOr<std::vector<replication::Candidacy>> {
        if (!kvs.ok()) return kvs.status();
        std::vector<replication::Candidacy> out;
        for (const EtcdKv& kv : *kvs) {
          absl::StatusOr<replication::Candidacy> c = DecodeCandidacy(kv.value);
          if (!c.ok()) {
            NoteError(c.status());
            continue;
          }
          out.push_back(std::move(*c));
        }
        return out;
      });
}

std::string Coordinator::Describe() const {
  std::string out = absl::StrCat("etcd ", etcd_.endpoint(), ": ");
  if (!leader_known_) {
    absl::StrAppend(&out, "unreachable (", error_.empty() ? "not read yet" : error_, ")");
  } else if (!leader_.has_value()) {
    absl::StrAppend(&out, "no leader key");
  } else {
    absl::StrAppend(&out, "leader key held by '", leader_->node, "' (epoch ", leader_->epoch,
                    ")");
  }
  int64_t now = now_us_();
  if (lease_id_ == 0) {
    absl::StrAppend(&out, "; no lease");
  } else if (lease_.Holds(now)) {
    absl::StrAppend(&out, absl::StrFormat("; lease %x alive for %d ms", lease_id_,
                                          (lease_.until_us() - now) / 1000));
  } else {
    absl::StrAppend(&out, absl::StrFormat("; lease %x not renewed in time", lease_id_));
  }
  if (leader_known_ && !error_.empty()) absl::StrAppend(&out, "; ", error_);
  return out;
}

}  // namespace walship::rpc
