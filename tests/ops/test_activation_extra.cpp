// Activation behaviour the ONNX conformance cases miss, against hand-written references.
#include <gtest/gtest.h>

#include "common/error.h"
#include "ops/op_test_util.h"

namespace segslim::testing {
namespace {

// Naive PRelu with a per-channel slope: y = x if x >= 0 else slope[c] * x.
at::Tensor naive_prelu(const at::Tensor& x, const at::Tensor& slope) {
  at::Tensor y = x.clone();
  auto xa = x.accessor<double, 4>();
  auto sa = slope.accessor<double, 3>();
  auto ya = y.accessor<double, 4>();
  for (int64_t n = 0; n < x.size(0); ++n)
    for (int64_t c = 0; c < x.size(1); ++c)
      for (int64_t h = 0; h < x.size(2); ++h)
        for (int64_t w = 0; w < x.size(3); ++w)
          if (xa[n][c][h][w] < 0) ya[n][c][h][w] = sa[c][0][0] * xa[n][c][h][w];
  return y;
}

TEST(ActivationExtra, PReluPerChannelSlopeAndItsGradient) {
  auto m = one_node_model("PRelu", {"x", "slope"}, {"y"});
  at::manual_seed(3);
  const at::Tensor x = at::randn({2, 3, 4, 5}, at::kDouble);
  const at::Tensor slope = at::tensor({0.1, -0.5, 2.0}, at::kDouble).reshape({3, 1, 1});
  ExecutorOptions opts;
  opts.float_type = at::kDouble;
  Executor exec(m.model, opts);
  at::Tensor s = slope.clone().requires_grad_(true);
  at::Tensor y = exec.run({{"x", x}, {"slope", s}}).at("y");
  EXPECT_TRUE(all_close(y, naive_prelu(x, slope), 1e-12, 1e-12));

  // d/d slope[c] of sum(y * r) by central differences on the naive reference.
  const at::Tensor r = at::randn(y.sizes(), at::kDouble);
  (y * r).sum().backward();
  for (int64_t c = 0; c < 3; ++c) {
    at::Tensor plus = slope.clone(), minus = slope.clone();
    plus[c] += 1e-6;
    minus[c] -= 1e-6;
    const double numeric = ((naive_prelu(x, plus) * r).sum().item<double>() -
                            (naive_prelu(x, minus) * r).sum().item<double>()) /
                           2e-6;
    EXPECT_NEAR(s.grad()[c][0][0].item<double>(), numeric, 1e-6) << "channel " << c;
  }
}

TEST(ActivationExtra, PReluSlopeInitializerIsTrainable) {
  auto m = one_node_model("PRelu", {"x", "slope"}, {"y"});
  make_initializer(m.model, "slope", at::full({3, 1, 1}, 0.25f));
  Executor exec(m.model);
  ASSERT_EQ(exec.named_weights().size(), 1u);
  EXPECT_EQ(exec.named_weights()[0].first, "slope");
}

TEST(ActivationExtra, PReluRejectsSlopeThatDoesNotBroadcast) {
  auto m = one_node_model("PRelu", {"x", "slope"}, {"y"});
  EXPECT_THROW(run_model(m.model, {{"x", at::randn({1, 3, 4, 5})}, {"slope", at::ones({3})}}),
               Error);
}

TEST(ActivationExtra, ClipOpset7Attributes) {
  auto m = one_node_model("Clip", {"x"}, {"y"}, 7);
  set_float(m.node, "min", -1.f);
  set_float(m.node, "max", 0.5f);
  const auto y = run_model(m.model, {{"x", at::tensor({-3.f, -0.2f, 0.4f, 9.f})}})[0];
  EXPECT_TRUE(all_close(y, at::tensor({-1.f, -0.2f, 0.4f, 0.5f}), 0, 0));
}

TEST(ActivationExtra, ClipOpset7DefaultsToNoBounds) {
  auto m = one_node_model("Clip", {"x"}, {"y"}, 7);
  const at::Tensor x = at::tensor({-3e30f, 3e30f});
  EXPECT_TRUE(all_close(run_model(m.model, {{"x", x}})[0], x, 0, 0));
}

TEST(ActivationExtra, ClipOpset13IntegerWithOnlyMax) {
  auto m = one_node_model("Clip", {"x", "", "hi"}, {"y"}, 13);
  const auto y = run_model(m.model, {{"x", at::tensor({-5, 3, 7}, at::kInt)},
                                     {"hi", at::scalar_tensor(4, at::kInt)}})[0];
  EXPECT_EQ(y.scalar_type(), at::kInt);
  EXPECT_TRUE(at::equal(y, at::tensor({-5, 3, 4}, at::kInt)));
}

TEST(ActivationExtra, HardSigmoidAttributes) {
  auto m = one_node_model("HardSigmoid", {"x"}, {"y"});
  set_float(m.node, "alpha", 0.5f);
  set_float(m.node, "beta", 0.25f);
  // max(0, min(1, 0.5 x + 0.25))
  const auto y = run_model(m.model, {{"x", at::tensor({-2.f, 0.f, 1.f, 4.f})}})[0];
  EXPECT_TRUE(all_close(y, at::tensor({0.f, 0.25f, 0.75f, 1.f}), 0, 1e-7));
}

}  // namespace
}  // namespace segslim::testing
