#include "replication/leader.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/check.h"

namespace walship::replication {

namespace {
constexpr size_t kMaxShippedTimes = 1024;

class SystemClock final : public Clock {
 public:
  int64_t NowMicros() override {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};
}  // namespace

Clock* RealClock() {
  static SystemClock clock;
  return &clock;
}

const char* FollowerStateName(FollowerState state) {
  switch (state) {
    case FollowerState::kConnected: return "connected";
    case FollowerState::kDisconnected: return "disconnected";
    case FollowerState::kNeedsSnapshot: return "needs_snapshot";
    case FollowerState::kRefused: return "refused";
  }
  return "?";
}

Leader::Leader(LeaderOptions options, engine::Engine* engine, NodeState state, Clock* clock)
    : options_(std::move(options)),
      engine_(engine),
      state_(std::move(state)),
      clock_(clock),
      latest_(engine->LatestSequence()) {
  WALSHIP_CHECK(!state_.history.empty() && state_.history.back().epoch == state_.epoch);
  if (options_.members_only && state_.membership.version == 0) {
    std::vector<Member> members{{options_.node_id, "", true}};
    for (const std::string& id : options_.members) members.push_back({id, "", true});
    state_.membership = MembershipOf(std::move(members), 0);
  }
  NoteMembership();
}

Leader::Record* Leader::FindSession(uint64_t session) {
  // 0 is never a session: it is what OnHello returns when it refuses, and what an ended
  // session's record holds, so it must not select whichever record has no session.
  if (session == 0) return nullptr;
  for (auto& [id, rec] : followers_) {
    if (rec.session == session) return &rec;
  }
  return nullptr;
}

const Leader::Record* Leader::FindSession(uint64_t session) const {
  return const_cast<Leader*>(this)->FindSession(session);
}

// Returns why the follower's history is not a prefix of ours, or "" when it is: its last
// batch must lie in the range our history gives the same epoch (same number, same leader).
std::string Leader::CheckHistory(const Hello& hello) const {
  if (hello.last_applied > latest_) {
    return absl::StrCat("follower has applied up to seq ", hello.last_applied,
                        " but the leader's log ends at ", latest_,
                        ": its history diverged from the leader's");
  }
  if (hello.last_applied == 0) return "";
  EpochEntry theirs{hello.last_applied_epoch, 0, hello.last_applied_leader};
  const auto& h = state_.history;
  for (size_t i = 0; i < h.size(); ++i) {
    if (h[i].epoch != hello.last_applied_epoch) continue;
    if (!h[i].SameEpoch(theirs)) {
      return absl::StrCat("follower's last batch (seq ", hello.last_applied, ") was written in "
                          "epoch ", hello.last_applied_epoch, " begun by '",
                          hello.last_applied_leader, "', but this leader's epoch ", h[i].epoch,
                          " was begun by '", h[i].leader, "': its history diverged");
    }
    SequenceNumber end = i + 1 < h.size() ? h[i + 1].start_seq - 1 : latest_;
    if (hello.last_applied < h[i].start_seq || hello.last_applied > end) {
      return absl::StrCat("follower's last batch (seq ", hello.last_applied, ", epoch ",
                          hello.last_applied_epoch, ") is outside the leader's epoch ",
                          h[i].epoch, " range [", h[i].start_seq, ", ", end,
                          "]: its history diverged");
    }
    return "";
  }
  if (hello.last_applied_epoch == 0) return "";  // seeded before any history was known
  return absl::StrCat("the leader's history has no epoch ", hello.last_applied_epoch,
                      " under which the follower wrote seq ", hello.last_applied);
}

// Whether the follower's last batch lies past this leader's log in an epoch of its history
// that no later epoch has closed within the log: writes this leader wrote (or followed) and
// lost. An epoch begun after the loss starts at latest + 1 and closes the ones before it:
// writes past it there are no longer of this history (the follower diverged).
bool Leader::LostWritesOf(const Hello& hello) const {
  if (hello.last_applied <= latest_) return false;
  const EpochEntry theirs{hello.last_applied_epoch, 0, hello.last_applied_leader};
  const auto& h = state_.history;
  for (size_t i = 0; i < h.size(); ++i) {
    if (h[i].epoch != hello.last_applied_epoch) continue;
    if (!h[i].SameEpoch(theirs)) return false;
    for (size_t j = i + 1; j < h.size(); ++j) {
      if (h[j].start_seq <= latest_ + 1) return false;
    }
    return true;
  }
  return false;
}

HelloReply Leader::OnHello(const Hello& hello, uint64_t* session) {
  HelloReply reply;
  reply.epoch = state_.epoch;
  reply.database_id = state_.database_id;
  reply.history = state_.history;
  reply.leader_latest = latest_;
  *session = 0;
  if (hello.version != kPeerProtocolVersion) {
    reply.outcome = HelloOutcome::kRefused;
    reply.message = absl::StrCat("follower '", hello.follower_id, "' speaks peer protocol version ",
                                 hello.version, "; this leader speaks version ",
                                 kPeerProtocolVersion, ": run one walship version in a cluster");
    return reply;
  }
  if (options_.members_only && !IsMember(hello.follower_id)) {
    reply.outcome = HelloOutcome::kRefused;
    reply.message = absl::StrCat("node '", hello.follower_id, "' is not a member of cluster '",
                                 options_.cluster, "' (membership version ",
                                 state_.membership.version, ": ", Describe(state_.membership),
                                 "); add it with walship add-follower");
    return reply;
  }
  if (followers_.size() >= options_.max_followers && !followers_.count(hello.follower_id)) {
    reply.outcome = HelloOutcome::kRefused;
    reply.message = absl::StrCat("the leader already tracks ", followers_.size(),
                                 " followers (max_followers)");
    return reply;
  }
  auto refuse = [&](HelloOutcome outcome, std::string why) {
    reply.outcome = outcome;
    reply.message = why;
    auto it = followers_.find(hello.follower_id);
    // For status, a configured member's record shows why it was refused, unless a live
    // session of that id streams on: a refused hello must not cut it.
    if (!IsMember(hello.follower_id) ||
        (it != followers_.end() && it->second.info.state == FollowerState::kConnected)) {
      return reply;
    }
    Record& rec = followers_[hello.follower_id];
    rec.info.id = hello.follower_id;
    rec.info.message = std::move(why);
    rec.info.state = outcome == HelloOutcome::kNeedsSnapshot ? FollowerState::kNeedsSnapshot
                                                             : FollowerState::kRefused;
    rec.session = 0;
    rec.cursor.reset();
    return reply;
  };
  if (hello.cluster != options_.cluster) {
    return refuse(HelloOutcome::kRefused,
                  absl::StrCat("follower belongs to cluster '", hello.cluster,
                               "', this leader to cluster '", options_.cluster, "'"));
  }
  if (hello.epoch > state_.epoch) {
    return refuse(HelloOutcome::kRefused,
                  absl::StrCat("follower has seen epoch ", hello.epoch, ", newer than this "
                               "leader's epoch ", state_.epoch, ": this leader is stale"));
  }
  if (hello.database_id.empty()) {
    if (hello.last_applied != 0) {
      return refuse(HelloOutcome::kRefused,
                    absl::StrCat("follower holds data up to seq ", hello.last_applied,
                                 " but has no database id: it was not seeded from this "
                                 "cluster"));
    }
  } else if (hello.database_id != state_.database_id) {
    return refuse(HelloOutcome::kRefused,
                  absl::StrCat("follower holds database ", hello.database_id,
                               ", this leader database ", state_.database_id));
  }
  if (options_.seed_new_followers && hello.database_id.empty() && hello.last_applied == 0 &&
      latest_ > 0) {
    return refuse(HelloOutcome::kNeedsSnapshot,
                  absl::StrCat("a new follower is seeded from a checkpoint (the leader holds ",
                               latest_, " writes)"));
  }
  if (LostWritesOf(hello)) {
    // Not the follower's fault: this leader lost writes of its own history that it had
    // shipped (its machine lost power). It must not lead; the follower is refused, never
    // told to re-seed, and holds them for the node that leads next (replication/recovery.h).
    return refuse(HelloOutcome::kRefused,
                  absl::StrCat("follower holds seq ", hello.last_applied, " of epoch ",
                               hello.last_applied_epoch, " of this leader's history, past this "
                               "leader's log (it ends at ", latest_, "): this leader lost "
                               "writes it had shipped"));
  }
  if (std::string why = CheckHistory(hello); !why.empty()) {
    return refuse(HelloOutcome::kNeedsSnapshot, why);
  }
  Record& rec = followers_[hello.follower_id];
  rec.info.id = hello.follower_id;
  reply.outcome = HelloOutcome::kAccepted;
  rec.session = next_session_++;
  rec.session_start_us = clock_->NowMicros();
  rec.echo_us = 0;  // the stamps of an earlier session may be of a clock since reset
  rec.next_seq = hello.last_applied + 1;
  rec.cursor.reset();
  rec.read_ahead.clear();
  rec.wal_read_pending = false;
  rec.shipped_times.clear();
  rec.membership_sent.reset();
  rec.info.membership_acked = 0;
  rec.info.state = FollowerState::kConnected;
  rec.info.message.clear();
  rec.info.sent = hello.last_applied;
  rec.info.received = std::max(rec.info.received, hello.last_applied);
  rec.info.applied = hello.last_applied;
  rec.info.durable = std::min(rec.info.durable, hello.last_applied);
  *session = rec.session;
  return reply;
}

void Leader::OnLocalWrite(engine::Batch batch, int64_t leader_time_us) {
  WALSHIP_CHECKF(batch.first_seq == latest_ + 1, "local write at %llu after %llu",
                 static_cast<unsigned long long>(batch.first_seq),
                 static_cast<unsigned long long>(latest_));
  latest_ = batch.last_seq();
  tail_bytes_ += batch.data.size();
  written_bytes_ += batch.data.size();
  tail_.push_back(ShippedBatch{std::move(batch), leader_time_us});
  tail_end_bytes_.push_back(written_bytes_);
  TrimTail();
}

size_t Leader::SeedTail(std::deque<ShippedBatch> recent) {
  if (!tail_.empty() || recent.empty() || recent.back().batch.last_seq() != latest_) return 0;
  for (size_t i = 1; i < recent.size(); ++i) {
    if (recent[i].batch.first_seq != recent[i - 1].batch.next_seq()) return 0;
  }
  for (ShippedBatch& b : recent) {
    tail_bytes_ += b.batch.data.size();
    written_bytes_ += b.batch.data.size();
    tail_.push_back(std::move(b));
    tail_end_bytes_.push_back(written_bytes_);
  }
  TrimTail();
  return tail_.size();
}

void Leader::TrimTail() {
  while (tail_bytes_ > options_.max_tail_bytes && tail_.size() > 1) {
    tail_bytes_ -= tail_.front().batch.data.size();
    tail_.pop_front();
    tail_end_bytes_.pop_front();
  }
}

void Leader::MarkNeedsSnapshot(Record& rec, const std::string& why) {
  rec.info.state = FollowerState::kNeedsSnapshot;
  rec.info.message = why;
  rec.cursor.reset();
}

bool Leader::HasWork(uint64_t session) const {
  const Record* rec = FindSession(session);
  return rec != nullptr && rec->info.state == FollowerState::kConnected &&
         (rec->next_seq <= latest_ || MembershipDue(*rec, false));
}

uint64_t Leader::PendingBytes(uint64_t session) const {
  const Record* rec = FindSession(session);
  if (rec == nullptr || rec->next_seq > latest_) return 0;
  if (tail_.empty() || tail_.front().batch.first_seq > rec->next_seq) return UINT64_MAX;
  auto it = std::lower_bound(
      tail_.begin(), tail_.end(), rec->next_seq,
      [](const ShippedBatch& b, SequenceNumber s) { return b.batch.first_seq < s; });
  if (it == tail_.end()) return 0;
  size_t i = static_cast<size_t>(it - tail_.begin());
  uint64_t sent_end = i == 0 ? tail_end_bytes_[0] - tail_[0].batch.data.size()
                             : tail_end_bytes_[i - 1];
  return written_bytes_ - sent_end;
}

Ship Leader::NewShip() const {
  Ship ship;
  ship.epoch = state_.epoch;
  ship.leader_latest = latest_;
  ship.leader_time_us = clock_->NowMicros();
  return ship;
}

bool Leader::OlderThanTail(SequenceNumber seq) const {
  return tail_.empty() || tail_.front().batch.first_seq > seq;
}

void WalRead::Run() {
  if (cursor == nullptr || cursor->next_seq() != from_seq) {
    auto opened = engine->NewWalCursor(from_seq);
    if (!opened.ok()) {
      status = opened.status();
      return;
    }
    cursor = std::move(*opened);
  }
  uint64_t bytes = 0;
  while (bytes < max_bytes) {
    auto next = cursor->Next();
    if (!next.ok()) {
      status = next.status();
      return;
    }
    if (!next->has_value()) return;
    bytes += (*next)->data.size();
    int64_t write_time_us = engine::BatchWriteTime(**next);
    batches.push_back(ShippedBatch{std::move(**next), write_time_us});
  }
}

std::optional<WalRead> Leader::TakeWalRead(uint64_t session) {
  Record* rec = FindSession(session);
  if (rec == nullptr) return std::nullopt;
  if (!rec->read_ahead.empty() && rec->read_ahead.front().batch.first_seq != rec->next_seq) {
    rec->read_ahead.clear();  // left behind by a rewind
  }
  if (rec->info.state != FollowerState::kConnected || rec->wal_read_pending ||
      !rec->read_ahead.empty() || rec->next_seq > latest_ || !OlderThanTail(rec->next_seq)) {
    return std::nullopt;
  }
  rec->wal_read_pending = true;
  WalRead read;
  read.session = session;
  read.from_seq = rec->next_seq;
  read.max_bytes = options_.max_wal_read_bytes;
  read.engine = engine_;
  if (rec->cursor != nullptr && rec->cursor->next_seq() == rec->next_seq) {
    read.cursor = std::move(rec->cursor);
  }
  rec->cursor.reset();
  return read;
}

std::optional<Ship> Leader::OnWalRead(WalRead read) {
  Record* rec = FindSession(read.session);
  if (rec == nullptr || !rec->wal_read_pending) return std::nullopt;
  rec->wal_read_pending = false;
  if (rec->info.state != FollowerState::kConnected || read.from_seq != rec->next_seq) {
    return std::nullopt;  // the session moved on meanwhile (a gap rewound it, say)
  }
  if (!read.status.ok()) {
    if (absl::IsOutOfRange(read.status) || absl::IsInvalidArgument(read.status)) {
      MarkNeedsSnapshot(*rec, std::string(read.status.message()));
      Ship ship = NewShip();
      ship.needs_snapshot = rec->info.message;
      return ship;
    }
    rec->info.message = absl::StrCat("reading the WAL: ", read.status.message());
  }
  for (ShippedBatch& b : read.batches) rec->read_ahead.push_back(std::move(b));
  rec->cursor = std::move(read.cursor);
  return std::nullopt;
}

std::optional<Ship> Leader::NextShip(uint64_t session, bool heartbeat) {
  Record* rec = FindSession(session);
  if (rec == nullptr || rec->info.state != FollowerState::kConnected) return std::nullopt;
  Ship ship = NewShip();
  uint64_t bytes = 0;
  while (rec->next_seq <= latest_ && bytes < options_.max_ship_bytes) {
    if (!tail_.empty() && tail_.front().batch.first_seq <= rec->next_seq) {
      auto it = std::lower_bound(
          tail_.begin(), tail_.end(), rec->next_seq,
          [](const ShippedBatch& b, SequenceNumber s) { return b.batch.first_seq < s; });
      if (it == tail_.end() || it->batch.first_seq != rec->next_seq) {
        MarkNeedsSnapshot(*rec, absl::StrCat("position ", rec->next_seq,
                                             " is not a batch boundary of the leader's log"));
        ship.needs_snapshot = rec->info.message;
        return ship;
      }
      rec->cursor.reset();
      rec->read_ahead.clear();  // the tail serves it now
      for (; it != tail_.end() && bytes < options_.max_ship_bytes; ++it) {
        bytes += it->batch.data.size();
        ship.batches.push_back(*it);
        rec->next_seq = it->batch.next_seq();
      }
      continue;
    }
    if (!options_.read_wal_inline) {
      // Only what a WalRead brought: the event loop never reads the WAL itself.
      if (rec->read_ahead.empty() || rec->read_ahead.front().batch.first_seq != rec->next_seq) {
        rec->read_ahead.clear();
        break;
      }
      bytes += rec->read_ahead.front().batch.data.size();
      rec->next_seq = rec->read_ahead.front().batch.next_seq();
      ship.batches.push_back(std::move(rec->read_ahead.front()));
      rec->read_ahead.pop_front();
      continue;
    }
    if (rec->cursor == nullptr || rec->cursor->next_seq() != rec->next_seq) {
      auto cursor = engine_->NewWalCursor(rec->next_seq);
      WALSHIP_CHECK(cursor.ok());  // only fails for position 0
      rec->cursor = std::move(*cursor);
    }
    auto next = rec->cursor->Next();
    if (!next.ok()) {
      if (absl::IsOutOfRange(next.status()) || absl::IsInvalidArgument(next.status())) {
        MarkNeedsSnapshot(*rec, std::string(next.status().message()));
        ship.needs_snapshot = rec->info.message;
        return ship;
      }
      rec->info.message = absl::StrCat("reading the WAL: ", next.status().message());
      rec->cursor.reset();
      break;  // transient (I/O): try again on the next call
    }
    if (!next->has_value()) break;
    bytes += (*next)->data.size();
    rec->next_seq = (*next)->next_seq();
    int64_t write_time_us = engine::BatchWriteTime(**next);
    ship.batches.push_back(ShippedBatch{std::move(**next), write_time_us});
  }
  const bool membership_due = MembershipDue(*rec, heartbeat);
  if (ship.batches.empty() && !heartbeat && !membership_due) return std::nullopt;
  ship.echo_us = echo_ ? rec->echo_us : 0;
  if (membership_due) {
    ship.membership = state_.membership;
    rec->membership_sent = state_.membership.version;
  }
  rec->info.bytes_shipped += bytes;
  rec->info.batches_shipped += ship.batches.size();
  if (!ship.batches.empty()) {
    rec->info.sent = ship.batches.back().batch.last_seq();
    rec->shipped_times.emplace_back(ship.batches.front().batch.first_seq,
                                    ship.batches.front().leader_time_us);
    if (rec->shipped_times.size() > kMaxShippedTimes) rec->shipped_times.pop_front();
  }
  return ship;
}

void Leader::OnAck(uint64_t session, const Ack& ack) {
  Record* rec = FindSession(session);
  if (rec == nullptr) return;
  if (ack.epoch != state_.epoch) {
    if (ack.epoch > state_.epoch) {
      rec->info.state = FollowerState::kRefused;
      rec->info.message = absl::StrCat("follower acked with epoch ", ack.epoch,
                                       ", newer than ours (", state_.epoch, ")");
    }
    return;  // an ack from an older epoch is refused: it says nothing about this one
  }
  int64_t now_us = clock_->NowMicros();
  rec->info.last_ack_us = now_us;
  ++rec->info.acks;
  rec->echo_us = std::max(rec->echo_us, ack.sent_us);
  rec->info.received = std::max(rec->info.received, ack.received);
  rec->info.durable = std::max(rec->info.durable, ack.durable);
  rec->info.applied = std::max(rec->info.applied, ack.applied);
  // Acks come in order on a stream: the last one tells the version the follower holds now.
  rec->info.membership_acked = ack.membership_version;
  // Forget the times of messages the follower has applied in full.
  auto& times = rec->shipped_times;
  while (!times.empty() && (rec->info.applied >= rec->info.sent ||
                            (times.size() > 1 && times[1].first <= rec->info.applied + 1))) {
    if (times.front().second >= rec->session_start_us) {
      rec->info.replication_latency.Observe(now_us - times.front().second);
    }
    times.pop_front();
  }
  switch (ack.outcome) {
    case AckOutcome::kOk: break;
    case AckOutcome::kGap:
      // The follower is behind what we sent (a message was lost or reordered): resend from
      // its position. Never skip forward.
      rec->next_seq = rec->info.applied + 1;
      rec->cursor.reset();
      rec->read_ahead.clear();
      rec->shipped_times.clear();
      break;
    case AckOutcome::kStale:
    case AckOutcome::kFailed:
      rec->info.message = ack.message;
      break;
  }
}

void Leader::OnDisconnect(uint64_t session) {
  Record* rec = FindSession(session);
  if (rec == nullptr) return;
  rec->session = 0;
  rec->cursor.reset();
  rec->read_ahead.clear();
  rec->wal_read_pending = false;
  rec->shipped_times.clear();
  if (rec->info.state == FollowerState::kConnected) {
    rec->info.state = FollowerState::kDisconnected;
  }
}

// The write time of the batch holding `seq` (the follower's first unapplied one); 0 when
// unknown:
// - a message in flight holds it: that message's first batch's time (batches read from the
//   WAL carry theirs), at most one message early;
// - the memory tail holds it: its own time;
// - else (older than the tail, nothing in flight, or a batch written without a time): the
//   oldest time in the tail, a lower bound.
int64_t Leader::WriteTimeOf(const Record& rec, SequenceNumber seq) const {
  if (!rec.shipped_times.empty() && rec.shipped_times.front().first <= seq &&
      rec.shipped_times.front().second > 0) {
    return rec.shipped_times.front().second;
  }
  if (tail_.empty()) return 0;
  auto it = std::upper_bound(
      tail_.begin(), tail_.end(), seq,
      [](SequenceNumber s, const ShippedBatch& b) { return s < b.batch.first_seq; });
  if (it == tail_.begin()) return tail_.front().leader_time_us;  // older than the tail
  return std::prev(it)->leader_time_us;
}

std::vector<FollowerInfo> Leader::Followers() {
  std::vector<FollowerInfo> out;
  int64_t now = clock_->NowMicros();
  for (auto& [id, rec] : followers_) {
    FollowerInfo info = rec.info;
    info.voter = IsVoter(id);
    info.lag_seq = latest_ > info.applied ? latest_ - info.applied : 0;
    if (info.lag_seq > 0) {
      int64_t t = WriteTimeOf(rec, info.applied + 1);
      info.lag_ms = t > 0 ? std::max<int64_t>(0, (now - t) / 1000) : 0;
    }
    out.push_back(std::move(info));
  }
  return out;
}

namespace {
// A follower writes what it receives to its RocksDB in the same step as it applies it, so
// `received` (in its OS buffers) is its applied position; its `received` field may run ahead
// of what it wrote (a message it could not apply).
SequenceNumber At(const FollowerInfo& f, AckLevel level) {
  switch (level) {
    case AckLevel::kReceived: return f.applied;
    case AckLevel::kFlushed: return f.durable;
    case AckLevel::kApplied: return std::min(f.durable, f.applied);
  }
  return 0;
}
}  // namespace

SequenceNumber Leader::WalNeededFrom() const {
  SequenceNumber from = UINT64_MAX;
  for (const auto& [id, rec] : followers_) {
    if (rec.info.state == FollowerState::kConnected ||
        rec.info.state == FollowerState::kDisconnected) {
      from = std::min(from, rec.info.applied + 1);
    }
  }
  return from;
}

std::vector<SequenceNumber> Leader::VoterPositions(AckLevel level) const {
  std::vector<SequenceNumber> at;
  if (options_.members_only) {
    for (const std::string& id : voter_ids_) {
      auto it = followers_.find(id);
      at.push_back(it == followers_.end() ? 0 : At(it->second.info, level));
    }
  } else {
    for (const auto& [id, rec] : followers_) at.push_back(At(rec.info, level));
  }
  std::sort(at.begin(), at.end(), std::greater<>());
  return at;
}

size_t Leader::voters() const {
  return options_.members_only ? voter_ids_.size() : followers_.size();
}

SequenceNumber Leader::PositionOf(uint64_t session, AckLevel level) const {
  const Record* rec = FindSession(session);
  return rec == nullptr ? 0 : At(rec->info, level);
}

SequenceNumber Leader::NextToShip(uint64_t session) const {
  const Record* rec = FindSession(session);
  return rec == nullptr ? std::numeric_limits<SequenceNumber>::max() : rec->next_seq;
}

}  // namespace walship::replication
