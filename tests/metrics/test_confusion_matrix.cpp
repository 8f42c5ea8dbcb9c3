#include <gtest/gtest.h>

#include "common/error.h"
#include "metrics/confusion_matrix.h"

namespace segslim {
namespace {

// 3 classes, ignore 255. Labels / predictions chosen so every number is easy by hand:
//   label: 0 0 0 1 1 2 255 2
//   pred : 0 0 1 1 5 2  0  0        (5 is outside the class range)
// counts: (0,0)=2 (0,1)=1 (1,1)=1 (1,out)=1 (2,0)=1 (2,2)=1; the 255 pixel is skipped.
TEST(ConfusionMatrix, HandComputedMetrics) {
  ConfusionMatrix cm(3, 255);
  at::Tensor label = at::tensor({0, 0, 0, 1, 1, 2, 255, 2}, at::kLong).reshape({2, 4});
  at::Tensor pred = at::tensor({0, 0, 1, 1, 5, 2, 0, 0}, at::kLong).reshape({2, 4});
  cm.update(pred, label);
  const std::vector<int64_t> expected = {2, 1, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0};
  EXPECT_EQ(cm.counts(), expected);

  SegMetrics m = cm.compute();
  EXPECT_EQ(m.num_pixels, 7);
  // class 0: tp 2, label 3, pred 3 -> IoU 2/4; class 1: tp 1, label 2, pred 2 -> 1/3;
  // class 2: tp 1, label 2, pred 1 -> 1/2.
  EXPECT_NEAR(m.class_iou[0], 0.5, 1e-12);
  EXPECT_NEAR(m.class_iou[1], 1.0 / 3, 1e-12);
  EXPECT_NEAR(m.class_iou[2], 0.5, 1e-12);
  EXPECT_NEAR(m.miou, (0.5 + 1.0 / 3 + 0.5) / 3, 1e-12);
  EXPECT_NEAR(m.acc, 4.0 / 7, 1e-12);
  EXPECT_NEAR(m.macc, (2.0 / 3 + 0.5 + 0.5) / 3, 1e-12);
  EXPECT_NEAR(m.class_dice[2], 2.0 * 1 / (2 + 1), 1e-12);
  // pe = (3*3 + 2*2 + 2*1) / 49 = 15/49; kappa = (4/7 - 15/49) / (1 - 15/49) = 13/34
  EXPECT_NEAR(m.kappa, 13.0 / 34, 1e-12);
}

TEST(ConfusionMatrix, AbsentClassHasZeroIouAndMergeAdds) {
  ConfusionMatrix a(3, 255), b(3, 255);
  a.update(at::tensor({0, 1}, at::kLong), at::tensor({0, 1}, at::kLong));
  b.update(at::tensor({1, 1}, at::kLong), at::tensor({1, 0}, at::kLong));
  a.merge(b);
  SegMetrics m = a.compute();
  EXPECT_EQ(m.num_pixels, 4);
  EXPECT_NEAR(m.class_iou[0], 1.0 / 2, 1e-12);  // tp 1, label 2, pred 1
  EXPECT_NEAR(m.class_iou[1], 2.0 / 3, 1e-12);  // tp 2, label 2, pred 3
  EXPECT_EQ(m.class_iou[2], 0.0);
}

TEST(ConfusionMatrix, RejectsLabelOutOfRange) {
  ConfusionMatrix cm(3, 255);
  try {
    cm.update(at::tensor({0, 1}, at::kLong), at::tensor({0, 7}, at::kLong));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("label value 7"), std::string::npos) << e.what();
  }
}

TEST(ConfusionMatrix, MatchesNaiveLoopOnRandomData) {
  at::manual_seed(3);
  const int64_t k = 5;
  at::Tensor label = at::randint(0, k + 1, {4, 17, 23}, at::kLong);
  label.masked_fill_(label == k, 255);
  at::Tensor pred = at::randint(0, k + 2, {4, 17, 23}, at::kLong);
  ConfusionMatrix cm(k, 255);
  cm.update(pred, label);
  std::vector<int64_t> naive(k * (k + 1), 0);
  auto l = label.reshape({-1}), p = pred.reshape({-1});
  for (int64_t i = 0; i < l.numel(); ++i) {
    const int64_t t = l[i].item<int64_t>(), q = p[i].item<int64_t>();
    if (t == 255) continue;
    naive[t * (k + 1) + std::min(q, k)] += 1;
  }
  EXPECT_EQ(cm.counts(), naive);
}

}  // namespace
}  // namespace segslim
