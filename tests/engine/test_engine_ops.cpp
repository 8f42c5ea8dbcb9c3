// Engine paths beyond convolutions: MatMul and Softmax on oneDNN, any other executor op on
// runtime tensors through the ATen fallback (multi-output included), the engine's own kernels
// (plain-layout bilinear output, int8 average pooling) against ATen, and per-step profiling.
#include <gtest/gtest.h>

#include "common/error.h"
#include "engine/bilinear_resize.h"
#include "engine/engine_test_util.h"
#include "engine/int8_avg_pool.h"

namespace segslim::testing {
namespace {

void set_attr_string(onnx::NodeProto* n, const std::string& name, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

bool has_line(const Engine& eng, const std::string& text) {
  for (const auto& l : eng.describe())
    if (l.find(text) != std::string::npos) return true;
  return false;
}

// Attention-shaped: softmax(x W_q (x W_k)^T) x W_v on [batch, heads, tokens, dim] tensors,
// constant weights of rank 2 (broadcast over batch and heads), a runtime x runtime MatMul.
TEST(EngineOps, MatmulAndSoftmaxOnOnednn) {
  at::manual_seed(21);
  GraphBuilder b;
  b.init("wq", at::randn({8, 6}) * 0.4);
  b.init("wk", at::randn({8, 6}) * 0.4);
  b.init("wv", at::randn({8, 7}) * 0.4);
  b.node("MatMul", "q", {"x", "wq"}, {"q"});
  b.node("MatMul", "k", {"x", "wk"}, {"k"});
  b.node("MatMul", "v", {"x", "wv"}, {"v"});
  set_attr_ints(b.node("Transpose", "kt", {"k"}, {"kt"}), "perm", {0, 1, 3, 2});
  b.node("MatMul", "scores", {"q", "kt"}, {"s"});
  set_attr_int(b.node("Softmax", "softmax", {"s"}, {"p"}), "axis", -1);
  b.node("MatMul", "attend", {"p", "v"}, {"y"});
  b.output("y");
  for (const auto& shape : std::vector<std::vector<int64_t>>{{2, 3, 5, 8}, {1, 1, 17, 8}}) {
    const at::Tensor x = at::randn(shape);
    expect_fp32_match(b.model, x, 1e-5);
    Engine eng(b.model);
    eng.run(x);
    for (const char* step : {"MatMul q ", "MatMul scores ", "MatMul attend ", "Softmax softmax "})
      EXPECT_TRUE(has_line(eng, step)) << step << "\n" << joined(eng.describe());
    EXPECT_TRUE(has_line(eng, "Transpose kt aten")) << joined(eng.describe());
  }
}

// The same attention with MatMul quantized (QuantAware [matmul]): the projections run as
// int8 matmuls (per-column weight scales), equal to the fake-quant graph up to rounding.
TEST(EngineOps, QdqMatmulRunsInt8) {
  at::manual_seed(28);
  GraphBuilder b;
  b.init("wq", at::randn({8, 6}) * 0.4);
  b.init("wv", at::randn({8, 7}) * 0.4);
  b.node("MatMul", "q", {"x", "wq"}, {"q"});
  b.node("MatMul", "v", {"x", "wv"}, {"v"});
  set_attr_ints(b.node("Transpose", "qt", {"q"}, {"qt"}), "perm", {0, 1, 3, 2});
  b.node("MatMul", "scores", {"q", "qt"}, {"s"});
  set_attr_int(b.node("Softmax", "softmax", {"s"}, {"p"}), "axis", -1);
  b.node("MatMul", "attend", {"p", "v"}, {"y"});
  b.output("y");
  passes::QuantPolicy policy;
  policy.op_types = {"MatMul"};
  for (const auto& shape : std::vector<std::vector<int64_t>>{{2, 3, 5, 8}, {1, 2, 19, 8}}) {
    const at::Tensor x = at::randn(shape);
    const auto q = quantize(b.model, x, policy);
    Engine eng(q);
    expect_int8_match(eng, q, x);
    EXPECT_TRUE(has_line(eng, "MatMul q int8 s8")) << joined(eng.describe());
    EXPECT_TRUE(has_line(eng, "MatMul v int8 s8")) << joined(eng.describe());
    EngineOptions f32_matmul;
    f32_matmul.int8_op_types = {"Conv"};
    Engine eng2(q, f32_matmul);
    expect_int8_match(eng2, q, x);
    EXPECT_FALSE(has_line(eng2, "int8 s8")) << joined(eng2.describe());
  }
}

// UAFM's spatial attention: channel mean and max of two features, concatenated, a conv, a
// sigmoid weighting; plus reductions over other axes, on 1x1 (nothing to reduce) and odd
// shapes.
TEST(EngineOps, ReductionsOnOnednn) {
  at::manual_seed(29);
  GraphBuilder b;
  b.init("w", at::randn({1, 4, 3, 3}) * 0.5);
  b.init("one", at::tensor(1.f));
  set_attr_ints(b.node("ReduceMean", "mean", {"x"}, {"m"}), "axes", {1});
  set_attr_ints(b.node("ReduceMax", "max", {"x"}, {"mx"}), "axes", {1});
  b.node("Relu", "r", {"x"}, {"xr"});
  set_attr_ints(b.node("ReduceMean", "mean_r", {"xr"}, {"mr"}), "axes", {-3});
  set_attr_ints(b.node("ReduceMax", "max_r", {"xr"}, {"mnr"}), "axes", {1});
  set_attr_int(b.node("Concat", "cat", {"m", "mx", "mr", "mnr"}, {"cat"}), "axis", 1);
  set_attr_ints(b.node("Conv", "att", {"cat", "w"}, {"a"}), "pads", {1, 1, 1, 1});
  b.node("Sigmoid", "alpha", {"a"}, {"al"});
  b.node("Mul", "wx", {"x", "al"}, {"wx"});
  b.node("Sub", "beta", {"one", "al"}, {"be"});
  b.node("Mul", "wy", {"xr", "be"}, {"wy"});
  b.node("Add", "fuse", {"wx", "wy"}, {"f"});
  set_attr_ints(b.node("ReduceSum", "sum_hw", {"f"}, {"s"}), "axes", {2, 3});
  b.node("Add", "y", {"f", "s"}, {"y"});
  b.output("y");
  for (const auto& shape : std::vector<std::vector<int64_t>>{{2, 19, 9, 13}, {1, 16, 1, 1}}) {
    expect_fp32_match(b.model, at::randn(shape), 1e-5);
    Engine eng(b.model);
    eng.run(at::randn(shape));
    // never oneDNN's reference kernels: ATen's where oneDNN has nothing better
    EXPECT_FALSE(has_line(eng, "[ref")) << joined(eng.describe());
  }
}

// Softmax over a middle axis; before opset 13 Softmax flattens from `axis` on, which only
// the ATen kernel implements for an axis other than the last.
TEST(EngineOps, SoftmaxAxesAndOpsets) {
  at::manual_seed(22);
  const at::Tensor x = at::randn({2, 5, 3, 4}) * 3;
  for (int64_t opset : {11, 13}) {
    for (int64_t axis : {1, -1}) {
      GraphBuilder b(opset);
      set_attr_int(b.node("Softmax", "sm", {"x"}, {"y"}), "axis", axis);
      b.output("y");
      SCOPED_TRACE(std::to_string(opset) + " axis " + std::to_string(axis));
      expect_fp32_match(b.model, x, 1e-5);
      Engine eng(b.model);
      eng.run(x);
      EXPECT_EQ(has_line(eng, "aten"), opset < 13 && axis == 1) << joined(eng.describe());
    }
  }
}

// A LayerNorm written out in primitive ops (as opset-13 exports do), GELU through Erf, and a
// two-output Split: none has a oneDNN path, all run through the executor's kernels.
TEST(EngineOps, AnyExecutorOpRunsThroughAten) {
  at::manual_seed(23);
  GraphBuilder b;
  b.init("two", at::tensor(2.f));
  b.init("eps", at::tensor(1e-5f));
  b.init("rsqrt2", at::tensor(0.70710678f));
  b.init("one", at::tensor(1.f));
  b.init("half", at::tensor(0.5f));
  set_attr_ints(b.node("ReduceMean", "mean", {"x"}, {"mu"}), "axes", {3});
  b.node("Sub", "center", {"x", "mu"}, {"xc"});
  b.node("Pow", "square", {"xc", "two"}, {"sq"});
  set_attr_ints(b.node("ReduceMean", "var", {"sq"}, {"var"}), "axes", {3});
  b.node("Add", "var_eps", {"var", "eps"}, {"ve"});
  b.node("Sqrt", "std", {"ve"}, {"sd"});
  b.node("Div", "norm", {"xc", "sd"}, {"n"});
  b.node("Mul", "scaled", {"n", "rsqrt2"}, {"ns"});
  b.node("Erf", "erf", {"ns"}, {"e"});
  b.node("Add", "erf1", {"e", "one"}, {"e1"});
  b.node("Mul", "gelu_a", {"n", "e1"}, {"g0"});
  b.node("Mul", "gelu", {"g0", "half"}, {"g"});
  b.init("split", at::tensor({2L, 3L}));
  auto* sp = b.node("Split", "split", {"g", "split"}, {"s0", "s1"});
  set_attr_int(sp, "axis", 1);
  b.node("ReduceMean", "s1_mean", {"s1"}, {"m1"});  // keepdims: [1,1,1,1]
  b.node("Add", "y", {"s0", "m1"}, {"y"});
  b.output("y");
  const at::Tensor x = at::randn({2, 5, 3, 9});
  expect_fp32_match(b.model, x, 1e-5);
  Engine eng(b.model);
  eng.run(x);
  for (const char* step : {"Erf erf aten", "Split split aten", "Sqrt std aten"})
    EXPECT_TRUE(has_line(eng, step)) << step << "\n" << joined(eng.describe());
}

TEST(EngineOps, RefusesIntegerResultsOnRuntimeTensorsAtLoad) {
  GraphBuilder b;
  b.node("Relu", "r", {"x"}, {"r"});
  set_attr_int(b.node("ArgMax", "argmax_1", {"r"}, {"y"}), "axis", 1);
  b.output("y");
  try {
    Engine eng(b.model, {{}, "seg.onnx"});
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("seg.onnx"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ArgMax (node argmax_1, whose result is not float)"), std::string::npos)
        << msg;
  }
}

// The kernel against ATen's upsample_bilinear2d(align_corners=false): integer and fractional
// factors, odd sizes, a 1x1 source, downsampling.
TEST(EngineOps, BilinearResizeKernelMatchesAten) {
  at::manual_seed(24);
  const std::vector<std::vector<int64_t>> cases{// N C H W -> OH OW
                                                {2, 19, 16, 32, 128, 256},
                                                {1, 3, 5, 7, 11, 13},
                                                {1, 2, 1, 1, 4, 3},
                                                {1, 4, 9, 10, 5, 4},
                                                {1, 1, 3, 3, 3, 3}};
  for (const auto& c : cases) {
    const at::Tensor x = at::randn({c[0], c[1], c[2], c[3]});
    at::Tensor got = at::empty({c[0], c[1], c[4], c[5]});
    engine::resize_bilinear_nchw(x.data_ptr<float>(), got.data_ptr<float>(), c[0] * c[1], c[2],
                                 c[3], c[4], c[5]);
    const at::Tensor want = at::upsample_bilinear2d(x, {c[4], c[5]}, false);
    EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5))
        << c[2] << "x" << c[3] << " -> " << c[4] << "x" << c[5] << ": max diff "
        << (got - want).abs().max().item<float>();
  }
}

// The int8 average pooling kernel against ATen's avg_pool2d of the dequantized values, NHWC
// in memory: u8 and s8, padding counted or not, odd sizes and channel counts.
TEST(EngineOps, Int8AvgPoolKernelMatchesAtenOnDequantizedValues) {
  at::manual_seed(27);
  struct Case {
    std::vector<int64_t> in;  // N C H W
    int64_t k, stride, pad;
    bool include, is_unsigned;
  };
  const std::vector<Case> cases{{{2, 19, 9, 11}, 3, 2, 1, true, true},
                                {{1, 1, 8, 8}, 3, 2, 1, false, false},
                                {{1, 33, 7, 5}, 2, 2, 0, true, false},
                                {{3, 4, 1, 1}, 1, 1, 0, false, true}};
  const float scale = 0.037f;
  for (const auto& c : cases) {
    const at::Tensor q = c.is_unsigned ? at::randint(0, 256, c.in).to(at::kByte)
                                       : at::randint(-128, 128, c.in).to(at::kChar);
    const at::Tensor want = at::avg_pool2d(q.to(at::kFloat) * scale, {c.k, c.k},
                                           {c.stride, c.stride}, {c.pad, c.pad}, false, c.include);
    const at::Tensor q_nhwc = q.permute({0, 2, 3, 1}).contiguous();
    at::Tensor got = at::empty({c.in[0], want.size(2), want.size(3), c.in[1]});
    engine::Int8AvgPoolShape shape{c.in[0],      c.in[1], c.in[2],  c.in[3],  want.size(2),
                                   want.size(3), c.k,     c.k,      c.stride, c.stride,
                                   c.pad,        c.pad,   c.include};
    engine::avg_pool_int8_nhwc(q_nhwc.data_ptr(), c.is_unsigned, scale, got.data_ptr<float>(),
                               shape);
    EXPECT_TRUE(at::allclose(got.permute({0, 3, 1, 2}), want, 1e-5, 1e-6))
        << c.in[1] << " channels, include " << c.include;
  }
}

// Logits upsampled to the input size as the graph output: the plain-layout kernel writes the
// caller's tensor (no output reorder step), for several batch sizes and repeated runs.
TEST(EngineOps, OutputResizeWritesTheCallersTensor) {
  at::manual_seed(25);
  GraphBuilder b;
  b.init("w", at::randn({19, 3, 3, 3}) * 0.3);
  set_attr_ints(b.node("Conv", "cls", {"x", "w"}, {"c"}), "pads", {1, 1, 1, 1});
  b.init("roi", at::empty({0}));
  b.init("scales", at::tensor({1.f, 1.f, 4.f, 4.f}));
  set_attr_string(b.node("Resize", "up", {"c", "roi", "scales"}, {"y"}), "mode", "linear");
  b.output("y");
  for (int64_t n : {1, 3}) expect_fp32_match(b.model, at::randn({n, 3, 9, 13}), 1e-5);
  Engine eng(b.model);
  const at::Tensor x = at::randn({2, 3, 9, 13});
  const at::Tensor first = eng.run(x).clone();
  EXPECT_TRUE(has_line(eng, "Resize up [bilinear nchw]")) << joined(eng.describe());
  EXPECT_TRUE(at::equal(eng.run(x), first));
}

TEST(EngineOps, ProfileHasOneEntryPerStep) {
  at::manual_seed(26);
  GraphBuilder b;
  b.init("w", at::randn({8, 3, 3, 3}));
  b.node("Conv", "c", {"x", "w"}, {"c"});
  b.node("Sigmoid", "s", {"c"}, {"y"});
  b.output("y");
  const at::Tensor x = at::randn({1, 3, 12, 12});
  Engine plain(b.model);
  plain.run(x);
  EXPECT_TRUE(plain.profile().empty());
  EngineOptions opt;
  opt.profile = true;
  Engine eng(b.model, opt);
  for (int i = 0; i < 3; ++i) eng.run(x);
  const auto steps = eng.profile();
  const auto lines = eng.describe();
  ASSERT_EQ(steps.size(), lines.size() + 1);
  for (size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(steps[i].line, lines[i]);
  for (const auto& s : steps) {
    EXPECT_EQ(s.runs, 3) << s.line;
    EXPECT_GE(s.total_ms, 0) << s.line;
  }
  // profiling changes nothing in the results
  EXPECT_TRUE(at::equal(eng.run(x), plain.run(x)));
}

}  // namespace
}  // namespace segslim::testing
