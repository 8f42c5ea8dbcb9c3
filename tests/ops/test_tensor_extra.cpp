// Shape / data-movement behaviour the ONNX conformance cases miss, against hand-computed
// values and naive loops.
#include <gtest/gtest.h>

#include "common/error.h"
#include "ops/op_test_util.h"

namespace segslim::testing {
namespace {

at::Tensor f(std::vector<float> v) { return at::tensor(v); }

TEST(TensorExtra, SplitOpset11Attribute) {
  auto m = one_node_model("Split", {"x"}, {"a", "b"}, 11);
  set_ints(m.node, "split", {1, 3});
  const auto out = run_model(m.model, {{"x", f({1, 2, 3, 4})}});
  EXPECT_TRUE(all_close(out[0], f({1}), 0, 0));
  EXPECT_TRUE(all_close(out[1], f({2, 3, 4}), 0, 0));
}

TEST(TensorExtra, SplitEqualPartsFromOutputCount) {
  auto m = one_node_model("Split", {"x"}, {"a", "b", "c"}, 13);
  set_int(m.node, "axis", 1);
  const auto out = run_model(m.model, {{"x", at::arange(12, at::kFloat).reshape({2, 6})}});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_TRUE(all_close(out[2], f({4, 5, 10, 11}).reshape({2, 2}), 0, 0));
}

TEST(TensorExtra, SplitRefusesUnevenEqualSplit) {
  auto m = one_node_model("Split", {"x"}, {"a", "b"}, 13);
  EXPECT_THROW(run_model(m.model, {{"x", f({1, 2, 3})}}), Error);
}

TEST(TensorExtra, SqueezeAndUnsqueezeOpset11Attributes) {
  auto sq = one_node_model("Squeeze", {"x"}, {"y"}, 11);
  set_ints(sq.node, "axes", {-1, 0});
  EXPECT_EQ(run_model(sq.model, {{"x", at::zeros({1, 3, 1, 1})}})[0].sizes(),
            at::IntArrayRef({3, 1}));
  auto un = one_node_model("Unsqueeze", {"x"}, {"y"}, 11);
  set_ints(un.node, "axes", {3, 0});
  EXPECT_EQ(run_model(un.model, {{"x", at::zeros({2, 3})}})[0].sizes(),
            at::IntArrayRef({1, 2, 3, 1}));
}

TEST(TensorExtra, SqueezeRefusesNonUnitAxis) {
  auto sq = one_node_model("Squeeze", {"x"}, {"y"}, 11);
  set_ints(sq.node, "axes", {1});
  EXPECT_THROW(run_model(sq.model, {{"x", at::zeros({1, 3})}}), Error);
}

TEST(TensorExtra, SliceOpset9Attributes) {
  auto m = one_node_model("Slice", {"x"}, {"y"}, 9);
  set_ints(m.node, "starts", {1, -2});
  set_ints(m.node, "ends", {1000, -1});
  set_ints(m.node, "axes", {0, 1});
  const at::Tensor x = at::arange(12, at::kFloat).reshape({3, 4});
  EXPECT_TRUE(all_close(run_model(m.model, {{"x", x}})[0], f({6, 10}).reshape({2, 1}), 0, 0));
}

TEST(TensorExtra, SliceNegativeStepsClampOutOfRangeBounds) {
  auto m = one_node_model("Slice", {"x", "starts", "ends", "axes", "steps"}, {"y"}, 13);
  auto run = [&](int64_t start, int64_t end, int64_t step) {
    return run_model(m.model, {{"x", at::arange(10, at::kFloat)},
                               {"starts", at::tensor({start})},
                               {"ends", at::tensor({end})},
                               {"axes", at::tensor({int64_t{0}})},
                               {"steps", at::tensor({step})}})[0];
  };
  // Naive reference: walk from the clamped start by step while before the clamped end.
  auto naive = [](int64_t start, int64_t end, int64_t step) {
    const int64_t n = 10;
    if (start < 0) start += n;
    if (end < 0) end += n;
    start = step > 0 ? std::clamp<int64_t>(start, 0, n) : std::clamp<int64_t>(start, 0, n - 1);
    end = step > 0 ? std::clamp<int64_t>(end, 0, n) : std::clamp<int64_t>(end, -1, n - 1);
    std::vector<float> v;
    for (int64_t i = start; step > 0 ? i < end : i > end; i += step)
      v.push_back(static_cast<float>(i));
    return at::tensor(v, at::kFloat);
  };
  const int64_t big = std::numeric_limits<int64_t>::max();
  for (auto [s, e, st] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {20, -100, -3}, {-1, -big, -1}, {8, 2, -2}, {2, 8, -1}, {-3, big, 2}, {0, 0, 1}}) {
    EXPECT_TRUE(all_close(run(s, e, st), naive(s, e, st), 0, 0))
        << "start " << s << " end " << e << " step " << st;
  }
}

// Naive 1-D padding reference for reflect (mirror without repeating the edge) and edge.
std::vector<float> naive_pad(const std::vector<float>& x, int64_t before, int64_t after,
                             bool reflect) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> out;
  for (int64_t i = -before; i < n + after; ++i) {
    int64_t j = i;
    if (reflect) {
      while (j < 0 || j >= n) j = j < 0 ? -j : 2 * (n - 1) - j;
    } else {
      j = std::clamp<int64_t>(j, 0, n - 1);
    }
    out.push_back(x[j]);
  }
  return out;
}

TEST(TensorExtra, PadReflectAndEdgeMatchNaive) {
  const std::vector<float> row{1, 2, 3, 4};
  for (const std::string mode : {"reflect", "edge"}) {
    auto m = one_node_model("Pad", {"x", "pads"}, {"y"}, 13);
    set_string(m.node, "mode", mode);
    // 2-D: rows padded (0, 1) on axis 0 by repeating the row, columns (2, -1) on axis 1.
    const at::Tensor x = f(row).reshape({1, 4}).repeat({2, 1});
    const auto y =
        run_model(m.model, {{"x", x}, {"pads", at::tensor({0, 2, 1, -1}, at::kLong)}})[0];
    const auto expected_row = naive_pad(row, 2, -1, mode == "reflect");
    EXPECT_TRUE(all_close(y, f(expected_row).reshape({1, -1}).repeat({3, 1}), 0, 0)) << mode;
  }
}

TEST(TensorExtra, PadOpset7ConstantAttributes) {
  auto m = one_node_model("Pad", {"x"}, {"y"}, 7);
  set_ints(m.node, "pads", {1, 2});
  set_float(m.node, "value", 9.f);
  EXPECT_TRUE(all_close(run_model(m.model, {{"x", f({1, 2})}})[0], f({9, 1, 2, 9, 9}), 0, 0));
}

TEST(TensorExtra, PadRefusesWrapMode) {
  auto m = one_node_model("Pad", {"x", "pads"}, {"y"}, 13);
  set_string(m.node, "mode", "wrap");
  EXPECT_THROW(run_model(m.model, {{"x", f({1, 2})}, {"pads", at::tensor({1, 1}, at::kLong)}}),
               Error);
}

TEST(TensorExtra, DropoutEvalIsIdentityWithTrueMask) {
  auto m = one_node_model("Dropout", {"x", "ratio"}, {"y", "mask"}, 13);
  const at::Tensor x = at::randn({4, 5});
  const auto out = run_model(m.model, {{"x", x}, {"ratio", at::scalar_tensor(0.7f)}});
  EXPECT_TRUE(all_close(out[0], x, 0, 0));
  EXPECT_EQ(out[1].scalar_type(), at::kBool);
  EXPECT_TRUE(out[1].all().item<bool>());
}

TEST(TensorExtra, DropoutTrainingScalesKeptElements) {
  auto m = one_node_model("Dropout", {"x", "ratio"}, {"y", "mask"}, 13);
  Executor exec(m.model);
  exec.set_training(true);
  const at::Tensor x = at::ones({1000});
  auto out = exec.run({{"x", x}, {"ratio", at::scalar_tensor(0.75f)}});
  const at::Tensor y = out.at("y"), mask = out.at("mask");
  // Kept elements become 1 / (1 - 0.75) = 4, dropped ones 0, and the mask says which.
  EXPECT_TRUE(at::equal(y, mask.to(at::kFloat) * 4));
  const double kept = mask.to(at::kDouble).mean().item<double>();
  EXPECT_GT(kept, 0.15);
  EXPECT_LT(kept, 0.35);
}

TEST(TensorExtra, CastRefusesStringTarget) {
  auto m = one_node_model("Cast", {"x"}, {"y"}, 13);
  set_int(m.node, "to", onnx::TensorProto::STRING);
  EXPECT_THROW(run_model(m.model, {{"x", f({1})}}), Error);
}

// x -> Shape -> Gather(0) -> Unsqueeze -> Concat([-1]) -> Reshape(x): flattens each batch item
// whatever the batch size, the pattern exporters emit for x.view(x.size(0), -1).
TEST(TensorExtra, ShapeGatherConcatReshapeWithDynamicBatch) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  auto* op = model.add_opset_import();
  op->set_domain("");
  op->set_version(13);
  auto* g = model.mutable_graph();
  g->set_name("flatten_chain");
  auto node = [&](const std::string& type, std::vector<std::string> in, const std::string& out) {
    auto* n = g->add_node();
    n->set_op_type(type);
    n->set_name(type + "_" + out);
    for (const auto& i : in) n->add_input(i);
    n->add_output(out);
    return n;
  };
  node("Shape", {"x"}, "shape");
  node("Gather", {"shape", "zero"}, "batch");
  node("Unsqueeze", {"batch", "axes0"}, "batch1");
  node("Concat", {"batch1", "minus1"}, "target");
  set_int(g->mutable_node(3), "axis", 0);
  node("Reshape", {"x", "target"}, "y");
  auto* in = g->add_input();
  in->set_name("x");
  in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  auto* out = g->add_output();
  out->set_name("y");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  make_initializer(model, "zero", at::scalar_tensor(0, at::kLong));
  make_initializer(model, "axes0", at::tensor({int64_t{0}}));
  make_initializer(model, "minus1", at::tensor({int64_t{-1}}));

  Executor exec(model);
  for (int64_t batch : {1, 3}) {
    const at::Tensor x = at::randn({batch, 2, 3, 4});
    const at::Tensor y = exec.forward(x);
    EXPECT_EQ(y.sizes(), at::IntArrayRef({batch, 24}));
    EXPECT_TRUE(all_close(y, x.reshape({batch, 24}), 0, 0));
  }
}

}  // namespace
}  // namespace segslim::testing
