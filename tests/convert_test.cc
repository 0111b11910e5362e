// The conversions of peer messages refuse what a hostile peer could send to make a node copy
// far more than the message holds (found by the peer-message fuzz target).
#include <capnp/any.h>
#include <capnp/message.h>
#include <gtest/gtest.h>
#include <kj/debug.h>
#include <kj/exception.h>

#include "rpc/convert.h"
#include "rpc/peer.capnp.h"
#include "rpc/wire_limits.h"

namespace walship::rpc {
namespace {

// A Ship whose batch list is 4 million empty elements: a few words on the wire, but read
// within the peer limit, since Cap'n Proto charges an empty element one word.
TEST(ConvertTest, AShipOfMillionsOfEmptyBatchesIsRefusedBeforeCopying) {
  capnp::MallocMessageBuilder m;
  auto ship = m.initRoot<schema::Ship>();
  ship.setEpoch(1);
  capnp::toAny(ship).getPointerSection()[0].initAs<capnp::List<capnp::Void>>(4 << 20);
  auto reader = m.getRoot<schema::Ship>().asReader();
  ASSERT_EQ(reader.getBatches().size(), 4u << 20);
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { (void)FromCapnp(reader); })) {
    EXPECT_NE(std::string(e->getDescription().cStr()).find("shorter than its header"),
              std::string::npos)
        << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "an amplified batch list was converted";
  }
}

TEST(ConvertTest, AnEpochHistoryLongerThanTheLimitIsRefused) {
  capnp::MallocMessageBuilder m;
  auto reply = m.initRoot<schema::HelloReply>();
  capnp::toAny(reply).getPointerSection()[2].initAs<capnp::List<capnp::Void>>(4 << 20);
  auto reader = m.getRoot<schema::HelloReply>().asReader();
  ASSERT_EQ(reader.getHistory().size(), 4u << 20);
  EXPECT_TRUE(kj::runCatchingExceptions([&]() { (void)FromCapnp(reader); }) != nullptr);
}

TEST(ConvertTest, ARealShipConverts) {
  capnp::MallocMessageBuilder m;
  auto ship = m.initRoot<schema::Ship>();
  auto batches = ship.initBatches(1);
  batches[0].setFirstSeq(5);
  batches[0].setCount(1);
  std::string data(17, 'x');
  batches[0].setData(ToData(data));
  replication::Ship converted = FromCapnp(m.getRoot<schema::Ship>().asReader());
  ASSERT_EQ(converted.batches.size(), 1u);
  EXPECT_EQ(converted.batches[0].batch.first_seq, 5u);
  EXPECT_EQ(converted.batches[0].batch.data, data);
}

// Who is at fault when serving a request throws: Cap'n Proto's decoding of a field of the
// wrong type is the client's (invalidArgument); overload is unavailable; anything else is
// the node's own (internal), never reported as the client's.
TEST(ConvertTest, ARefusalNamesWhoIsAtFault) {
  capnp::MallocMessageBuilder m;
  auto get = m.initRoot<schema::Request>().initGet();
  capnp::toAny(get).getPointerSection()[0].initAs<schema::Error>().setMessage("not a key");
  auto reader = m.getRoot<schema::Request>().asReader();
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { (void)reader.getGet().getKey(); })) {
    absl::Status s = RefusalOf(*e);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_NE(s.message().find("malformed request"), std::string_view::npos) << s;
  } else {
    ADD_FAILURE() << "reading a struct as a key did not throw";
  }
  EXPECT_TRUE(absl::IsUnavailable(RefusalOf(KJ_EXCEPTION(OVERLOADED, "worker queue full"))));
  // The fault the full worker queue once caused: a promise the node dropped.
  absl::Status ours = RefusalOf(
      KJ_EXCEPTION(FAILED, "PromiseFulfiller was destroyed without fulfilling the promise"));
  EXPECT_TRUE(absl::IsInternal(ours)) << ours;
}

// A write refused before anything of it was written says so on the wire; a storage failure,
// also `unavailable`, does not (it may be in the WAL), and neither does a not-leader answer.
TEST(ConvertTest, AWriteRefusedBeforeWritingSaysSoAcrossTheWire) {
  auto across = [](const absl::Status& s) {
    capnp::MallocMessageBuilder m;
    auto e = m.initRoot<schema::Error>();
    ToCapnp(s, e);
    return FromCapnp(m.getRoot<schema::Error>().asReader());
  };
  absl::Status refused = across(NotWritten(absl::UnavailableError("no lease")));
  EXPECT_TRUE(absl::IsUnavailable(refused)) << refused;
  EXPECT_TRUE(IsNotWritten(refused)) << refused;
  EXPECT_EQ(refused.message(), "no lease");
  absl::Status storage = across(absl::UnavailableError("the storage failed"));
  EXPECT_TRUE(absl::IsUnavailable(storage)) << storage;
  EXPECT_FALSE(IsNotWritten(storage)) << storage;
  absl::Status follower = across(NotLeaderError("127.0.0.1:1"));
  EXPECT_TRUE(IsNotLeader(follower));
  EXPECT_FALSE(IsNotWritten(follower));
  EXPECT_EQ(LeaderHint(follower), "127.0.0.1:1");
}

}  // namespace
}  // namespace walship::rpc
