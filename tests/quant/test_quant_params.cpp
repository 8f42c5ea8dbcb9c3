#include <gtest/gtest.h>

#include "common/error.h"
#include "quant/quant_params.h"
#include "support/test_support.h"

namespace segslim {
namespace {

using segslim::testing::all_close;

TEST(QuantParams, SymmetricByHand) {
  QuantParams p = symmetric_params(12.7);
  EXPECT_DOUBLE_EQ(p.scale, 0.1);
  EXPECT_EQ(p.zero_point, 0);
  EXPECT_EQ(p.qmin, -127);
  EXPECT_EQ(p.qmax, 127);

  QuantParams p4 = symmetric_params(3.5, 4);  // qmax 2^3 - 1 = 7
  EXPECT_EQ(p4.qmin, -7);
  EXPECT_EQ(p4.qmax, 7);
  EXPECT_DOUBLE_EQ(p4.scale, 0.5);
}

TEST(QuantParams, SymmetricZeroRangeGetsTinyScale) {
  QuantParams p = symmetric_params(0);
  EXPECT_GT(p.scale, 0);
  EXPECT_EQ(p.scale, kMinScale);
  at::Tensor z = at::zeros({4});
  EXPECT_TRUE(all_close(fake_quantize(z, p), z, 0, 0));
}

TEST(QuantParams, RejectsBadInput) {
  EXPECT_THROW(symmetric_params(-1), Error);
  EXPECT_THROW(symmetric_params(std::nan("")), Error);
  EXPECT_THROW(symmetric_params(1, 1), Error);
  EXPECT_THROW(asymmetric_params(2, 1), Error);
}

TEST(QuantParams, AsymmetricByHand) {
  // [-1, 3]: scale 4/255, zero point 0 - round(-1 / (4/255)) = round(63.75) = 64.
  QuantParams p = asymmetric_params(-1, 3);
  EXPECT_EQ(p.qmin, 0);
  EXPECT_EQ(p.qmax, 255);
  EXPECT_DOUBLE_EQ(p.scale, 4.0 / 255);
  EXPECT_EQ(p.zero_point, 64);

  // Range widened to include 0: [2, 5] -> [0, 5], zero point 0.
  QuantParams pos = asymmetric_params(2, 5);
  EXPECT_DOUBLE_EQ(pos.scale, 5.0 / 255);
  EXPECT_EQ(pos.zero_point, 0);
  // [-5, -2] -> [-5, 0]: zero point 255 (the top of the range).
  QuantParams neg = asymmetric_params(-5, -2);
  EXPECT_DOUBLE_EQ(neg.scale, 5.0 / 255);
  EXPECT_EQ(neg.zero_point, 255);
  // Empty range: tiny scale, zero point 0.
  QuantParams empty = asymmetric_params(0, 0);
  EXPECT_EQ(empty.scale, kMinScale);
  EXPECT_EQ(empty.zero_point, 0);
}

TEST(FakeQuantize, SymmetricTiesRoundToEvenAndClamp) {
  QuantParams p = symmetric_params(127);  // scale exactly 1
  at::Tensor x = at::tensor({2.5, 3.5, -2.5, -3.5, 0.5, 1.5, 126.6, 200.0, -200.0}, at::kDouble);
  at::Tensor e = at::tensor({2.0, 4.0, -2.0, -4.0, 0.0, 2.0, 127.0, 127.0, -127.0}, at::kDouble);
  EXPECT_TRUE(all_close(fake_quantize(x, p), e, 0, 0));
  // Same ties at scale 0.5 and in float32.
  QuantParams h = symmetric_params(63.5);
  at::Tensor xf = at::tensor({1.25f, 1.75f, -1.25f, 100.0f}, at::kFloat);
  at::Tensor ef = at::tensor({1.0f, 2.0f, -1.0f, 63.5f}, at::kFloat);
  at::Tensor out = fake_quantize(xf, h);
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  EXPECT_TRUE(all_close(out, ef, 0, 0));
}

TEST(FakeQuantize, AsymmetricByHand) {
  QuantParams p;
  p.scale = 0.25, p.zero_point = 10, p.qmin = 0, p.qmax = 255;
  // -2.5 -> -10 + 10 = 0; -3 -> -12 + 10 = -2 -> 0; 62 -> 248 + 10 = 258 -> 255 -> 61.25;
  // 0.375 -> 1.5 -> 2 (tie to even) -> 12 -> 0.5; 0.625 -> 2.5 -> 2 -> 0.5.
  at::Tensor x = at::tensor({-2.5, -3.0, 62.0, 0.375, 0.625}, at::kDouble);
  at::Tensor e = at::tensor({-2.5, -2.5, 61.25, 0.5, 0.5}, at::kDouble);
  EXPECT_TRUE(all_close(fake_quantize(x, p), e, 0, 0));
}

}  // namespace
}  // namespace segslim
