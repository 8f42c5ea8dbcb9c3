// QuantizeLinear / DequantizeLinear against hand-computed values (ties, saturation, int8 and
// uint8, per-axis), and the executor's fused Q->DQ step against the unfused kernels.
#include <gtest/gtest.h>

#include "ops/op_test_util.h"

namespace segslim::testing {
namespace {

at::Tensor f32(std::vector<float> v, std::vector<int64_t> shape) {
  return at::tensor(v, at::kFloat).reshape(shape);
}

// x -> op(x, scale, zp) with scale and zero point as initializers (zp omitted when undefined).
onnx::ModelProto qdq_op(const std::string& op, const at::Tensor& scale, const at::Tensor& zp,
                        int64_t axis = -100) {
  std::vector<std::string> inputs{"x", "s"};
  if (zp.defined()) inputs.push_back("zp");
  auto m = one_node_model(op, inputs, {"y"});
  if (axis != -100) set_int(m.node, "axis", axis);
  make_initializer(m.model, "s", scale);
  if (zp.defined()) make_initializer(m.model, "zp", zp);
  return m.model;
}

at::Tensor run_op(const onnx::ModelProto& model, const at::Tensor& x) {
  ExecutorOptions opts;
  Executor exec(model, opts);
  return exec.run({{"x", x}}).at("y");
}

TEST(QuantizeLinear, RoundsHalfToEvenAndSaturatesInt8) {
  // x / 0.5 = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2000, -2000, 0.6]; ties go to the even integer.
  const auto x = f32({0.25f, 0.75f, 1.25f, -0.25f, -0.75f, -1.25f, 1000, -1000, 0.3f}, {9});
  const auto q =
      run_op(qdq_op("QuantizeLinear", at::scalar_tensor(0.5f), at::scalar_tensor(1, at::kChar)), x);
  ASSERT_EQ(q.scalar_type(), at::kChar);
  const auto expected =
      at::tensor(std::vector<int8_t>{1, 3, 3, 1, -1, -1, 127, -128, 2}, at::kChar);
  EXPECT_TRUE(at::equal(q, expected)) << q;
}

TEST(QuantizeLinear, Uint8WithZeroPointSaturatesAtBothEnds) {
  const auto x = f32({0.25f, 0.75f, -1000, 1000, -0.25f, -63.5f}, {6});
  const auto q = run_op(
      qdq_op("QuantizeLinear", at::scalar_tensor(0.5f), at::scalar_tensor(128, at::kByte)), x);
  ASSERT_EQ(q.scalar_type(), at::kByte);
  // [0.5, 1.5, -2000, 2000, -0.5, -127] rounded, + 128, clamped to [0, 255].
  const auto expected = at::tensor(std::vector<uint8_t>{128, 130, 0, 255, 128, 1}, at::kByte);
  EXPECT_TRUE(at::equal(q, expected)) << q;
}

TEST(QuantizeLinear, MissingZeroPointMeansUint8Zero) {
  const auto q = run_op(qdq_op("QuantizeLinear", at::scalar_tensor(1.0f), at::Tensor()),
                        f32({-1, 0.5f, 1.5f, 300}, {4}));
  ASSERT_EQ(q.scalar_type(), at::kByte);
  EXPECT_TRUE(at::equal(q, at::tensor(std::vector<uint8_t>{0, 0, 2, 255}, at::kByte))) << q;
}

TEST(QuantizeLinear, PerAxis0And1) {
  // axis 0: row 1 has scale 2 and zero point 1: [1, 2, 3] / 2 = [0.5, 1, 1.5] -> [0, 1, 2] + 1.
  const auto x0 = f32({1, 2, 3, 1, 2, 3}, {2, 3});
  const auto q0 = run_op(qdq_op("QuantizeLinear", f32({1, 2}, {2}),
                                at::tensor(std::vector<int8_t>{0, 1}, at::kChar), 0),
                         x0);
  EXPECT_TRUE(
      at::equal(q0, at::tensor(std::vector<int8_t>{1, 2, 3, 1, 2, 3}, at::kChar).reshape({2, 3})))
      << q0;
  // axis 1: column scales [2, 4]: [[0.5, 0.75], [-0.5, -0.75]] -> [[0, 1], [0, -1]].
  const auto x1 = f32({1, 3, -1, -3}, {2, 2});
  const auto q1 = run_op(qdq_op("QuantizeLinear", f32({2, 4}, {2}),
                                at::tensor(std::vector<int8_t>{0, 0}, at::kChar), 1),
                         x1);
  EXPECT_TRUE(
      at::equal(q1, at::tensor(std::vector<int8_t>{0, 1, 0, -1}, at::kChar).reshape({2, 2})))
      << q1;
  // The default axis is 1.
  const auto q1d = run_op(
      qdq_op("QuantizeLinear", f32({2, 4}, {2}), at::tensor(std::vector<int8_t>{0, 0}, at::kChar)),
      x1);
  EXPECT_TRUE(at::equal(q1d, q1));
}

TEST(DequantizeLinear, PerTensorAndPerAxis) {
  auto m = qdq_op("DequantizeLinear", at::scalar_tensor(0.125f), at::scalar_tensor(128, at::kByte));
  Executor e(m);
  const auto y = e.run({{"x", at::tensor(std::vector<uint8_t>{0, 255, 128}, at::kByte)}}).at("y");
  EXPECT_TRUE(at::equal(y, f32({-16, 15.875f, 0}, {3}))) << y;

  auto m0 = qdq_op("DequantizeLinear", f32({0.5f, 2}, {2}),
                   at::tensor(std::vector<int8_t>{1, -2}, at::kChar), 0);
  Executor e0(m0);
  const auto q = at::tensor(std::vector<int8_t>{-128, 127, 0, 5}, at::kChar).reshape({2, 2});
  const auto y0 = e0.run({{"x", q}}).at("y");
  // row 0: (q - 1) * 0.5, row 1: (q + 2) * 2.
  EXPECT_TRUE(at::equal(y0, f32({-64.5f, 63, 4, 14}, {2, 2}))) << y0;
}

TEST(DequantizeLinear, RejectsMismatchedZeroPointType) {
  auto m = qdq_op("DequantizeLinear", at::scalar_tensor(1.0f), at::scalar_tensor(0, at::kByte));
  Executor e(m);
  EXPECT_THROW(e.run({{"x", at::tensor(std::vector<int8_t>{1}, at::kChar)}}), Error);
}

// x -> Q -> DQ -> y, scale / zero point initializers.
onnx::ModelProto qdq_pair(const at::Tensor& scale, const at::Tensor& zp, int64_t axis = 1) {
  auto m = one_node_model("QuantizeLinear", {"x", "s", "zp"}, {"q"});
  set_int(m.node, "axis", axis);
  auto* g = m.model.mutable_graph();
  g->mutable_output(0)->set_name("y");
  auto* dq = g->add_node();
  dq->set_op_type("DequantizeLinear");
  dq->set_name("dq");
  for (const char* i : {"q", "s", "zp"}) dq->add_input(i);
  dq->add_output("y");
  set_int(dq, "axis", axis);
  make_initializer(m.model, "s", scale);
  make_initializer(m.model, "zp", zp);
  return m.model;
}

at::Tensor run_pair(const onnx::ModelProto& model, const at::Tensor& x, bool fuse,
                    at::ScalarType type = at::kFloat) {
  ExecutorOptions opts;
  opts.fuse_qdq = fuse;
  opts.float_type = type;
  Executor exec(model, opts);
  return exec.run({{"x", x}}).at("y");
}

TEST(FusedQdq, EqualsUnfusedPerTensorAndPerChannel) {
  at::manual_seed(0);
  const auto x = at::randn({2, 3, 5, 5}) * 3;
  for (auto zp : {at::scalar_tensor(3, at::kChar), at::scalar_tensor(100, at::kByte)}) {
    const auto model = qdq_pair(at::scalar_tensor(0.037f), zp);
    EXPECT_TRUE(at::equal(run_pair(model, x, true), run_pair(model, x, false)));
    // In double, the fused step still computes in float32 (what the ATen kernels take).
    EXPECT_TRUE(all_close(run_pair(model, x, true, at::kDouble),
                          run_pair(model, x, false, at::kDouble), 1e-6, 1e-6));
  }
  for (int64_t axis : {0, 1}) {
    const int64_t c = x.size(axis);
    const auto model =
        qdq_pair(at::rand({c}) * 0.05f + 0.01f, at::randint(-5, 5, {c}, at::kChar), axis);
    EXPECT_TRUE(at::equal(run_pair(model, x, true), run_pair(model, x, false))) << axis;
  }
}

TEST(FusedQdq, StraightThroughGradientIsOneInsideZeroWhereClamped) {
  const auto model = qdq_pair(at::scalar_tensor(0.1f), at::scalar_tensor(0, at::kChar));
  for (auto type : {at::kFloat, at::kDouble}) {
    ExecutorOptions opts;
    opts.float_type = type;
    Executor exec(model, opts);
    // 100 / 0.1 = 1000 and -1000 saturate; the rest lies inside [-128, 127].
    at::Tensor x = at::tensor(std::vector<double>{0.3, -0.2, 100, -100, 12.6, -12.8}, type)
                       .requires_grad_(true);
    const auto y = exec.run({{"x", x}}).at("y");
    EXPECT_EQ(y.scalar_type(), type);
    y.sum().backward();
    EXPECT_TRUE(at::equal(x.grad(), at::tensor(std::vector<double>{1, 1, 0, 0, 1, 1}, type)))
        << x.grad();
  }
}

TEST(FusedQdq, ScalesAreBuffersOrLsqWeights) {
  const auto model = qdq_pair(at::scalar_tensor(0.1f), at::scalar_tensor(0, at::kChar));
  {
    Executor exec(model);
    EXPECT_TRUE(exec.named_weights().empty());
    std::set<std::string> buffers;
    for (const auto& [n, t] : exec.named_buffers()) buffers.insert(n);
    EXPECT_EQ(buffers, (std::set<std::string>{"s", "zp"}));
    EXPECT_FALSE(exec.initializers().at("s").requires_grad());
  }
  ExecutorOptions opts;
  opts.learnable_quant_scales = true;
  Executor exec(model, opts);
  ASSERT_EQ(exec.named_weights().size(), 1u);
  EXPECT_EQ(exec.named_weights()[0].first, "s");
  const auto x = at::tensor(std::vector<float>{0.31f, -0.2f, 100, 5.04f});
  const auto y = exec.run({{"x", x}}).at("y");
  EXPECT_TRUE(at::equal(y.detach(), run_pair(model, x, false)));
  y.sum().backward();
  const at::Tensor g = exec.initializers().at("s").grad();
  ASSERT_TRUE(g.defined());
  EXPECT_NE(g.item<float>(), 0.0f);
}

TEST(FusedQdq, FetchingTheQuantizedTensorStillWorks) {
  const auto model = qdq_pair(at::scalar_tensor(0.5f), at::scalar_tensor(0, at::kChar));
  Executor exec(model);
  const auto out = exec.run({{"x", f32({0.25f, 0.75f, 1000}, {3})}}, {"q"});
  EXPECT_TRUE(at::equal(out.at("q"), at::tensor(std::vector<int8_t>{0, 2, 127}, at::kChar)));
  EXPECT_TRUE(at::equal(out.at("y"), f32({0, 1, 63.5f}, {3})));
}

}  // namespace
}  // namespace segslim::testing
