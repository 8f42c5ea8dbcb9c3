// insert_qdq, refresh_weight_scales and export_qdq on the tiny segmentation model and on a
// grouped ConvTranspose checked against a hand reference.
#include <set>

#include "common/error.h"
#include "passes/export_qdq.h"
#include "passes/fold_batchnorm.h"
#include "passes/insert_qdq.h"
#include "passes/name_pattern.h"
#include "passes/pass_test_util.h"
#include "passes/weight_scales.h"

namespace segslim::testing {
namespace {

using passes::QdqModel;
using passes::QuantPolicy;

onnx::ModelProto folded_tiny() { return passes::fold_batchnorm(tiny_model()); }

double rel_l2(const at::Tensor& a, const at::Tensor& e) {
  return ((a - e).norm() / e.norm()).item<double>();
}

// Calibrated on x, q's fake-quant graph stays within 5% (relative L2) of fp32 without equalling
// it, and its exported form (int8 weights) runs the same; returns the exported model.
onnx::ModelProto expect_calibrated_and_exported(QdqModel& q, const onnx::ModelProto& fp32,
                                                const at::Tensor& x) {
  calibrate_abs_max(q, fp32, x);
  const at::Tensor want = run_model(fp32, x);
  const at::Tensor fake = run_model(q.model, x);
  EXPECT_LT(rel_l2(fake, want), 0.05);
  EXPECT_GT(rel_l2(fake, want), 0.0);
  auto exported = passes::export_qdq(q.model);
  EXPECT_TRUE(close_to_scale(run_model(exported, x), fake, 1e-5));
  return exported;
}

TEST(InsertQdq, TinySegnetCountsNamesAndChecker) {
  const auto model = folded_tiny();
  const QdqModel q = passes::insert_qdq(model, {});
  // 6 quantized nodes (5 Conv + 1 ConvTranspose), no shared inputs: 12 pairs. The stem's
  // output is also read by the Concat before the head: its pair uses the Concat's scale (5
  // activation sites of their own).
  EXPECT_EQ(q.weights.size(), 6u);
  EXPECT_EQ(q.activations.size(), 5u);
  EXPECT_EQ(count_ops(q.model, "QuantizeLinear"), 12);
  EXPECT_EQ(count_ops(q.model, "DequantizeLinear"), 12);
  EXPECT_TRUE(passes_checker(q.model));
  for (const auto& w : q.weights) {
    EXPECT_TRUE(w.is_weight);
    EXPECT_EQ(w.scale, w.tensor + "_scale");
    EXPECT_EQ(w.axis, w.tensor == "up.weight" ? 1 : 0) << w.tensor;
    ASSERT_EQ(w.consumers.size(), 1u);
  }
  // ConvTranspose weight [20, 12, 2, 2]: one scale per output channel (axis 1).
  const auto* up_scale = find_init(q.model, "up.weight_scale");
  ASSERT_NE(up_scale, nullptr);
  EXPECT_EQ(tensor_from_proto(*up_scale).sizes(), at::IntArrayRef({12}));
  const auto* image_zp = find_init(q.model, "image_zero_point");
  ASSERT_NE(image_zp, nullptr);
  EXPECT_EQ(image_zp->data_type(), onnx::TensorProto::INT8);
  EXPECT_EQ(image_zp->dims_size(), 0);
  bool named = false;
  for (const auto& n : q.model.graph().node()) named = named || n.name() == "image_QuantizeLinear";
  EXPECT_TRUE(named);

  QuantPolicy unsigned_policy;
  unsigned_policy.activation_unsigned = true;
  const auto qu = passes::insert_qdq(model, unsigned_policy);
  EXPECT_EQ(find_init(qu.model, "image_zero_point")->data_type(), onnx::TensorProto::UINT8);
  EXPECT_TRUE(passes_checker(qu.model));
}

TEST(InsertQdq, PolicyChangesCounts) {
  const auto model = folded_tiny();
  QuantPolicy skip;
  skip.skip_first_last = true;  // stem and head stay float
  auto q = passes::insert_qdq(model, skip);
  EXPECT_EQ(count_ops(q.model, "QuantizeLinear"), 8);
  for (const auto& w : q.weights)
    EXPECT_TRUE(w.tensor != "stem.weight" && w.tensor != "head.weight");
  EXPECT_TRUE(passes_checker(q.model));

  QuantPolicy pattern;
  pattern.not_quant_patterns = {"/up/", "head"};
  q = passes::insert_qdq(model, pattern);
  EXPECT_EQ(count_ops(q.model, "QuantizeLinear"), 8);
  EXPECT_TRUE(passes_checker(q.model));

  QuantPolicy only_transpose;
  only_transpose.op_types = {"ConvTranspose"};
  q = passes::insert_qdq(model, only_transpose);
  EXPECT_EQ(count_ops(q.model, "DequantizeLinear"), 2);
}

// not_quant_pattern: PaddleSlim's substrings, or `re:` regular expressions where a substring
// cannot separate the names (ESPNet's residual `/level3.7/Add_3` contains `/level3.7/Add`).
TEST(InsertQdq, NotQuantPatternSubstringOrRegex) {
  using passes::name_matches_pattern;
  EXPECT_TRUE(name_matches_pattern("/level3.7/Add_3", "/level3.7/Add"));
  EXPECT_FALSE(name_matches_pattern("/level3.7/Add_3", ""));
  const std::string hff = "re:/Add(_[12])?$";
  for (const std::string name : {"/level3.7/Add", "/level3.7/Add_1", "/level2_0/Add_2"})
    EXPECT_TRUE(name_matches_pattern(name, hff)) << name;
  for (const std::string name : {"/level3.7/Add_3", "/level3.7/Add_12", "/Add_1/Conv", "Add"})
    EXPECT_FALSE(name_matches_pattern(name, hff)) << name;
  EXPECT_TRUE(name_matches_pattern("xy", "re:^x"));  // anchors: an expression, not a substring
  EXPECT_FALSE(name_matches_pattern("xy", "re:^y"));
  EXPECT_FALSE(name_matches_pattern("xy", "^x"));
  EXPECT_NO_THROW(passes::check_name_pattern("re:^a|b$", "cfg"));
  EXPECT_NO_THROW(passes::check_name_pattern("((", "cfg"));  // a substring: anything goes
  try {
    passes::check_name_pattern("re:((", "cfg.yml:3");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cfg.yml:3: 're:((' is not a valid regular expression"),
              std::string::npos)
        << e.what();
  }
  // in insert_qdq: of the tiny net's nodes only those the expression names stay float
  const auto model = folded_tiny();
  QuantPolicy all, regex, substring;
  const auto q_all = passes::insert_qdq(model, all);
  std::vector<std::string> names;
  for (const auto& s : q_all.weights) names.push_back(s.consumers.at(0));
  ASSERT_GE(names.size(), 3u);
  regex.not_quant_patterns = {"re:^" + names[1] + "$"};
  substring.not_quant_patterns = {names[1]};
  const auto q_regex = passes::insert_qdq(model, regex);
  EXPECT_EQ(q_regex.weights.size(), names.size() - 1);
  for (const auto& s : q_regex.weights) EXPECT_NE(s.consumers.at(0), names[1]);
  EXPECT_EQ(passes::insert_qdq(model, substring).weights.size(), names.size() - 1);
  regex.not_quant_patterns = {"re:^" + names[1]};  // anchored at the start only: the same node
  EXPECT_EQ(passes::insert_qdq(model, regex).weights.size(), names.size() - 1);
}

TEST(InsertQdq, SharedActivationGetsOnePair) {
  GraphBuilder b;
  b.init("w1", at::randn({3, 2, 1, 1}));
  b.init("w2", at::randn({3, 2, 1, 1}));
  b.node("Conv", "c1", {"x", "w1"}, {"y1"});
  b.node("Conv", "c2", {"x", "w2"}, {"y2"});
  b.node("Add", "add", {"y1", "y2"}, {"y"});
  b.output("y");
  const auto q = passes::insert_qdq(b.model, {});
  ASSERT_EQ(q.activations.size(), 1u);
  EXPECT_EQ(q.activations[0].consumers, (std::vector<std::string>{"c1", "c2"}));
  EXPECT_EQ(count_ops(q.model, "QuantizeLinear"), 3);  // 2 per node, minus the shared one
  EXPECT_TRUE(passes_checker(q.model));
}

// A tensor read by a Conv and, through a zero Pad, by an AveragePool (PyTorch's export of
// AvgPool2d(padding=1)): with pooling quantized, one pair before the Pad serves both, and
// the outputs equal the graph with the pair placed after the Pad (Q/DQ commutes with zero
// padding).
TEST(InsertQdq, PoolBehindZeroPadSharesTheConvsPair) {
  at::manual_seed(3);
  GraphBuilder b;
  b.init("w", at::randn({4, 3, 1, 1}));
  b.init("pads", at::tensor({0L, 0L, 1L, 1L, 0L, 0L, 1L, 1L}));
  b.node("Conv", "conv", {"x", "w"}, {"c"});
  b.node("Pad", "pad", {"x", "pads"}, {"xp"});
  auto* pool = b.node("AveragePool", "pool", {"xp"}, {"p"});
  set_attr_ints(pool, "kernel_shape", {3, 3});
  set_attr_ints(pool, "strides", {2, 2});
  set_attr_int(b.node("Concat", "cat", {"c", "p"}, {"y"}), "axis", 1);
  b.output("y");
  // strides 2 on the conv too, so the concat's shapes agree
  set_attr_ints(b.model.mutable_graph()->mutable_node(0), "strides", {2, 2});
  passes::QuantPolicy policy;
  policy.op_types = {"Conv", "AveragePool"};
  const auto q = passes::insert_qdq(b.model, policy);
  ASSERT_EQ(q.activations.size(), 1u);
  EXPECT_EQ(q.activations[0].tensor, "x");
  EXPECT_EQ(q.activations[0].consumers, (std::vector<std::string>{"conv", "pad"}));
  EXPECT_EQ(count_ops(q.model, "QuantizeLinear"), 2);  // x and the conv weight
  EXPECT_TRUE(passes_checker(q.model));
  // A non-zero pad value does not commute: the pool's own input is quantized then.
  GraphBuilder b2 = b;
  b2.init("pad_value", at::tensor(1.f));
  b2.model.mutable_graph()->mutable_node(1)->add_input("pad_value");
  const auto q2 = passes::insert_qdq(b2.model, policy);
  ASSERT_EQ(q2.activations.size(), 2u);
  EXPECT_EQ(q2.activations[1].tensor, "xp");
}

// STDC's pattern: a branch output read by the next branch's conv and by the module's Concat,
// whose output a conv reads. The branch output's pair uses the Concat's scale and zero point
// (one initializer, one calibrated site), and not with share_concat_scales off.
TEST(InsertQdq, ConcatInputsShareTheConcatsScale) {
  GraphBuilder b;
  b.init("w1", at::randn({4, 3, 1, 1}));
  b.init("w2", at::randn({4, 4, 1, 1}));
  b.init("w3", at::randn({2, 8, 1, 1}));
  b.node("Conv", "c1", {"x", "w1"}, {"y1"});
  b.node("Conv", "c2", {"y1", "w2"}, {"y2"});
  set_attr_int(b.node("Concat", "cat", {"y1", "y2"}, {"cat"}), "axis", 1);
  b.node("Conv", "c3", {"cat", "w3"}, {"y"});
  b.output("y");
  const auto q = passes::insert_qdq(b.model, {});
  std::vector<std::string> sites;
  for (const auto& a : q.activations) sites.push_back(a.tensor);
  EXPECT_EQ(sites, (std::vector<std::string>{"x", "cat"}));
  EXPECT_EQ(count_ops(q.model, "QuantizeLinear"), 6);  // x, y1, cat and 3 weights
  EXPECT_EQ(find_init(q.model, "y1_scale"), nullptr);
  for (const auto& n : q.model.graph().node())
    if (n.op_type() == "QuantizeLinear" && n.input(0) == "y1") {
      EXPECT_EQ(n.input(1), "cat_scale");
      EXPECT_EQ(n.input(2), "cat_zero_point");
    }
  EXPECT_TRUE(passes_checker(q.model));
  QuantPolicy separate;
  separate.share_concat_scales = false;
  const auto q2 = passes::insert_qdq(b.model, separate);
  EXPECT_EQ(q2.activations.size(), 3u);
  EXPECT_NE(find_init(q2.model, "y1_scale"), nullptr);
}

// Sums and concatenations quantized (QuantAware elementwise_add, concat): every runtime input
// gets its tensor's pair (a constant addend stays float), shared with the tensor's other
// quantized readers; the Concat's inputs take its scale where its output is quantized too
// (read by the Add). Fake-quant stays close to FP32 and the exported model runs the same.
TEST(InsertQdq, AddAndConcatInputsAreActivations) {
  at::manual_seed(9);
  GraphBuilder b;
  b.init("w1", at::randn({4, 3, 3, 3}) * 0.3);
  b.init("w2", at::randn({4, 4, 3, 3}) * 0.3);
  b.init("bias", at::randn({1, 8, 1, 1}));
  set_attr_ints(b.node("Conv", "c1", {"x", "w1"}, {"y1"}), "pads", {1, 1, 1, 1});
  set_attr_ints(b.node("Conv", "c2", {"y1", "w2"}, {"y2"}), "pads", {1, 1, 1, 1});
  b.node("Add", "sum", {"y1", "y2"}, {"s"});
  set_attr_int(b.node("Concat", "cat", {"y2", "s"}, {"cat"}), "axis", 1);
  b.node("Add", "res", {"cat", "bias"}, {"y"});
  b.output("y");
  QdqModel q = passes::insert_qdq(b.model, {{"Conv", "Add", "Concat"}});
  std::set<std::string> acts;
  for (const auto& a : q.activations) acts.insert(a.tensor);
  // y2 and s share the Concat's output scale; the constant addend has no pair
  EXPECT_EQ(acts, (std::set<std::string>{"x", "y1", "cat"}));
  EXPECT_EQ(count_ops(q.model, "QuantizeLinear"), 7);  // x, y1, y2, s, cat and 2 weights
  EXPECT_EQ(find_init(q.model, "bias_scale"), nullptr);
  for (const auto& n : q.model.graph().node()) {
    if (n.op_type() == "Add" && n.name() == "sum") {
      EXPECT_EQ(n.input(0), "y1_dequantized");
      EXPECT_EQ(n.input(1), "y2_dequantized");
    }
    if (n.op_type() == "Add" && n.name() == "res") {
      EXPECT_EQ(n.input(0), "cat_dequantized");
      EXPECT_EQ(n.input(1), "bias");
    }
  }
  EXPECT_TRUE(passes_checker(q.model));
  expect_calibrated_and_exported(q, b.model, at::randn({2, 3, 8, 9}));

  // Only the inputs another quantized node reads (QuantPolicy::sum_inputs_shared_only): y1,
  // which c2 reads, shares its pair with the sum; y2, s and cat stay float, no new site.
  passes::QuantPolicy shared{{"Conv", "Add", "Concat"}};
  shared.sum_inputs_shared_only = true;
  q = passes::insert_qdq(b.model, shared);
  acts.clear();
  for (const auto& a : q.activations) acts.insert(a.tensor);
  EXPECT_EQ(acts, (std::set<std::string>{"x", "y1"}));
  EXPECT_EQ(count_ops(q.model, "QuantizeLinear"), 4);  // x, y1 and 2 weights
  for (const auto& a : q.activations) {
    if (a.tensor == "y1") {
      EXPECT_EQ(a.consumers, (std::vector<std::string>{"c2", "sum"}));
    }
  }
  for (const auto& n : q.model.graph().node()) {
    if (n.name() == "sum") {
      EXPECT_EQ(n.input(0), "y1_dequantized");
      EXPECT_EQ(n.input(1), "y2");
    }
    if (n.name() == "cat") {
      EXPECT_EQ(n.input(0), "y2");
      EXPECT_EQ(n.input(1), "s");
    }
  }
  EXPECT_TRUE(passes_checker(q.model));
  expect_calibrated_and_exported(q, b.model, at::randn({2, 3, 8, 9}));
}

// A linear layer exported as MatMul(x, Transpose(W)) and an attention-like product of two
// runtime tensors: the Transpose folds into an initializer holding W^T, quantized per output
// column (axis 1 of [K, N]); the runtime B is an activation with its own pair. The outputs stay
// those of the FP32 graph within the quantization error, and the exported model runs the same.
TEST(InsertQdq, MatmulWeightBehindTransposeAndRuntimeOperandsAreQuantized) {
  at::manual_seed(7);
  GraphBuilder b;
  const at::Tensor w = at::randn({5, 4});
  b.init("w", w);
  b.node("Transpose", "linear/t", {"w"}, {"wt"});
  b.node("MatMul", "linear", {"x", "wt"}, {"y"});
  set_attr_ints(b.node("Transpose", "kt", {"y"}, {"yt"}), "perm", {0, 1, 3, 2});
  b.node("MatMul", "scores", {"y", "yt"}, {"s"});
  b.output("s");
  const at::Tensor x = at::randn({1, 2, 3, 4});
  QdqModel q = passes::insert_qdq(b.model, {{"MatMul"}});
  ASSERT_EQ(q.weights.size(), 1u);
  EXPECT_EQ(q.weights[0].tensor, "wt");
  EXPECT_EQ(q.weights[0].axis, 1);
  const auto* wt = find_init(q.model, "wt");
  ASSERT_NE(wt, nullptr);
  EXPECT_TRUE(at::equal(tensor_from_proto(*wt), w.t()));
  EXPECT_EQ(find_init(q.model, "w"), nullptr);  // no longer read
  EXPECT_EQ(count_ops(q.model, "Transpose"), 1);
  std::set<std::string> acts;
  for (const auto& a : q.activations) acts.insert(a.tensor);
  EXPECT_EQ(acts, (std::set<std::string>{"x", "y", "yt"}));
  EXPECT_EQ(count_ops(q.model, "QuantizeLinear"), 4);
  EXPECT_TRUE(passes_checker(q.model));
  EXPECT_EQ(count_ops(expect_calibrated_and_exported(q, b.model, x), "QuantizeLinear"), 3);
}

TEST(InsertQdq, RefusesOldOpsets) {
  auto model = folded_tiny();
  model.mutable_opset_import(0)->set_version(12);
  try {
    passes::insert_qdq(model, {});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("opset 12"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(">= 13"), std::string::npos) << e.what();
  }
}

TEST(InsertQdq, CalibratedOutputsCloseToFp32AndFusionChangesNothing) {
  const auto model = folded_tiny();
  const auto x = tiny_input();
  QdqModel q = passes::insert_qdq(model, {});
  calibrate_abs_max(q, model, x);
  const at::Tensor fp32 = run_model(model, x);
  const at::Tensor fused = run_model(q.model, x);
  ExecutorOptions unfused_opts;
  unfused_opts.fuse_qdq = false;
  const at::Tensor unfused = run_model(q.model, x, unfused_opts);
  EXPECT_LT(rel_l2(fused, fp32), 0.05);
  EXPECT_GT(rel_l2(fused, fp32), 0.0);  // it does quantize
  EXPECT_TRUE(close_to_scale(fused, unfused, 1e-5));
}

TEST(WeightScales, RefreshFollowsTheWeights) {
  const auto q = passes::insert_qdq(folded_tiny(), {});
  Executor exec(q.model);
  at::Tensor w = exec.initializers().at("pw.weight");
  const at::Tensor before = exec.initializers().at("pw.weight_scale").clone();
  {
    at::NoGradGuard no_grad;
    w.mul_(2);
    w[3].zero_();
  }
  passes::refresh_weight_scales(exec, q.weights);
  const at::Tensor after = exec.initializers().at("pw.weight_scale");
  at::Tensor expected = before * 2;
  expected[3] = passes::kMinWeightScale;
  EXPECT_TRUE(all_close(after, expected, 1e-6, 0));
  // Hand check of one channel: max |W_c| / 127.
  EXPECT_NEAR(after[5].item<double>(), w[5].abs().max().item<double>() / 127, 1e-9);
  for (const auto& [name, t] : exec.named_weights())
    EXPECT_EQ(name.find("_scale"), std::string::npos) << name << " should be a buffer";
}

TEST(ExportQdq, WeightsBecomeInt8AndOutputsMatchFakeQuant) {
  const auto model = folded_tiny();
  const auto x = tiny_input();
  QdqModel q = passes::insert_qdq(model, {});
  calibrate_abs_max(q, model, x);
  const auto exported = passes::export_qdq(q.model);
  EXPECT_EQ(count_ops(exported, "QuantizeLinear"), 6);  // the activations only
  EXPECT_EQ(count_ops(exported, "DequantizeLinear"), 12);
  for (const auto& w : q.weights) {
    EXPECT_EQ(find_init(exported, w.tensor), nullptr) << w.tensor;
    const auto* qi = find_init(exported, w.tensor + "_quantized");
    ASSERT_NE(qi, nullptr) << w.tensor;
    EXPECT_EQ(qi->data_type(), onnx::TensorProto::INT8);
    for (const auto& n : exported.graph().node())
      EXPECT_FALSE(n.op_type() == "QuantizeLinear" && n.input(0) == w.tensor);
  }
  EXPECT_TRUE(passes_checker(exported));
  EXPECT_TRUE(close_to_scale(run_model(exported, x), run_model(q.model, x), 1e-5));
  // The exported file is also valid for load_model (checker + shape inference).
  const std::string path = temp_dir() + "/exported_qdq.onnx";
  save_model(exported, path);
  EXPECT_NO_THROW(load_model(path));
}

TEST(ExportQdq, GroupedConvTransposePerChannelAxis1MatchesHandReference) {
  at::manual_seed(5);
  const int64_t groups = 2, c_in = 4, c_out = 6;
  GraphBuilder b;
  const at::Tensor w = at::randn({c_in, c_out / groups, 3, 3});
  const at::Tensor bias = at::randn({c_out});
  b.init("w", w);
  b.init("b", bias);
  auto* ct = b.node("ConvTranspose", "ct", {"x", "w", "b"}, {"y"});
  set_attr_int(ct, "group", groups);
  set_attr_ints(ct, "strides", {2, 2});
  b.output("y");
  auto q = passes::insert_qdq(b.model, {});
  ASSERT_EQ(q.weights.size(), 1u);
  EXPECT_EQ(q.weights[0].axis, 1);
  const at::Tensor x = at::randn({1, c_in, 5, 5});
  const double x_scale = x.abs().max().item<double>() / 127;
  for (auto& init : *q.model.mutable_graph()->mutable_initializer())
    if (init.name() == "x_scale")
      init = tensor_to_proto(at::scalar_tensor(x_scale, at::kFloat), "x_scale");
  const auto exported = passes::export_qdq(q.model);
  EXPECT_TRUE(passes_checker(exported));

  // Hand reference: per column j of W ([C_in, C_out/g, k, k]), s_j = max_{i,k} |W[i, j]| / 127.
  const at::Tensor s =
      std::get<0>(w.abs().transpose(0, 1).reshape({c_out / groups, -1}).max(1)) / 127;
  const at::Tensor s_b = s.reshape({1, -1, 1, 1});
  const at::Tensor w_int = at::clamp(at::round(w / s_b), -128, 127).to(at::kChar);
  const at::Tensor stored = tensor_from_proto(*find_init(exported, "w_quantized"));
  EXPECT_TRUE(at::equal(stored, w_int));
  const at::Tensor w_dq = w_int.to(at::kFloat) * s_b;
  const float xs = static_cast<float>(x_scale);
  const at::Tensor x_fq = at::clamp(at::round(x / xs), -128, 127) * xs;
  const at::Tensor expected =
      at::conv_transpose2d(x_fq, w_dq, bias, {2, 2}, {0, 0}, {0, 0}, groups);
  EXPECT_TRUE(close_to_scale(run_model(exported, x), expected, 1e-5));
  EXPECT_TRUE(close_to_scale(run_model(q.model, x), expected, 1e-5));
}

}  // namespace
}  // namespace segslim::testing
