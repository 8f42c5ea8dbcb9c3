// fold_batchnorm: op counts and equal eval-mode outputs before/after.
#include "passes/fold_batchnorm.h"
#include "passes/pass_test_util.h"

namespace segslim::testing {
namespace {

using passes::fold_batchnorm;

TEST(FoldBatchnorm, TinySegnetFoldsBothConvBns) {
  const auto model = tiny_model();
  int folded = -1;
  const auto out = fold_batchnorm(model, &folded);
  EXPECT_EQ(folded, 2);
  EXPECT_EQ(count_ops(model, "BatchNormalization") - folded, count_ops(out, "BatchNormalization"));
  EXPECT_EQ(count_ops(out, "BatchNormalization"), 0);
  EXPECT_EQ(count_ops(out, "Conv"), count_ops(model, "Conv"));
  EXPECT_EQ(find_init(out, "stem_bn.running_var"), nullptr);
  EXPECT_NE(find_init(out, "stem.weight_folded_bias"), nullptr);  // stem had no bias
  EXPECT_TRUE(passes_checker(out));
  const auto x = tiny_input();
  EXPECT_TRUE(close_to_scale(run_model(out, x), run_model(model, x), 1e-5));
}

// x -> conv -> BN -> y with random weights and statistics.
onnx::ModelProto conv_bn(bool transpose, int64_t groups, bool bias, int64_t c_in = 4,
                         int64_t c_out = 6) {
  GraphBuilder b;
  const auto w =
      transpose ? at::randn({c_in, c_out / groups, 3, 3}) : at::randn({c_out, c_in / groups, 3, 3});
  b.init("w", w);
  std::vector<std::string> inputs{"x", "w"};
  if (bias) {
    b.init("b", at::randn({c_out}));
    inputs.push_back("b");
  }
  auto* conv = b.node(transpose ? "ConvTranspose" : "Conv", "conv", inputs, {"c"});
  set_attr_int(conv, "group", groups);
  set_attr_ints(conv, "strides", {2, 2});
  set_attr_ints(conv, "pads", {1, 1, 1, 1});
  b.init("g", at::rand({c_out}) + 0.5);
  b.init("beta", at::randn({c_out}));
  b.init("m", at::randn({c_out}));
  b.init("v", at::rand({c_out}) + 0.1);
  auto* bn = b.node("BatchNormalization", "bn", {"c", "g", "beta", "m", "v"}, {"y"});
  auto* eps = bn->add_attribute();
  eps->set_name("epsilon");
  eps->set_type(onnx::AttributeProto::FLOAT);
  eps->set_f(1e-3f);
  b.output("y");
  return b.model;
}

TEST(FoldBatchnorm, ConvAndConvTransposeWithGroups) {
  at::manual_seed(1);
  const auto x = at::randn({2, 4, 7, 7});
  for (bool transpose : {false, true})
    for (int64_t groups : {1, 2})
      for (bool bias : {false, true}) {
        const auto model = conv_bn(transpose, groups, bias);
        int folded = 0;
        const auto out = fold_batchnorm(model, &folded);
        SCOPED_TRACE(::testing::Message()
                     << "transpose " << transpose << " groups " << groups << " bias " << bias);
        EXPECT_EQ(folded, 1);
        EXPECT_EQ(count_ops(out, "BatchNormalization"), 0);
        EXPECT_EQ(out.graph().node_size(), 1);
        EXPECT_EQ(out.graph().node(0).input_size(), 3);
        EXPECT_EQ(out.graph().initializer_size(), 2);  // W', b'
        EXPECT_TRUE(passes_checker(out));
        EXPECT_TRUE(close_to_scale(run_model(out, x), run_model(model, x), 1e-5));
      }
}

TEST(FoldBatchnorm, LeavesBnAfterOtherOpsOrSharedConvOutputs) {
  at::manual_seed(2);
  // conv -> Relu -> BN: not foldable.
  auto relu = conv_bn(false, 1, true);
  auto* g = relu.mutable_graph();
  g->mutable_node(1)->set_input(0, "r");
  auto* r = g->add_node();
  r->set_op_type("Relu");
  r->set_name("relu");
  r->add_input("c");
  r->add_output("r");
  // keep topological order: conv, relu, bn
  g->mutable_node()->SwapElements(1, 2);
  int folded = -1;
  auto out = fold_batchnorm(relu, &folded);
  EXPECT_EQ(folded, 0);
  EXPECT_EQ(count_ops(out, "BatchNormalization"), 1);

  // The conv output is also a graph output: not foldable.
  auto shared = conv_bn(false, 1, true);
  auto* o = shared.mutable_graph()->add_output();
  o->set_name("c");
  o->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  out = fold_batchnorm(shared, &folded);
  EXPECT_EQ(folded, 0);
  EXPECT_EQ(count_ops(out, "BatchNormalization"), 1);
}

}  // namespace
}  // namespace segslim::testing
