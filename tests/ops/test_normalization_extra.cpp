// BatchNormalization in executor train mode (batch statistics, running stats updated in
// place) and LayerNormalization without the statistics outputs, against hand formulas.
#include <gtest/gtest.h>

#include "ops/op_test_util.h"

namespace segslim::testing {
namespace {

TEST(BatchNormExtra, TrainModeUsesBatchStatsAndUpdatesRunningStats) {
  at::manual_seed(21);
  const at::Tensor x = at::randn({2, 5, 3, 1}, at::kDouble) * 2 + 1;
  const at::Tensor scale = at::randn({5}, at::kDouble), bias = at::randn({5}, at::kDouble);
  const at::Tensor mean0 = at::randn({5}, at::kDouble), var0 = at::rand({5}, at::kDouble) + 0.5;
  auto m = one_node_model("BatchNormalization", {"X", "scale", "B", "mean", "var"}, {"Y"}, 15);
  set_float(m.node, "momentum", 0.8f);
  set_float(m.node, "epsilon", 1e-3f);
  make_initializer(m.model, "scale", scale);
  make_initializer(m.model, "B", bias);
  make_initializer(m.model, "mean", mean0);
  make_initializer(m.model, "var", var0);
  ExecutorOptions opts;
  opts.float_type = at::kDouble;
  Executor exec(m.model, opts);
  exec.set_training(true);
  const at::Tensor y = exec.run({{"X", x}}).at("Y");

  const at::Tensor bm = x.mean({0, 2, 3});
  const at::Tensor bv = x.var({0, 2, 3}, /*unbiased=*/false);
  const at::Tensor bv_unbiased = x.var({0, 2, 3}, /*unbiased=*/true);
  const at::Tensor expected = (x - bm.view({1, -1, 1, 1})) /
                                  at::sqrt(bv.view({1, -1, 1, 1}) + 1e-3f) *
                                  scale.view({1, -1, 1, 1}) +
                              bias.view({1, -1, 1, 1});
  EXPECT_TRUE(all_close(y, expected, 1e-6, 1e-6));
  // ONNX momentum 0.8 keeps 80% of the old statistics (PyTorch momentum 0.2); the variance
  // update takes the unbiased batch variance, as PyTorch does.
  const auto& init = exec.initializers();
  const float mom = 0.8f;
  EXPECT_TRUE(all_close(init.at("mean"), mean0 * mom + bm * (1 - mom), 1e-6, 1e-6));
  EXPECT_TRUE(all_close(init.at("var"), var0 * mom + bv_unbiased * (1 - mom), 1e-6, 1e-6));
  EXPECT_EQ(exec.named_buffers().size(), 2u);
  EXPECT_EQ(exec.named_weights().size(), 2u);

  // Eval mode afterwards normalizes with the updated running statistics.
  exec.set_training(false);
  const at::Tensor rm = init.at("mean").detach().clone(), rv = init.at("var").detach().clone();
  const at::Tensor y_eval = exec.run({{"X", x}}).at("Y");
  const at::Tensor expected_eval = (x - rm.view({1, -1, 1, 1})) /
                                       at::sqrt(rv.view({1, -1, 1, 1}) + 1e-3f) *
                                       scale.view({1, -1, 1, 1}) +
                                   bias.view({1, -1, 1, 1});
  EXPECT_TRUE(all_close(y_eval, expected_eval, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(init.at("mean"), rm, 0, 0));  // eval leaves the statistics alone
}

TEST(LayerNormExtra, WithoutStatisticsOutputsAndNoBias) {
  at::manual_seed(22);
  const at::Tensor x = at::randn({2, 3, 5}, at::kDouble);
  const at::Tensor scale = at::randn({3, 5}, at::kDouble);
  auto m = one_node_model("LayerNormalization", {"X", "W"}, {"Y"}, 17);
  set_int(m.node, "axis", 1);
  const at::Tensor mean = x.mean({1, 2}, true);
  const at::Tensor var = x.var({1, 2}, /*unbiased=*/false, true);
  const at::Tensor expected = (x - mean) / at::sqrt(var + 1e-5f) * scale;
  const TensorMap feeds{{"X", x}, {"W", scale}};
  EXPECT_TRUE(all_close(run_first(m.model, feeds), expected, 1e-6, 1e-6));
  expect_gradients_match(m.model, feeds, {"X", "W"}, 8);
}

}  // namespace
}  // namespace segslim::testing
