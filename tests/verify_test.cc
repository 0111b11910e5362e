// The checksums `walship verify` compares (rpc/verify_service.h): ranges by key count on one
// side, the same ranges by bound on the other, and a difference found in exactly the range
// that holds it.
#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "engine/test_util.h"
#include "rpc/verify_service.h"

namespace walship::rpc {
namespace {

using engine::testing::OpenOrDie;
using engine::testing::TempDir;

std::string Key(int i) { return absl::StrFormat("k%03d", i); }

void Put(engine::Engine& e, const std::string& key, const std::string& value) {
  ASSERT_TRUE(e.Write({{engine::OpType::kPut, key, value}}, {}).ok());
}

std::vector<RangeSum> Sums(engine::Engine& e, const std::vector<std::string>& bounds,
                           uint32_t range_keys) {
  auto snap = e.GetSnapshot();
  engine::ReadOptions read;
  read.snapshot = snap.get();
  auto sums = ChecksumRanges(e, read, bounds, range_keys);
  EXPECT_TRUE(sums.ok()) << sums.status();
  return sums.ok() ? *sums : std::vector<RangeSum>{};
}

std::vector<std::string> BoundsOf(const std::vector<RangeSum>& sums) {
  std::vector<std::string> out;
  for (const RangeSum& s : sums) out.push_back(s.last_key);
  return out;
}

TEST(VerifyTest, RangesByCountAndByBoundAgreeAndADifferenceStaysInItsRange) {
  TempDir dir;
  auto a = OpenOrDie(dir.Sub("a"));
  auto b = OpenOrDie(dir.Sub("b"));
  for (int i = 0; i < 10; ++i) {
    Put(*a, Key(i), "v" + std::to_string(i));
    Put(*b, Key(i), "v" + std::to_string(i));
  }
  std::vector<RangeSum> mine = Sums(*a, {}, 4);
  ASSERT_EQ(mine.size(), 3u);  // 4 + 4 + 2 keys, named by their last keys
  EXPECT_EQ(BoundsOf(mine), (std::vector<std::string>{Key(3), Key(7), Key(9)}));
  EXPECT_EQ(mine[2].keys, 2u);
  for (const RangeSum& s : mine) EXPECT_EQ(s.digest.size(), 8u);

  std::vector<RangeSum> theirs = Sums(*b, BoundsOf(mine), 0);
  ASSERT_EQ(theirs.size(), 4u);  // the bounds' ranges and the open one after them
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(theirs[i].keys, mine[i].keys) << i;
    EXPECT_EQ(theirs[i].digest, mine[i].digest) << i;
  }
  EXPECT_EQ(theirs[3].keys, 0u);

  // Another value for one key changes its range's sum only; a key past the leader's last
  // falls in the open range; a missing key changes its range's count.
  Put(*b, Key(5), "changed");
  Put(*b, "zz", "extra");
  ASSERT_TRUE(b->Write({{engine::OpType::kDelete, Key(1), ""}}, {}).ok());
  theirs = Sums(*b, BoundsOf(mine), 0);
  ASSERT_EQ(theirs.size(), 4u);
  EXPECT_EQ(theirs[0].keys, 3u);
  EXPECT_NE(theirs[0].digest, mine[0].digest);
  EXPECT_EQ(theirs[1].keys, 4u);
  EXPECT_NE(theirs[1].digest, mine[1].digest);
  EXPECT_EQ(theirs[2].digest, mine[2].digest);
  EXPECT_EQ(theirs[3].keys, 1u);
}

TEST(VerifyTest, KeyAndValueBoundariesAreHashedWithTheirLengths) {
  TempDir dir;
  auto a = OpenOrDie(dir.Sub("a"));
  auto b = OpenOrDie(dir.Sub("b"));
  Put(*a, "ab", "c");
  Put(*b, "a", "bc");  // the same bytes in a row, split differently
  EXPECT_NE(Sums(*a, {}, 10)[0].digest, Sums(*b, {}, 10)[0].digest);
}

TEST(VerifyTest, AnEmptyDatabaseIsOneEmptyRange) {
  TempDir dir;
  auto a = OpenOrDie(dir.Sub("a"));
  std::vector<RangeSum> sums = Sums(*a, {}, 10);
  ASSERT_EQ(sums.size(), 1u);
  EXPECT_EQ(sums[0].keys, 0u);
  // Bounds past every key: each range empty, the same sums as another empty database's.
  auto b = OpenOrDie(dir.Sub("b"));
  std::vector<RangeSum> by_bounds = Sums(*b, {"x", "y"}, 0);
  ASSERT_EQ(by_bounds.size(), 3u);
  EXPECT_EQ(by_bounds[0].digest, sums[0].digest);
}

}  // namespace
}  // namespace walship::rpc
