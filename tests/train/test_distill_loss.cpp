#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "common/error.h"
#include "support/test_support.h"
#include "train/distill_loss.h"

namespace segslim {
namespace {

using segslim::testing::all_close;

// Central finite differences of a scalar function of x (double), element by element.
at::Tensor numeric_grad(const std::function<double(const at::Tensor&)>& f, const at::Tensor& x) {
  at::Tensor g = at::zeros_like(x);
  at::Tensor xc = x.detach().clone();
  const double eps = 1e-6;
  auto flat = xc.view({-1});
  for (int64_t i = 0; i < xc.numel(); ++i) {
    const double v = flat[i].item<double>();
    flat[i] = v + eps;
    const double up = f(xc);
    flat[i] = v - eps;
    const double down = f(xc);
    flat[i] = v;
    g.view({-1})[i] = (up - down) / (2 * eps);
  }
  return g;
}

// Student gets the finite-difference gradient, the teacher none.
void check_grads(const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& loss,
                 const at::Tensor& s0, const at::Tensor& t0) {
  at::Tensor s = s0.clone().set_requires_grad(true);
  at::Tensor t = t0.clone().set_requires_grad(true);
  loss(s, t).backward();
  ASSERT_TRUE(s.grad().defined());
  EXPECT_FALSE(t.grad().defined()) << "the teacher received a gradient";
  at::Tensor expected =
      numeric_grad([&](const at::Tensor& x) { return loss(x, t0).item<double>(); }, s0);
  EXPECT_TRUE(all_close(s.grad(), expected, 1e-5, 1e-8));
}

TEST(L2DistillLoss, HandValueAndGradients) {
  at::Tensor s = at::tensor({1.0, 2.0, 3.0, 4.0}, at::kDouble).reshape({2, 2});
  at::Tensor t = at::tensor({0.0, 2.0, 5.0, 1.0}, at::kDouble).reshape({2, 2});
  // squared differences 1, 0, 4, 9 -> mean 3.5
  EXPECT_DOUBLE_EQ(l2_distill_loss(s, t).item<double>(), 3.5);
  check_grads(l2_distill_loss, at::randn({2, 3, 4}, at::kDouble),
              at::randn({2, 3, 4}, at::kDouble));
  EXPECT_THROW(l2_distill_loss(at::zeros({2, 2}), at::zeros({2, 3})), Error);
}

// Naive: loops over positions and channels with std::exp.
double naive_soft_label(const at::Tensor& s, const at::Tensor& t, double T) {
  const int64_t n = s.size(0), c = s.size(1), hw = s.size(2) * s.size(3);
  at::Tensor sf = s.reshape({n, c, hw}), tf = t.reshape({n, c, hw});
  double total = 0;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t p = 0; p < hw; ++p) {
      double zs = 0, zt = 0;
      for (int64_t k = 0; k < c; ++k) {
        zs += std::exp(sf[b][k][p].item<double>() / T);
        zt += std::exp(tf[b][k][p].item<double>() / T);
      }
      for (int64_t k = 0; k < c; ++k) {
        const double ps = std::exp(sf[b][k][p].item<double>() / T) / zs;
        const double pt = std::exp(tf[b][k][p].item<double>() / T) / zt;
        total += pt * std::log(pt / ps);
      }
    }
  return total / static_cast<double>(n * hw) * T * T;
}

TEST(SoftLabelDistillLoss, MatchesNaiveLoopAndGradients) {
  at::Tensor s = at::randn({2, 4, 3, 2}, at::kDouble) * 3;
  at::Tensor t = at::randn({2, 4, 3, 2}, at::kDouble) * 3;
  for (double T : {1.0, 2.0, 4.5})
    EXPECT_NEAR(soft_label_distill_loss(s, t, T).item<double>(), naive_soft_label(s, t, T), 1e-10)
        << "T " << T;
  EXPECT_NEAR(soft_label_distill_loss(t, t, 3.0).item<double>(), 0.0, 1e-12);
  check_grads(
      [](const at::Tensor& a, const at::Tensor& b) { return soft_label_distill_loss(a, b, 2.0); },
      s, t);
  EXPECT_THROW(soft_label_distill_loss(s, t, 0.0), Error);
  EXPECT_THROW(soft_label_distill_loss(s, t.slice(1, 0, 3), 1.0), Error);
}

// Naive bilinear resize, align_corners = false (half-pixel centres, clamped at 0, like
// PyTorch's upsample_bilinear2d), for one [h, w] plane.
double bilinear_at(const at::Tensor& plane, int64_t oy, int64_t ox, int64_t H, int64_t W) {
  const int64_t h = plane.size(0), w = plane.size(1);
  auto src = [](int64_t o, int64_t in, int64_t out) {
    return std::max((o + 0.5) * static_cast<double>(in) / out - 0.5, 0.0);
  };
  const double sy = src(oy, h, H), sx = src(ox, w, W);
  const int64_t y0 = static_cast<int64_t>(sy), x0 = static_cast<int64_t>(sx);
  const int64_t y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
  const double ly = sy - y0, lx = sx - x0;
  auto v = [&](int64_t y, int64_t x) { return plane[y][x].item<double>(); };
  return (1 - ly) * ((1 - lx) * v(y0, x0) + lx * v(y0, x1)) +
         ly * ((1 - lx) * v(y1, x0) + lx * v(y1, x1));
}

// Naive weighted CE: sum w_y * (-log softmax_y) / sum w_y over non-ignored pixels.
double naive_ce(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore,
                const std::vector<double>& weights) {
  const int64_t n = logits.size(0), c = logits.size(1), H = labels.size(1), W = labels.size(2);
  double num = 0, den = 0;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t l = labels[b][y][x].item<int64_t>();
        if (l == ignore) continue;
        std::vector<double> z(c);
        double zmax = -1e300, sum = 0;
        for (int64_t k = 0; k < c; ++k) {
          z[k] = bilinear_at(logits[b][k], y, x, H, W);
          zmax = std::max(zmax, z[k]);
        }
        for (int64_t k = 0; k < c; ++k) sum += std::exp(z[k] - zmax);
        const double nll = -(z[l] - zmax - std::log(sum));
        const double wl = weights.empty() ? 1.0 : weights[l];
        num += wl * nll, den += wl;
      }
  return num / den;
}

TEST(SegmentationCeLoss, MatchesNaiveSameSizeResizedAndWeighted) {
  at::Tensor logits = at::randn({2, 3, 4, 5}, at::kDouble);
  at::Tensor labels = at::randint(0, 3, {2, 4, 5}, at::kLong);
  labels[0][1][2] = 255;
  labels[1][3][4] = 255;
  EXPECT_NEAR(segmentation_ce_loss(logits, labels, 255).item<double>(),
              naive_ce(logits, labels, 255, {}), 1e-10);
  const std::vector<double> w = {0.5, 2.0, 1.0};
  EXPECT_NEAR(segmentation_ce_loss(logits, labels, 255, at::tensor(w, at::kDouble)).item<double>(),
              naive_ce(logits, labels, 255, w), 1e-10);
  // Labels at twice (and a non-integer multiple of) the logits' resolution; [N, 1, H, W] too.
  for (auto hw : {std::pair<int64_t, int64_t>{8, 10}, {7, 13}}) {
    at::Tensor big = at::randint(0, 3, {2, hw.first, hw.second}, at::kLong);
    big[1][0][0] = 255;
    EXPECT_NEAR(segmentation_ce_loss(logits, big.unsqueeze(1), 255).item<double>(),
                naive_ce(logits, big, 255, {}), 1e-10);
  }
}

TEST(SegmentationCeLoss, GradientsMatchFiniteDifferences) {
  at::Tensor logits = at::randn({1, 3, 2, 3}, at::kDouble);
  at::Tensor labels = at::randint(0, 3, {1, 4, 5}, at::kLong);
  labels[0][0][0] = 255;
  at::Tensor w = at::tensor({0.5, 2.0, 1.0}, at::kDouble);
  auto f = [&](const at::Tensor& x) { return segmentation_ce_loss(x, labels, 255, w); };
  at::Tensor x = logits.clone().set_requires_grad(true);
  f(x).backward();
  at::Tensor expected =
      numeric_grad([&](const at::Tensor& v) { return f(v).item<double>(); }, logits);
  EXPECT_TRUE(all_close(x.grad(), expected, 1e-5, 1e-8));
}

TEST(SegmentationCeLoss, BadLabelsAndAllIgnored) {
  at::Tensor logits = at::randn({1, 3, 2, 2});
  at::Tensor labels = at::tensor({0, 1, 7, 255}, at::kLong).reshape({1, 2, 2});
  try {
    segmentation_ce_loss(logits, labels, 255);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("label 7"), std::string::npos) << e.what();
  }
  EXPECT_THROW(segmentation_ce_loss(logits, at::full({1, 2, 2}, -1, at::kLong), 255), Error);
  EXPECT_NO_THROW(segmentation_ce_loss(logits, at::full({1, 2, 2}, -1, at::kLong), -1));
  at::Tensor x = logits.clone().set_requires_grad(true);
  at::Tensor loss = segmentation_ce_loss(x, at::full({1, 2, 2}, 255, at::kLong), 255);
  EXPECT_EQ(loss.item<double>(), 0.0);
  loss.backward();  // still part of the graph
  EXPECT_TRUE(x.grad().defined());
}

}  // namespace
}  // namespace segslim
