// Reduction / Softmax behaviour the ONNX conformance cases miss, against naive loops.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/op_test_util.h"

namespace segslim::testing {
namespace {

TEST(ReduceExtra, ReduceSumOpset11AxesAttribute) {
  auto m = one_node_model("ReduceSum", {"x"}, {"y"}, 11);
  set_ints(m.node, "axes", {0, -1});
  set_int(m.node, "keepdims", 0);
  const at::Tensor x = at::arange(24, at::kFloat).reshape({2, 3, 4});
  const auto y = run_model(m.model, {{"x", x}})[0];
  std::vector<float> expected(3, 0.f);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) expected[j] += static_cast<float>(i * 12 + j * 4 + k);
  EXPECT_TRUE(all_close(y, at::tensor(expected), 0, 0));
}

TEST(ReduceExtra, ReduceSumNoopWithEmptyAxes) {
  auto m = one_node_model("ReduceSum", {"x"}, {"y"}, 13);
  set_int(m.node, "noop_with_empty_axes", 1);
  const at::Tensor x = at::randn({2, 3});
  EXPECT_TRUE(all_close(run_model(m.model, {{"x", x}})[0], x, 0, 0));
}

TEST(ReduceExtra, ReduceSumKeepsIntegerType) {
  auto m = one_node_model("ReduceSum", {"x", "axes"}, {"y"}, 13);
  const auto y = run_model(m.model, {{"x", at::tensor({1, 2, 3, 4}, at::kInt).reshape({2, 2})},
                                     {"axes", at::tensor({1}, at::kLong)}})[0];
  EXPECT_EQ(y.scalar_type(), at::kInt);
  EXPECT_TRUE(at::equal(y, at::tensor({3, 7}, at::kInt).reshape({2, 1})));
}

TEST(ReduceExtra, SoftmaxOpset11CoercesTo2D) {
  // Softmax-11 with axis 1 on [2, 3, 4] normalizes jointly over the last 12 elements of each
  // batch item (not over axis 1 alone, as Softmax-13 would).
  auto m = one_node_model("Softmax", {"x"}, {"y"}, 11);
  set_int(m.node, "axis", 1);
  at::manual_seed(5);
  const at::Tensor x = at::randn({2, 3, 4}, at::kDouble);
  ExecutorOptions opts;
  opts.float_type = at::kDouble;
  const auto y = run_model(m.model, {{"x", x}}, opts)[0];
  at::Tensor expected = at::empty_like(x);
  auto xa = x.accessor<double, 3>();
  auto ea = expected.accessor<double, 3>();
  for (int n = 0; n < 2; ++n) {
    double total = 0;
    for (int c = 0; c < 3; ++c)
      for (int k = 0; k < 4; ++k) total += std::exp(xa[n][c][k]);
    for (int c = 0; c < 3; ++c)
      for (int k = 0; k < 4; ++k) ea[n][c][k] = std::exp(xa[n][c][k]) / total;
  }
  EXPECT_TRUE(all_close(y, expected, 1e-12, 1e-12));
}

TEST(ReduceExtra, ArgMaxSelectLastIndexWithTies) {
  auto m = one_node_model("ArgMax", {"x"}, {"i"});
  set_int(m.node, "axis", 1);
  set_int(m.node, "keepdims", 0);
  set_int(m.node, "select_last_index", 1);
  const auto i = run_model(
      m.model, {{"x", at::tensor({3.f, 1.f, 3.f, 2.f, 5.f, 5.f, 5.f, 0.f}).reshape({2, 4})}})[0];
  EXPECT_EQ(i.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(i, at::tensor({2, 2}, at::kLong)));
}

}  // namespace
}  // namespace segslim::testing
