#include <gtest/gtest.h>

#include "common/error.h"
#include "metrics/latency.h"

namespace segslim {
namespace {

TEST(Latency, NearestRankPercentilesByHand) {
  // sorted: 1 2 3 4 5 6 7 8 9 10 -> p50 = 5th = 5, p90 = 9th = 9
  LatencyStats s = latency_stats({10, 3, 1, 7, 2, 9, 4, 8, 6, 5}, 2);
  EXPECT_DOUBLE_EQ(s.p50_ms, 5);
  EXPECT_DOUBLE_EQ(s.p90_ms, 9);
  EXPECT_DOUBLE_EQ(s.min_ms, 1);
  EXPECT_DOUBLE_EQ(s.max_ms, 10);
  EXPECT_DOUBLE_EQ(s.mean_ms, 5.5);
  EXPECT_DOUBLE_EQ(s.images_per_s, 1000.0 * 2 / 5);  // batch of 2 per run at the median
  EXPECT_EQ(latency_stats({4.0}, 1).p90_ms, 4.0);
  EXPECT_THROW(latency_stats({}, 1), Error);
}

}  // namespace
}  // namespace segslim
