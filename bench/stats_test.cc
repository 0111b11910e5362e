#include "bench/stats.h"

#include <gtest/gtest.h>

namespace walship::bench {
namespace {

TEST(StatsTest, PercentilesByNearestRank) {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);  // unsorted on purpose
  EXPECT_EQ(Percentile(v, 50), 50);
  EXPECT_EQ(Percentile(v, 99), 99);
  EXPECT_EQ(Percentile(v, 100), 100);
  EXPECT_EQ(Percentile(v, 0), 1);
  EXPECT_EQ(Percentile({7}, 99), 7);
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Percentile({1, 2, 3, 4}, 50), 2);
  EXPECT_EQ(Percentile({1, 2, 3, 4}, 51), 3);
}

TEST(StatsTest, Ratios) {
  EXPECT_DOUBLE_EQ(Ratio(50, 200), 0.25);
  EXPECT_EQ(Ratio(1, 0), 0);
}

}  // namespace
}  // namespace walship::bench
