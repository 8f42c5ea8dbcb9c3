// Elementwise behaviour the ONNX conformance cases miss, against hand-computed values.
#include <gtest/gtest.h>

#include "ops/op_test_util.h"

namespace segslim::testing {
namespace {

TEST(ElementwiseExtra, IntegerDivTruncatesTowardZero) {
  auto m = one_node_model("Div", {"a", "b"}, {"c"});
  const auto c = run_model(m.model, {{"a", at::tensor({-7, 7, -7, 6}, at::kLong)},
                                     {"b", at::tensor({2, -2, -2, 4}, at::kLong)}})[0];
  EXPECT_EQ(c.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(c, at::tensor({-3, -3, 3, 1}, at::kLong)));
}

TEST(ElementwiseExtra, VectorInitializersTrainScalarOnesDoNot) {
  auto m = one_node_model("Add", {"x", "bias"}, {"y"});
  make_initializer(m.model, "bias", at::ones({3}));
  EXPECT_EQ(Executor(m.model).named_weights().size(), 1u);

  auto s = one_node_model("Mul", {"x", "scale"}, {"y"});
  make_initializer(s.model, "scale", at::full({1}, 2.f));
  EXPECT_TRUE(Executor(s.model).named_weights().empty());
}

TEST(ElementwiseExtra, PowKeepsTheBaseType) {
  auto m = one_node_model("Pow", {"x", "y"}, {"z"});
  const auto z = run_model(
      m.model, {{"x", at::tensor({2, 3, -2}, at::kInt)}, {"y", at::tensor({0.5f, 2.f, 3.f})}})[0];
  EXPECT_EQ(z.scalar_type(), at::kInt);
  // 2^0.5 = 1.41 truncates to 1.
  EXPECT_TRUE(at::equal(z, at::tensor({1, 9, -8}, at::kInt)));
}

TEST(ElementwiseExtra, WhereWithBroadcastCondition) {
  auto m = one_node_model("Where", {"c", "x", "y"}, {"z"});
  const auto z = run_model(m.model, {{"c", at::tensor({1, 0}, at::kInt).to(at::kBool)},
                                     {"x", at::tensor({1.f, 2.f, 3.f, 4.f}).reshape({2, 2})},
                                     {"y", at::scalar_tensor(-1.f)}})[0];
  EXPECT_TRUE(all_close(z, at::tensor({1.f, -1.f, 3.f, -1.f}).reshape({2, 2}), 0, 0));
}

TEST(ElementwiseExtra, VariadicMaxOfThree) {
  auto m = one_node_model("Max", {"a", "b", "c"}, {"m"});
  const auto r = run_model(m.model, {{"a", at::tensor({1.f, 5.f, 0.f})},
                                     {"b", at::tensor({4.f, 2.f, 0.f})},
                                     {"c", at::scalar_tensor(3.f)}})[0];
  EXPECT_TRUE(all_close(r, at::tensor({4.f, 5.f, 3.f}), 0, 0));
}

}  // namespace
}  // namespace segslim::testing
