// Engine paths beyond convolutions: MatMul and Softmax on oneDNN, any other executor op on
// runtime tensors through the ATen fallback (multi-output included), the engine's own kernels
// (plain-layout bilinear output, int8 average pooling) against ATen, and per-step profiling.
#include <gtest/gtest.h>

#include <iostream>

#include "common/error.h"
#include "engine/attention_blend.h"
#include "engine/bilinear_resize.h"
#include "engine/channel_concat.h"
#include "engine/channel_reduce.h"
#include "engine/concat_affine.h"
#include "engine/dilated_branches.h"
#include "engine/engine_test_util.h"
#include "engine/int8_avg_pool.h"
#include "engine/planar_quantize.h"
#include "engine/tile_deconv.h"

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
  b.init("scale", at::tensor(0.408f));
  b.node("MatMul", "scores", {"q", "kt"}, {"s0"});
  b.node("Mul", "scaled", {"s0", "scale"}, {"s"});
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
    EXPECT_TRUE(has_line(eng, "Transpose kt [reorder")) << joined(eng.describe());
    // the scalar Mul is the scores matmul's output scale
    EXPECT_TRUE(has_line(eng, "MatMul scores f32 *scale") || has_line(eng, "MatMul scores *scale"))
        << joined(eng.describe());
    EXPECT_FALSE(has_line(eng, "Mul scaled")) << joined(eng.describe());
  }
}

// Transposes of runtime tensors as oneDNN reorders through a permuted-stride view: every
// permutation SegFormer's attention and token <-> map conversions use, the default (reversed)
// one, ranks 3 to 5 (through Reshapes), odd sizes; exact (a permutation moves values only).
// One on the graph input itself goes to ATen (that buffer is bound per run).
TEST(EngineOps, TransposeIsAReorder) {
  at::manual_seed(34);
  GraphBuilder b;
  b.node("Relu", "r", {"x"}, {"xr"});
  set_attr_ints(b.node("Transpose", "t4", {"xr"}, {"t4"}), "perm", {0, 2, 3, 1});
  set_attr_ints(b.node("Transpose", "t4b", {"t4"}, {"t4b"}), "perm", {0, 3, 1, 2});
  b.node("Transpose", "rev", {"t4b"}, {"rev"});  // no perm: reversed
  b.init("shape5", at::tensor({2, 3, 5, 7, 4}, at::kLong));
  b.node("Reshape", "to5", {"rev", "shape5"}, {"r5"});
  set_attr_ints(b.node("Transpose", "t5", {"r5"}, {"t5"}), "perm", {0, 3, 1, 4, 2});
  b.init("shape3", at::tensor({6, 35, 4}, at::kLong));
  b.node("Reshape", "to3", {"t5", "shape3"}, {"r3"});
  set_attr_ints(b.node("Transpose", "t3", {"r3"}, {"t3"}), "perm", {0, 2, 1});
  b.init("shape4", at::tensor({2, 3, 10, 14}, at::kLong));
  b.node("Reshape", "back", {"t3", "shape4"}, {"r4"});
  set_attr_ints(b.node("Transpose", "on_input", {"x"}, {"xt"}), "perm", {0, 1, 3, 2});
  b.node("Add", "y", {"r4", "xt"}, {"y"});
  b.output("y");
  const at::Tensor x = at::randn({2, 3, 14, 10});
  Engine eng(b.model);
  const at::Tensor got = eng.run(x);
  EXPECT_TRUE(at::equal(got, run_exec(b.model, x))) << joined(eng.describe());
  for (const char* t :
       {"Transpose t4 [reorder", "Transpose t4b [reorder", "Transpose rev [reorder",
        "Transpose t5 [reorder", "Transpose t3 [reorder", "Transpose on_input aten"})
    EXPECT_TRUE(has_line(eng, t)) << t << "\n" << joined(eng.describe());
  // a perm that is no permutation is refused when the plan is compiled, naming the node
  GraphBuilder bad;
  bad.node("Relu", "r", {"x"}, {"xr"});
  set_attr_ints(bad.node("Transpose", "twice", {"xr"}, {"y"}), "perm", {0, 1, 1, 2});
  bad.output("y");
  try {
    Engine refused(bad.model);
    refused.run(at::randn({1, 2, 3, 4}));
    ADD_FAILURE() << "a repeated axis in perm was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("twice"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("permutation"), std::string::npos) << e.what();
  }
}

// The same attention with MatMul quantized (QuantAware [matmul]): the projections run as
// int8 matmuls (per-column weight scales), the softmax writes the int8 probabilities, equal
// to the fake-quant graph up to rounding.
TEST(EngineOps, QdqMatmulRunsInt8) {
  at::manual_seed(28);
  GraphBuilder b;
  b.init("wq", at::randn({8, 6}) * 0.4);
  b.init("wv", at::randn({8, 7}) * 0.4);
  b.node("MatMul", "q", {"x", "wq"}, {"q"});
  b.init("temperature", at::tensor(2.5f));
  b.node("MatMul", "v", {"x", "wv"}, {"v0"});
  b.node("Div", "cooled", {"v0", "temperature"}, {"v"});  // folded into the int8 alpha
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
    EXPECT_FALSE(has_line(eng, "Div cooled")) << joined(eng.describe());
    // the probabilities' QuantizeLinear is the softmax's int8 output
    EXPECT_TRUE(has_line(eng, "Softmax softmax ->")) << joined(eng.describe());
    EXPECT_FALSE(has_line(eng, "QuantizeLinear p")) << joined(eng.describe());
    // MatMuls read plain tensors: the quantized operands are written so, with no reorder
    EXPECT_FALSE(has_line(eng, "Reorder")) << joined(eng.describe());
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
    // x * al + xr * (1 - al): one blend step, the two Muls folded in
    EXPECT_TRUE(has_line(eng, "Add fuse x*a+y*b of wx, wy")) << joined(eng.describe());
    EXPECT_FALSE(has_line(eng, "Mul wx")) << joined(eng.describe());
  }
}

// UAFM as PP-LiteSeg's QDQ export has it: the blend's sum is quantized for the next int8
// convolution, and the blend writes it as int8 itself (no QuantizeLinear step, no float map).
// Also with the weights in the other operand order, and a product read twice (no fusion).
TEST(EngineOps, AttentionBlendQuantizesForTheNextConv) {
  at::manual_seed(37);
  for (const bool swapped : {false, true}) {
    GraphBuilder b;
    b.init("w0", at::randn({12, 3, 3, 3}) * 0.4);
    b.init("w1", at::randn({12, 3, 1, 1}) * 0.4);
    b.init("wa", at::randn({1, 2, 3, 3}) * 0.5);
    b.init("w2", at::randn({5, 12, 3, 3}) * 0.3);
    b.init("one", at::tensor(1.f));
    set_attr_ints(b.node("Conv", "cx", {"x", "w0"}, {"fx"}), "pads", {1, 1, 1, 1});
    b.node("Conv", "cy", {"x", "w1"}, {"fy"});
    set_attr_ints(b.node("ReduceMean", "mean", {"fx"}, {"m"}), "axes", {1});
    set_attr_ints(b.node("ReduceMax", "max", {"fy"}, {"mx"}), "axes", {1});
    set_attr_int(b.node("Concat", "cat", {"m", "mx"}, {"cat"}), "axis", 1);
    set_attr_ints(b.node("Conv", "att", {"cat", "wa"}, {"a"}), "pads", {1, 1, 1, 1});
    b.node("Sigmoid", "alpha", {"a"}, {"al"});
    b.node("Mul", "wx",
           swapped ? std::vector<std::string>{"al", "fx"} : std::vector<std::string>{"fx", "al"},
           {"wx"});
    b.node("Sub", "beta", {"one", "al"}, {"be"});
    b.node("Mul", "wy", {"fy", "be"}, {"wy"});
    b.node("Add", "fuse", {"wx", "wy"}, {"f"});
    set_attr_ints(b.node("Conv", "out", {"f", "w2"}, {"y"}), "pads", {1, 1, 1, 1});
    b.output("y");
    const at::Tensor x = at::randn({2, 3, 14, 18});
    const auto q = quantize(b.model, x);
    Engine eng(q);
    expect_int8_match(eng, q, x);
    const std::string d = joined(eng.describe());
    EXPECT_TRUE(has_line(eng, "Add fuse x*a+y*b of wx, wy ->s8 [one pass nhwc]")) << d;
    EXPECT_FALSE(has_line(eng, "QuantizeLinear f")) << d;
    EXPECT_TRUE(has_line(eng, "Conv out int8")) << d;
    // the channel mean and max write their maps quantized for the int8 Concat
    EXPECT_TRUE(has_line(eng, "ReduceMean mean ->s8(concat) [channels nhwc]")) << d;
    EXPECT_TRUE(has_line(eng, "ReduceMax max ->s8(concat) [channels nhwc]")) << d;
    EXPECT_TRUE(has_line(eng, "Concat cat int8 s8 [channels nhwc]")) << d;
    EXPECT_FALSE(has_line(eng, "QuantizeLinear m")) << d;
  }
  // wx also read by the output: the Muls stay steps of their own
  GraphBuilder b;
  b.init("one", at::tensor(1.f));
  set_attr_ints(b.node("ReduceMean", "mean", {"x"}, {"m"}), "axes", {1});
  b.node("Sigmoid", "alpha", {"m"}, {"al"});
  b.node("Mul", "wx", {"x", "al"}, {"wx"});
  b.node("Sub", "beta", {"one", "al"}, {"be"});
  b.node("Mul", "wy", {"x", "be"}, {"wy"});
  b.node("Add", "fuse", {"wx", "wy"}, {"f"});
  b.node("Add", "y", {"f", "wx"}, {"y"});
  b.output("y");
  expect_fp32_match(b.model, at::randn({1, 6, 5, 7}), 1e-5);
  Engine eng(b.model);
  EXPECT_FALSE(has_line(eng, "x*a+y*b")) << joined(eng.describe());
}

// The channel reduction kernel against ATen's mean / amax / sum over dim 1, in each layout it
// reads: NCHW, NHWC and nChw16c with a partial last block whose padding lanes hold garbage
// (they must not count). Negative values: a zero leaking in would change the max.
TEST(EngineOps, ChannelReduceKernelMatchesAten) {
  at::manual_seed(31);
  using engine::ChannelLayout;
  using engine::ChannelReduceOp;
  for (const auto& d : std::vector<std::vector<int64_t>>{{2, 19, 5, 7},
                                                         {1, 16, 3, 4},
                                                         {1, 1, 2, 3},
                                                         {3, 40, 1, 1},
                                                         {1, 5, 4, 33},
                                                         {1, 64, 3, 5}}) {
    const at::Tensor x = at::randn(d) - 3;
    const int64_t blocks = (d[1] + 15) / 16;
    // nChw16c: [N, C/16, H, W, 16], lanes past C filled with 1e6
    at::Tensor padded = at::full({d[0], blocks * 16, d[2], d[3]}, 1e6f);
    padded.narrow(1, 0, d[1]).copy_(x);
    const at::Tensor blocked =
        padded.view({d[0], blocks, 16, d[2], d[3]}).permute({0, 1, 3, 4, 2}).contiguous();
    const std::vector<std::pair<ChannelLayout, at::Tensor>> layouts{
        {ChannelLayout::kNchw, x.contiguous()},
        {ChannelLayout::kNhwc, x.permute({0, 2, 3, 1}).contiguous()},
        {ChannelLayout::kNChw16c, blocked}};
    const std::vector<std::pair<ChannelReduceOp, at::Tensor>> ops{
        {ChannelReduceOp::kMean, x.mean(1, true)},
        {ChannelReduceOp::kMax, x.amax(1, true)},
        {ChannelReduceOp::kSum, x.sum(1, true)}};
    for (const auto& [layout, src] : layouts) {
      for (const auto& [op, want] : ops) {
        at::Tensor got = at::empty({d[0], 1, d[2], d[3]});
        engine::reduce_channels(src.data_ptr<float>(), got.data_ptr<float>(), d[0], d[1], d[2],
                                d[3], layout, op);
        EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5))
            << d[1] << " channels, layout " << static_cast<int>(layout) << ", op "
            << static_cast<int>(op) << ": max diff " << (got - want).abs().max().item<float>();
        // quantized: PyTorch's fake quantization of the kernel's own float result (which the
        // lines above compare with ATen), at scales that saturate part of the range
        for (const bool u8 : {false, true}) {
          const float scale = op == ChannelReduceOp::kSum ? 0.4f : 0.03f;
          at::Tensor q = at::empty({d[0], 1, d[2], d[3]}, u8 ? at::kByte : at::kChar);
          engine::reduce_channels(src.data_ptr<float>(), q.data_ptr(), d[0], d[1], d[2], d[3],
                                  layout, op, u8 ? engine::ElemType::kU8 : engine::ElemType::kS8,
                                  scale);
          const at::Tensor wq =
              at::fake_quantize_per_tensor_affine(got, scale, 0, u8 ? 0 : -128, u8 ? 255 : 127);
          EXPECT_TRUE(at::equal(q.to(at::kFloat) * scale, wq))
              << (u8 ? "u8 " : "s8 ") << d[1] << " channels, layout " << static_cast<int>(layout)
              << ", op " << static_cast<int>(op);
        }
      }
    }
  }
}

// Adaptive average pooling to k x k bins as tools/zoo exports it without fixed sizes (PP-LiteSeg's
// SPPM): Reshape [N,C,H,k,W/k] + ReduceMean(-1) along W, Transpose, the same along H. Each
// Reshape + ReduceMean pair becomes one pooling step; with keepdims (first pair) it is left to
// ATen.
TEST(EngineOps, GroupedRowMeanIsAPooling) {
  at::manual_seed(33);
  for (const int64_t keepdims : {0, 1}) {
    GraphBuilder b;
    const at::Tensor w = at::randn({24, 3, 3, 3}) * 0.3;
    b.init("w", w);
    b.init("shape", at::tensor({0L, 0L, 0L, 4L, -1L}));
    set_attr_ints(b.node("Conv", "c", {"x", "w"}, {"c"}), "pads", {1, 1, 1, 1});
    b.node("Reshape", "rw", {"c", "shape"}, {"rw"});
    auto* mw = b.node("ReduceMean", "mw", {"rw"}, {"mw"});
    set_attr_ints(mw, "axes", {-1});
    set_attr_int(mw, "keepdims", keepdims);
    if (keepdims) {  // [N,C,H,4,1] -> [N,C,H,4]
      b.init("squeeze", at::tensor({0L, 0L, 0L, 4L}));
      b.node("Reshape", "sq", {"mw", "squeeze"}, {"mw4"});
    }
    set_attr_ints(b.node("Transpose", "t1", {keepdims ? "mw4" : "mw"}, {"t1"}), "perm",
                  {0, 1, 3, 2});
    b.node("Reshape", "rh", {"t1", "shape"}, {"rh"});
    auto* mh = b.node("ReduceMean", "mh", {"rh"}, {"mh"});
    set_attr_ints(mh, "axes", {-1});
    set_attr_int(mh, "keepdims", 0);
    set_attr_ints(b.node("Transpose", "t2", {"mh"}, {"y"}), "perm", {0, 1, 3, 2});
    b.output("y");
    for (const auto& shape : std::vector<std::vector<int64_t>>{{2, 3, 8, 12}, {1, 3, 4, 4}}) {
      const at::Tensor x = at::randn(shape);
      expect_fp32_match(b.model, x, 1e-5);
      // against ATen's adaptive pooling of the same conv output
      Engine eng(b.model);
      const at::Tensor want = at::adaptive_avg_pool2d(at::conv2d(x, w, {}, 1, 1), {4, 4});
      EXPECT_TRUE(at::allclose(eng.run(x), want, 1e-5, 1e-5));
      const std::string d = joined(eng.describe());
      EXPECT_EQ(d.find("AveragePool rw+mw grouped row mean") != std::string::npos, keepdims == 0)
          << d;
      EXPECT_NE(d.find("AveragePool rh+mh grouped row mean"), std::string::npos) << d;
      if (keepdims == 0) {
        EXPECT_EQ(d.find("Reshape"), std::string::npos) << d;
      }
    }
  }
}

// HardSigmoid (no oneDNN eltwise in 2.6): x * HardSigmoid(x; 1/6, 1/2) is MobileNetV3's
// hardswish, one post-op of the conv; an SE-style gate HardSigmoid(0.2, 0.5) after a conv is
// two post-ops (linear, clip); on the graph input, two eltwise steps.
TEST(EngineOps, HardSigmoidAndHardSwishPattern) {
  at::manual_seed(35);
  GraphBuilder b;
  b.init("w1", at::randn({8, 3, 3, 3}) * 0.8);
  b.init("w2", at::randn({8, 8, 1, 1}) * 0.8);
  set_attr_ints(b.node("Conv", "c1", {"x", "w1"}, {"c1"}), "pads", {1, 1, 1, 1});
  auto* hs = b.node("HardSigmoid", "hs", {"c1"}, {"hs"});
  set_attr_float(hs, "alpha", 1.f / 6.f);
  set_attr_float(hs, "beta", 0.5f);
  b.node("Mul", "hswish", {"c1", "hs"}, {"h"});
  b.node("Conv", "c2", {"h", "w2"}, {"c2"});
  b.node("HardSigmoid", "gate", {"c2"}, {"g"});  // defaults 0.2, 0.5
  b.node("HardSigmoid", "in_gate", {"x"}, {"xg"});
  b.node("ReduceMean", "xm", {"xg"}, {"xm"});  // [1,1,1,1]
  b.node("Add", "y", {"g", "xm"}, {"y"});
  b.output("y");
  for (const auto& shape : std::vector<std::vector<int64_t>>{{2, 3, 9, 7}, {1, 3, 1, 1}}) {
    const at::Tensor x = at::randn(shape) * 4;
    expect_fp32_match(b.model, x, 1e-5);
    Engine eng(b.model);
    eng.run(x);
    const std::string d = joined(eng.describe());
    EXPECT_TRUE(has_line(eng, "Conv c1 f32 +hardswish")) << d;
    EXPECT_TRUE(has_line(eng, "Conv c2 f32 +hardsigmoid")) << d;
    EXPECT_FALSE(has_line(eng, "Mul hswish")) << d;
    EXPECT_FALSE(has_line(eng, "aten")) << d;
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
  // x - mean and xc / std broadcast along the last axis of a plain tensor, where oneDNN has
  // only its reference kernel: those binaries run on ATen (never oneDNN's "ref")
  EXPECT_FALSE(has_line(eng, "[ref")) << joined(eng.describe());
  EXPECT_TRUE(has_line(eng, "Sub center aten")) << joined(eng.describe());
}

TEST(EngineOps, RefusesIntegerResultsOnRuntimeTensorsAtLoad) {
  GraphBuilder b;
  // An ArgMax runs only as the graph output (the class-id map); here a Cast reads it.
  b.node("Relu", "r", {"x"}, {"r"});
  set_attr_int(b.node("ArgMax", "argmax_1", {"r"}, {"i"}), "axis", 1);
  set_attr_int(b.node("Cast", "to_float", {"i"}, {"y"}), "to", onnx::TensorProto::FLOAT);
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
// factors, odd sizes, a 1x1 source, downsampling, and an output past 32 MB (written with
// streaming stores) whose odd width leaves most rows unaligned.
TEST(EngineOps, BilinearResizeKernelMatchesAten) {
  at::manual_seed(24);
  const std::vector<std::vector<int64_t>> cases{
      // N C H W -> OH OW
      {2, 19, 16, 32, 128, 256}, {1, 3, 5, 7, 11, 13}, {1, 2, 1, 1, 4, 3},
      {1, 4, 9, 10, 5, 4},       {1, 1, 3, 3, 3, 3},   {1, 2, 40, 61, 1600, 2999}};
  // both paths: AVX-512 (where the CPU has it) and the portable one
  for (const char* no_avx512 : {"0", "1"})
    for (const auto& c : cases) {
      setenv("SEGSLIM_NO_AVX512", no_avx512, 1);
      const at::Tensor x = at::randn({c[0], c[1], c[2], c[3]});
      at::Tensor got = at::empty({c[0], c[1], c[4], c[5]});
      engine::resize_bilinear_nchw(x.data_ptr<float>(), got.data_ptr<float>(), c[0] * c[1], c[2],
                                   c[3], c[4], c[5]);
      const at::Tensor want = at::upsample_bilinear2d(x, {c[4], c[5]}, false);
      EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5))
          << c[2] << "x" << c[3] << " -> " << c[4] << "x" << c[5] << ": max diff "
          << (got - want).abs().max().item<float>() << ", SEGSLIM_NO_AVX512=" << no_avx512;
    }
  unsetenv("SEGSLIM_NO_AVX512");
}

// Where `got` and `want` class maps differ, the two classes' scores must tie within `tol`:
// the engine's scores differ from the reference's by float rounding, nothing more.
void expect_same_classes_up_to_ties(const at::Tensor& got, const at::Tensor& want,
                                    const at::Tensor& scores, float tol, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), at::kLong) << what;
  const at::Tensor g = got.reshape(want.sizes()).unsqueeze(1), w = want.unsqueeze(1);
  const at::Tensor gap = (scores.gather(1, w) - scores.gather(1, g)).abs();
  const at::Tensor differ = g != w;
  EXPECT_LE(differ.sum().item<int64_t>(), std::max<int64_t>(2, want.numel() / 1000)) << what;
  if (differ.any().item<bool>()) {
    EXPECT_LE(gap.masked_select(differ).max().item<float>(), tol) << what;
  }
}

// The class-id kernels against at::argmax (of ATen's upsample_bilinear2d for the fused one):
// integer and fractional factors, odd sizes, 150 classes (ADE20K), very wide rows, a
// vertical factor past the 8 output rows blended together, downsampling, one class, and exact
// ties (all channels equal: the first class wins, as in ONNX ArgMax and torch.argmax).
TEST(EngineOps, ArgMaxKernelsMatchAten) {
  at::manual_seed(31);
  // N C H W -> OH OW
  const std::vector<std::vector<int64_t>> cases{
      {2, 19, 16, 32, 128, 256}, {1, 150, 8, 8, 64, 64}, {1, 3, 5, 7, 11, 13}, {1, 4, 9, 10, 5, 4},
      {1, 1, 3, 3, 7, 7},        {1, 5, 2, 3, 3, 40000}, {2, 7, 3, 4, 50, 9}};
  // both paths: AVX-512 (where the CPU has it) and the portable one
  for (const char* no_avx512 : {"0", "1"})
    for (const auto& c : cases) {
      setenv("SEGSLIM_NO_AVX512", no_avx512, 1);
      const std::string what = str_cat(c[0], "x", c[1], "x", c[2], "x", c[3], " -> ", c[4], "x",
                                       c[5], ", SEGSLIM_NO_AVX512=", no_avx512);
      const at::Tensor x = at::randn({c[0], c[1], c[2], c[3]});
      at::Tensor plain = at::empty({c[0], c[2], c[3]}, at::kLong);
      engine::argmax_channels_nchw(x.data_ptr<float>(), plain.data_ptr<int64_t>(), c[0], c[1], c[2],
                                   c[3]);
      EXPECT_TRUE(at::equal(plain, x.argmax(1))) << what;
      at::Tensor got = at::empty({c[0], c[4], c[5]}, at::kLong);
      engine::resize_bilinear_argmax_nchw(x.data_ptr<float>(), got.data_ptr<int64_t>(), c[0], c[1],
                                          c[2], c[3], c[4], c[5]);
      const at::Tensor scores = at::upsample_bilinear2d(x, {c[4], c[5]}, false);
      expect_same_classes_up_to_ties(got, scores.argmax(1), scores, 1e-5f, what);
    }
  unsetenv("SEGSLIM_NO_AVX512");
  const at::Tensor flat = at::ones({1, 4, 3, 5}) * 0.25;
  at::Tensor ids = at::full({1, 6, 10}, 7, at::kLong);
  engine::resize_bilinear_argmax_nchw(flat.data_ptr<float>(), ids.data_ptr<int64_t>(), 1, 4, 3, 5,
                                      6, 10);
  EXPECT_EQ(ids.max().item<int64_t>(), 0);
  at::Tensor ids2 = at::full({1, 3, 5}, 7, at::kLong);
  engine::argmax_channels_nchw(flat.data_ptr<float>(), ids2.data_ptr<int64_t>(), 1, 4, 3, 5);
  EXPECT_EQ(ids2.max().item<int64_t>(), 0);
}

// The network input's QuantizeLinear, NCHW float to channels-last int8, against ATen:
// round half to even of x * (1 / s) (at::round), plus the zero point, saturated, permuted.
// Three channels (the AVX-512 interleave) with widths that leave tails, other channel counts
// (the portable path), exact ties, values past both ends, s8 and u8 with zero points.
TEST(EngineOps, PlanarQuantizeMatchesAten) {
  at::manual_seed(33);
  struct Case {
    int64_t n, c, h, w;
    float scale;
    int32_t zp;
    bool u8;
  };
  const std::vector<Case> cases{{1, 3, 5, 37, 0.02f, 0, false}, {2, 3, 4, 48, 0.25f, 0, false},
                                {1, 3, 3, 7, 0.05f, 128, true}, {1, 3, 2, 33, 0.125f, -3, false},
                                {1, 1, 3, 21, 0.03f, 0, false}, {2, 4, 3, 19, 0.04f, 10, true},
                                {1, 5, 2, 17, 0.5f, 0, false}};
  for (const char* no_avx512 : {"0", "1"})
    for (const auto& c : cases) {
      setenv("SEGSLIM_NO_AVX512", no_avx512, 1);
      const std::string what =
          str_cat(c.n, "x", c.c, "x", c.h, "x", c.w, " scale ", c.scale, " zp ", c.zp,
                  c.u8 ? " u8" : " s8", ", SEGSLIM_NO_AVX512=", no_avx512);
      // mostly inside the range, some past both ends, and exact ties k + 0.5 (the scales are
      // powers of two there, or the products round to them anyway: at::round sees the same)
      at::Tensor x = at::randn({c.n, c.c, c.h, c.w}) * (100 * c.scale);
      x.view(-1).slice(0, 0, 8).copy_(
          at::tensor({-300.f, 300.f, 0.5f, 1.5f, -0.5f, -2.5f, 2.5f, 126.5f}) * c.scale);
      const float inv = 1.f / c.scale;
      const at::Tensor want = ((x * inv).round() + c.zp)
                                  .clamp(c.u8 ? 0 : -128, c.u8 ? 255 : 127)
                                  .permute({0, 2, 3, 1})
                                  .contiguous()
                                  .to(at::kInt);
      at::Tensor got = at::empty({c.n, c.h, c.w, c.c}, c.u8 ? at::kByte : at::kChar);
      engine::quantize_nchw_to_nhwc(x.data_ptr<float>(), got.data_ptr(), c.n, c.c, c.h, c.w, inv,
                                    c.zp, c.u8);
      EXPECT_TRUE(at::equal(got.to(at::kInt), want)) << what;
    }
  unsetenv("SEGSLIM_NO_AVX512");
}

// The channels-last concat against at::cat of the pieces: widths of 1, 2, 4 and 8 bytes (the
// fixed-width copies), 3, 12, 19, 40 and 64 (the masked AVX-512 copy, memcpy without it), 76
// (memcpy), f32 and int8, enough pixels for several blocks and threads, and a single pixel;
// with and without AVX-512.
TEST(EngineOps, ChannelConcatKernelMatchesAten) {
  at::manual_seed(35);
  for (const bool avx512 : {true, false}) {
    if (!avx512) setenv("SEGSLIM_NO_AVX512", "1", 1);
    for (const at::ScalarType type : {at::kFloat, at::kChar})
      for (const int64_t pixels : {1, 7, 40000}) {
        const std::vector<int64_t> channels =
            type == at::kFloat ? std::vector<int64_t>{1, 2, 1, 10, 3, 16, 19}
                               : std::vector<int64_t>{1, 2, 4, 8, 3, 40, 1, 12, 19, 64, 76};
        std::vector<at::Tensor> pieces;
        std::vector<engine::ChannelPiece> args;
        for (const int64_t c : channels) {
          pieces.push_back(type == at::kFloat ? at::randn({pixels, c})
                                              : at::randint(-128, 128, {pixels, c}).to(at::kChar));
          args.push_back({pieces.back().data_ptr(), c * pieces.back().element_size()});
        }
        const at::Tensor want = at::cat(pieces, 1);
        at::Tensor got = at::full_like(want, 7);
        engine::concat_channels_nhwc(args, got.data_ptr(), pixels);
        EXPECT_TRUE(at::equal(got, want)) << pixels << " pixels, " << type << ", avx512 " << avx512;
      }
  }
  unsetenv("SEGSLIM_NO_AVX512");
}

// The kernel == stride transposed convolution against ATen's conv_transpose2d: float input,
// and int8 codes (s8, u8) whose float sums are exact, scaled and biased per output channel;
// widths with whole 64-column blocks and masked tails, a 1x1 map, kernels 1x1 to 3x8; with
// and without AVX-512.
TEST(EngineOps, TileDeconvKernelMatchesAten) {
  at::manual_seed(37);
  struct Case {
    int64_t n, c, h, w, o, kh, kw;
  };
  // the int8-weights check below compares the VNNI path with the float one only where it runs
  if (!engine::tile_deconv_vnni_supported())
    std::cout << "[ NOTE     ] no AVX-512 VNNI: the int8 tile_deconv runs its float path only\n";
  EXPECT_TRUE(engine::tile_deconv_int8_exact(1023, engine::ElemType::kS8));
  EXPECT_FALSE(engine::tile_deconv_int8_exact(1024, engine::ElemType::kS8));
  EXPECT_TRUE(engine::tile_deconv_int8_exact(514, engine::ElemType::kU8));  // 514 x 255 x 128
  EXPECT_FALSE(engine::tile_deconv_int8_exact(515, engine::ElemType::kU8));
  for (const bool avx512 : {true, false}) {
    if (!avx512) setenv("SEGSLIM_NO_AVX512", "1", 1);
    for (const Case& k : std::vector<Case>{{2, 12, 5, 40, 11, 2, 2},
                                           {1, 3, 1, 1, 1, 1, 1},
                                           {1, 20, 3, 33, 7, 3, 4},
                                           {1, 17, 2, 70, 5, 2, 8}})
      for (const engine::ElemType type :
           {engine::ElemType::kF32, engine::ElemType::kS8, engine::ElemType::kU8}) {
        const bool int8 = type != engine::ElemType::kF32;
        at::Tensor x, w;  // x NCHW as float (int8: the codes), w [C, O, kh, kw]
        at::Tensor src;   // channels-last, of the kernel's type
        if (!int8) {
          x = at::randn({k.n, k.c, k.h, k.w});
          w = at::randn({k.c, k.o, k.kh, k.kw});
          src = x.permute({0, 2, 3, 1}).contiguous();
        } else {
          const bool u8 = type == engine::ElemType::kU8;
          x = at::randint(u8 ? 0 : -128, u8 ? 256 : 128, {k.n, k.c, k.h, k.w}).to(at::kFloat);
          w = at::randint(-128, 128, {k.c, k.o, k.kh, k.kw}).to(at::kFloat);
          src = x.permute({0, 2, 3, 1}).contiguous().to(u8 ? at::kByte : at::kChar);
        }
        const at::Tensor scale = int8 ? at::rand({k.o}) * 1e-3 + 1e-4 : at::ones({k.o});
        const at::Tensor bias = at::randn({k.o});
        const at::Tensor want =
            at::conv_transpose2d(x, w, {}, {k.kh, k.kw}) * scale.view({1, -1, 1, 1}) +
            bias.view({1, -1, 1, 1});
        const std::vector<float> pattern =
            engine::tile_deconv_pattern(w.data_ptr<float>(), k.c, k.o, k.kh, k.kw);
        at::Tensor got = at::full_like(want, 7);
        engine::TileDeconvArgs a;
        a.src = src.data_ptr();
        a.src_type = type;
        a.out = got.data_ptr<float>();
        a.n = k.n;
        a.h = k.h;
        a.w = k.w;
        a.c = k.c;
        a.o = k.o;
        a.kh = k.kh;
        a.kw = k.kw;
        a.pattern = pattern.data();
        a.scale = scale.data_ptr<float>();
        a.bias = bias.data_ptr<float>();
        engine::tile_deconv_to_nchw(a);
        const std::string what =
            str_cat(k.c, "x", k.h, "x", k.w, " -> ", k.o, ", kernel ", k.kh, "x", k.kw, ", type ",
                    static_cast<int>(type), ", avx512 ", avx512);
        const double tol = 1e-5 * (want.abs().max().item<double>() + 1);
        EXPECT_LE((got - want).abs().max().item<double>(), tol) << what;
        if (!int8) continue;
        // the int8 weights' path (vpdpbusd where the CPU has VNNI): the same exact sums, so the
        // same floats to the bit
        const engine::TileDeconvInt8Weights w8 =
            engine::tile_deconv_int8_weights(w.data_ptr<float>(), k.c, k.o, k.kh, k.kw, type);
        a.pattern8 = w8.pattern.data();
        a.pattern8_start = w8.start.data();
        at::Tensor got8 = at::full_like(want, 7);
        a.out = got8.data_ptr<float>();
        engine::tile_deconv_to_nchw(a);
        EXPECT_TRUE(at::equal(got8, got))
            << what << ": max difference " << (got8 - got).abs().max().item<float>();
      }
  }
  unsetenv("SEGSLIM_NO_AVX512");
}

// The UAFM blend against ATen's separate x * a, y * b and their sum: the float output equal to
// the bit (the same roundings, no fused multiply-add), the int8 ones against PyTorch's
// fake quantization of that sum (u8 and s8, scales that saturate part of the range).
TEST(EngineOps, AttentionBlendKernelMatchesAten) {
  at::manual_seed(36);
  for (const auto& nhwc : std::vector<std::vector<int64_t>>{
           {1, 5, 7, 64}, {2, 3, 11, 19}, {1, 1, 1, 1}, {1, 33, 40, 32}}) {
    const int64_t N = nhwc[0], H = nhwc[1], W = nhwc[2], C = nhwc[3];
    const at::Tensor x = at::randn({N, H, W, C}) * 3, y = at::randn({N, H, W, C}) * 3;
    const at::Tensor a = at::rand({N, H, W, 1}), b = 1 - a;
    const at::Tensor want = x * a + y * b;
    engine::BlendArgs g;
    g.x = x.data_ptr<float>();
    g.a = a.data_ptr<float>();
    g.y = y.data_ptr<float>();
    g.b = b.data_ptr<float>();
    g.pixels = N * H * W;
    g.channels = C;
    at::Tensor f32 = at::empty({N, H, W, C});
    g.out = f32.data_ptr();
    engine::attention_blend_nhwc(g);
    EXPECT_TRUE(at::equal(f32, want))
        << "f32, " << C << " channels: max diff " << (f32 - want).abs().max().item<float>();
    for (const bool u8 : {false, true}) {
      const float scale = u8 ? 0.02f : 0.015f;
      at::Tensor q = at::empty({N, H, W, C}, u8 ? at::kByte : at::kChar);
      g.out = q.data_ptr();
      g.type = u8 ? engine::ElemType::kU8 : engine::ElemType::kS8;
      g.scale = scale;
      engine::attention_blend_nhwc(g);
      const at::Tensor wq =
          at::fake_quantize_per_tensor_affine(want, scale, 0, u8 ? 0 : -128, u8 ? 255 : 127);
      EXPECT_TRUE(at::equal(q.to(at::kFloat) * scale, wq))
          << (u8 ? "u8" : "s8") << ", " << C << " channels: max diff "
          << (q.to(at::kFloat) * scale - wq).abs().max().item<float>();
    }
  }
}

// A model ending in Resize + ArgMax (PaddleSeg's export): the resize folds into the argmax
// step, which writes int64 class ids into the caller's tensor; keepdims 1 and 0, with and
// without the resize, against the executor on the same graph.
TEST(EngineOps, ArgMaxOutputIsTheClassMap) {
  at::manual_seed(32);
  for (bool resize : {true, false})
    for (int64_t keepdims : {1, 0}) {
      GraphBuilder b;
      b.init("w", at::randn({19, 3, 3, 3}) * 0.3);
      set_attr_ints(b.node("Conv", "cls", {"x", "w"}, {"c"}), "pads", {1, 1, 1, 1});
      std::string scores = "c";
      if (resize) {
        b.init("roi", at::empty({0}));
        b.init("scales", at::tensor({1.f, 1.f, 4.f, 4.f}));
        set_attr_string(b.node("Resize", "up", {"c", "roi", "scales"}, {"y"}), "mode", "linear");
        scores = "y";
      }
      onnx::NodeProto* am = b.node("ArgMax", "labels", {scores}, {"ids"});
      set_attr_int(am, "axis", 1);
      set_attr_int(am, "keepdims", keepdims);
      b.output("ids");
      const std::string what = str_cat("resize ", resize, ", keepdims ", keepdims);
      Engine eng(b.model);
      for (int64_t n : {1, 2}) {
        const at::Tensor x = at::randn({n, 3, 9, 13});
        const at::Tensor got = eng.run(x);
        const at::Tensor want = run_exec(b.model, x);
        ASSERT_EQ(got.sizes(), want.sizes()) << what << "\n" << joined(eng.describe());
        // the reference scores, from the same graph without the ArgMax
        GraphBuilder f = b;
        f.model.mutable_graph()->mutable_node()->RemoveLast();
        f.model.mutable_graph()->clear_output();
        f.output(scores);
        const at::Tensor s = run_exec(f.model, x);
        expect_same_classes_up_to_ties(got.reshape({n, s.size(2), s.size(3)}),
                                       want.reshape({n, s.size(2), s.size(3)}), s, 1e-4f, what);
        EXPECT_TRUE(at::equal(eng.run(x), got)) << what;
      }
      EXPECT_TRUE(
          has_line(eng, resize ? "ArgMax labels of the bilinear resize up" : "ArgMax labels"))
          << joined(eng.describe());
      EXPECT_FALSE(has_line(eng, "Resize")) << joined(eng.describe());
      EXPECT_TRUE(eng.profile().empty());
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
    engine::avg_pool_int8_nhwc(q_nhwc.data_ptr(), c.is_unsigned, scale, got.data_ptr(),
                               engine::PoolOut::kF32, 0.f, shape);
    EXPECT_TRUE(at::allclose(got.permute({0, 3, 1, 2}), want, 1e-5, 1e-6))
        << c.in[1] << " channels, include " << c.include;
    // The mean quantized in the kernel: PyTorch's fake quantization of the reference mean (a
    // scale that saturates both ends of the range). Float rounding of the sum may flip a tie.
    const float out_scale = 0.021f;
    for (const bool out_unsigned : {true, false}) {
      const auto qtype = out_unsigned ? at::kByte : at::kChar;
      at::Tensor got_q = at::empty({c.in[0], want.size(2), want.size(3), c.in[1]}, qtype);
      engine::avg_pool_int8_nhwc(q_nhwc.data_ptr(), c.is_unsigned, scale, got_q.data_ptr(),
                                 out_unsigned ? engine::PoolOut::kU8 : engine::PoolOut::kS8,
                                 out_scale, shape);
      const at::Tensor ref = at::fake_quantize_per_tensor_affine(
          want, out_scale, 0, out_unsigned ? 0 : -128, out_unsigned ? 255 : 127);
      const at::Tensor diff = (got_q.permute({0, 3, 1, 2}).to(at::kFloat) * out_scale - ref).abs();
      EXPECT_LE(diff.max().item<float>(), out_scale * 1.001f) << c.in[1] << " channels";
      EXPECT_LE((diff > out_scale / 2).sum().item<int64_t>(),
                std::max<int64_t>(1, diff.numel() / 1000))
          << c.in[1] << " channels, unsigned out " << out_unsigned;
    }
  }
}

// Concat (f32, s8 and u8 pieces of odd widths) + residual + per-channel affine + PRelu in one
// pass, written as f32, s8 and u8, against ATen on the dequantized NCHW tensors and PyTorch's
// fake quantization. Pixel counts that do not fill the kernel's tiles, with and without a
// residual and an activation, and a single channel.
// int8 codes (NHWC) against the fake quantization of want (NCHW float): within one step
// everywhere, and more than half a step only where float rounding moved a tie to the other side
// (at most 1 in 1000 values).
void expect_quantized(const at::Tensor& got, const at::Tensor& want, float scale, int lo, int hi,
                      const std::string& what) {
  const at::Tensor ref = at::fake_quantize_per_tensor_affine(want, scale, 0, lo, hi);
  const at::Tensor diff = (got.permute({0, 3, 1, 2}).to(at::kFloat) * scale - ref).abs();
  EXPECT_LE(diff.max().item<float>(), scale * 1.001f) << what;
  EXPECT_LE((diff > scale / 2).sum().item<int64_t>(), std::max<int64_t>(1, diff.numel() / 1000))
      << what;
}

TEST(EngineOps, ConcatAffineKernelMatchesAten) {
  at::manual_seed(29);
  using engine::ElemType;
  struct Piece {
    int64_t c;
    ElemType type;
  };
  struct Case {
    std::vector<int64_t> nhw;
    std::vector<Piece> pieces;
    ElemType residual;  // kF32 / kS8, or kU8 = no residual
    bool prelu;
    ElemType concat_quant = ElemType::kF32;  // kS8 / kU8: the concatenation quantized
  };
  const std::vector<Case> cases{
      {{2, 7, 5},
       {{3, ElemType::kF32}, {25, ElemType::kS8}, {28, ElemType::kU8}},
       ElemType::kF32,
       true},
      {{1, 45, 61}, {{16, ElemType::kF32}, {3, ElemType::kF32}}, ElemType::kU8, true},
      {{3, 4, 9},
       {{64, ElemType::kS8}, {64, ElemType::kF32}, {3, ElemType::kF32}},
       ElemType::kS8,
       false},
      {{1, 1, 1}, {{1, ElemType::kF32}}, ElemType::kU8, false},
      // ESPNet's residual sums quantized: the concatenation's fake quantization, s8 residual
      {{2, 9, 11},
       {{28, ElemType::kF32}, {25, ElemType::kF32}, {25, ElemType::kF32}},
       ElemType::kS8,
       true,
       ElemType::kS8},
      {{1, 5, 7}, {{3, ElemType::kS8}, {20, ElemType::kF32}}, ElemType::kF32, false, ElemType::kU8},
      // float16 links (EngineOptions::half_links): a block's tail with a half residual, a BR
      // module with half pieces
      {{2, 6, 9},
       {{28, ElemType::kF16}, {25, ElemType::kS8}, {3, ElemType::kF32}},
       ElemType::kF16,
       true},
      {{1, 9, 11},
       {{64, ElemType::kF16}, {64, ElemType::kF16}, {3, ElemType::kF32}},
       ElemType::kU8,
       true}};
  // Both piece readers: the AVX-512 masked one (where the CPU has it) and the plain loops.
  for (const char* no_avx512 : {"0", "1"})
    for (const auto& c : cases) {
      setenv("SEGSLIM_NO_AVX512", no_avx512, 1);
      const int64_t N = c.nhw[0], H = c.nhw[1], W = c.nhw[2];
      int64_t C = 0;
      for (const auto& p : c.pieces) C += p.c;
      std::vector<at::Tensor> stored, real;  // NHWC as the kernel reads them; NCHW dequantized
      engine::ConcatAffineArgs args;
      auto make = [&](int64_t ch, ElemType type, float scale) {
        at::Tensor t = type == ElemType::kF32   ? at::randn({N, H, W, ch}) * 2
                       : type == ElemType::kF16 ? (at::randn({N, H, W, ch}) * 2).to(at::kHalf)
                       : type == ElemType::kS8 ? at::randint(-128, 128, {N, H, W, ch}).to(at::kChar)
                                               : at::randint(0, 256, {N, H, W, ch}).to(at::kByte);
        stored.push_back(t);
        const bool real_valued = type == ElemType::kF32 || type == ElemType::kF16;
        real.push_back(
            (real_valued ? t.to(at::kFloat) : t.to(at::kFloat) * scale).permute({0, 3, 1, 2}));
        return engine::AffineInput{t.data_ptr(), type, scale, ch};
      };
      for (const auto& p : c.pieces) args.pieces.push_back(make(p.c, p.type, 0.013f));
      at::Tensor x = at::cat(real, 1);
      // a scale that saturates part of the range (f32 pieces are about N(0, 4))
      const engine::ConcatQuant concat_quant{
          c.concat_quant == ElemType::kF32 ? 0.f : 0.03f,
          c.concat_quant == ElemType::kU8 ? ElemType::kU8 : ElemType::kS8};
      if (concat_quant.scale > 0) {
        const bool u8 = concat_quant.type == ElemType::kU8;
        x = at::fake_quantize_per_tensor_affine(x, concat_quant.scale, 0, u8 ? 0 : -128,
                                                u8 ? 255 : 127);
      }
      if (c.residual != ElemType::kU8) {
        args.residual = make(C, c.residual, 0.021f);
        x = x + real.back();
      }
      const at::Tensor a = at::rand({C}) + 0.5, b = at::randn({C}), slope = at::rand({C}) * 0.3;
      at::Tensor want = x * a.view({1, C, 1, 1}) + b.view({1, C, 1, 1});
      if (c.prelu) want = at::where(want >= 0, want, want * slope.view({1, C, 1, 1}));
      auto floats = [](const at::Tensor& t) {
        return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
      };
      const engine::ConcatAffineCoefficients k(
          floats(a), floats(b), c.prelu ? floats(slope) : std::vector<float>(), concat_quant);
      args.coefficients = &k;
      const float s8_scale = 0.05f, u8_scale = 0.02f;  // both saturate part of the range
      at::Tensor f32 = at::empty({N, H, W, C}), s8 = at::empty({N, H, W, C}, at::kChar),
                 u8 = at::empty({N, H, W, C}, at::kByte), f16 = at::empty({N, H, W, C}, at::kHalf);
      args.outs = {{s8.data_ptr(), ElemType::kS8, s8_scale},
                   {f32.data_ptr(), ElemType::kF32, 1.f},
                   {u8.data_ptr(), ElemType::kU8, u8_scale}};
      args.pixels = N * H * W;
      engine::concat_affine_nhwc(args);
      const std::string what =
          str_cat(C, " channels, ", N * H * W, " pixels, SEGSLIM_NO_AVX512=", no_avx512);
      EXPECT_TRUE(at::allclose(f32.permute({0, 3, 1, 2}), want, 1e-5, 1e-5)) << what;
      // a float16 output: the float result rounded to nearest even, as ATen rounds it
      args.outs = {{f16.data_ptr(), ElemType::kF16, 1.f}};
      engine::concat_affine_nhwc(args);
      EXPECT_TRUE(at::equal(f16, f32.to(at::kHalf))) << what;
      for (const auto& [got, scale, lo, hi] :
           {std::tuple{s8, s8_scale, -128, 127}, std::tuple{u8, u8_scale, 0, 255}}) {
        expect_quantized(got, want, scale, lo, hi, what);
        const at::Tensor ref = at::fake_quantize_per_tensor_affine(want, scale, 0, lo, hi);
        if (want.numel() > 100) {
          EXPECT_GT(
              (ref == hi * scale).sum().item<int64_t>() + (ref == lo * scale).sum().item<int64_t>(),
              0)
              << what << ": the case should saturate";
        }
      }
      // the same without a float output (the scratch path)
      at::Tensor s8b = at::empty_like(s8);
      args.outs = {{s8b.data_ptr(), ElemType::kS8, s8_scale}};
      engine::concat_affine_nhwc(args);
      EXPECT_TRUE(at::equal(s8b, s8)) << what;
      // more outputs than the AVX-512 path's single-piece loop takes (its general loop)
      at::Tensor f32c = at::empty_like(f32), s8c = at::empty_like(s8), u8c = at::empty_like(u8),
                 f16c = at::empty_like(f16);
      args.outs = {{s8c.data_ptr(), ElemType::kS8, s8_scale},
                   {f32c.data_ptr(), ElemType::kF32, 1.f},
                   {u8c.data_ptr(), ElemType::kU8, u8_scale},
                   {f16c.data_ptr(), ElemType::kF16, 1.f}};
      engine::concat_affine_nhwc(args);
      EXPECT_TRUE(at::equal(f32c, f32) && at::equal(s8c, s8) && at::equal(u8c, u8) &&
                  at::equal(f16c, f16))
          << what;
    }
  unsetenv("SEGSLIM_NO_AVX512");
  EXPECT_THROW(engine::ConcatAffineCoefficients({1.f}, {0.f}, {}, {0.1f, ElemType::kF32}), Error);
  EXPECT_THROW(engine::ConcatAffineCoefficients({1.f}, {0.f}, {}, {-0.1f, ElemType::kS8}), Error);
}

// ESPNet's fused block (dilated_branches.h) against ATen: each branch a float conv2d of the
// int8 codes (exact: the sums stay below 2^24), times alpha plus beta, the hierarchical sums,
// the concatenation, then the residual, affine and PRelu of the tail; float and int8 outputs.
// Widths that leave part of a 16-pixel block, narrower maps than a block, dilations larger than
// the map, input channels not a multiple of 4 (1 to 3 past the last whole group, packed over
// the taps; fewer than 4 in all), branches of up to 64 channels (several accumulator runs), s8
// and u8 codes.
TEST(EngineOps, DilatedBranchesKernelMatchesAten) {
  if (!engine::dilated_branches_supported()) GTEST_SKIP() << "this CPU has no AVX-512 VNNI";
  at::manual_seed(31);
  using engine::ElemType;
  struct Branch {
    int64_t o, dilation;
    bool add_previous;
  };
  struct Case {
    std::vector<int64_t> nhwc;
    ElemType src;
    std::vector<Branch> branches;
    ElemType residual;  // kF32 / kS8, or kU8 = no residual
    bool prelu;
    ElemType concat_quant = ElemType::kF32;  // kS8 / kU8: the concatenation quantized
  };
  const std::vector<Case> cases{
      {{1, 6, 21, 12},  // level 2 with its residual sum quantized: s8 concatenation, s8 residual
       ElemType::kS8,
       {{16, 1, false}, {12, 2, false}, {12, 4, true}, {12, 8, true}, {12, 16, true}},
       ElemType::kS8,
       true,
       ElemType::kS8},
      {{2, 7, 19, 12},  // ESPNet's level 2 widths
       ElemType::kS8,
       {{16, 1, false}, {12, 2, false}, {12, 4, true}, {12, 8, true}, {12, 16, true}},
       ElemType::kF32,
       true},
      {{1, 9, 33, 25},  // level 3's: 28 and 25 channels, two accumulator runs each
       ElemType::kU8,
       {{28, 1, false}, {25, 2, false}, {25, 4, true}, {25, 8, true}, {25, 16, true}},
       ElemType::kS8,
       true},
      {{1, 3, 5, 7}, ElemType::kS8, {{64, 1, false}, {64, 3, true}}, ElemType::kU8, false},
      {{1, 8, 23, 26},  // a float16 residual (EngineOptions::half_links); 2 packed channels
       ElemType::kS8,
       {{16, 1, false}, {12, 2, false}, {12, 4, true}, {12, 8, true}, {12, 16, true}},
       ElemType::kF16,
       true},
      {{1, 1, 1, 1}, ElemType::kU8, {{1, 1, false}, {3, 2, false}}, ElemType::kU8, false},
      {{1, 4, 18, 2}, ElemType::kS8, {{5, 1, false}, {3, 3, false}}, ElemType::kU8, false},
      {{1, 10, 17, 25},  // level 3's input width from s8 codes: one channel packed over the taps
       ElemType::kS8,
       {{14, 1, false}, {11, 2, false}, {11, 8, true}},
       ElemType::kF32,
       true}};
  auto floats = [](const at::Tensor& t) {
    const at::Tensor c = t.contiguous();
    return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  };
  for (const auto& c : cases) {
    const int64_t N = c.nhwc[0], H = c.nhwc[1], W = c.nhwc[2], C = c.nhwc[3];
    const at::Tensor codes = c.src == ElemType::kS8
                                 ? at::randint(-128, 128, {N, H, W, C}).to(at::kChar)
                                 : at::randint(0, 256, {N, H, W, C}).to(at::kByte);
    const at::Tensor x = codes.to(at::kFloat).permute({0, 3, 1, 2});
    std::vector<engine::DilatedBranch> branches;
    std::vector<at::Tensor> pieces;
    for (const auto& b : c.branches) {
      const at::Tensor w = at::randint(-128, 128, {b.o, C, 3, 3}).to(at::kChar);
      const at::Tensor alpha = (at::rand({b.o}) + 0.5) * 1e-4, beta = at::randn({b.o}) * 0.1;
      at::Tensor piece = at::conv2d(x, w.to(at::kFloat), {}, 1, b.dilation, b.dilation) *
                             alpha.view({1, b.o, 1, 1}) +
                         beta.view({1, b.o, 1, 1});
      if (b.add_previous) piece = piece + pieces.back();
      pieces.push_back(piece);
      engine::DilatedBranch d;
      d.out_channels = b.o;
      d.dilation = b.dilation;
      d.weights.assign(w.data_ptr<int8_t>(), w.data_ptr<int8_t>() + w.numel());
      d.alpha = floats(alpha);
      d.beta = floats(beta);
      d.add_previous = b.add_previous;
      branches.push_back(d);
    }
    at::Tensor want = at::cat(pieces, 1);
    const int64_t Ct = want.size(1);
    engine::ConcatQuant concat_quant;
    if (c.concat_quant != ElemType::kF32) {
      const bool u8 = c.concat_quant == ElemType::kU8;
      concat_quant = {want.abs().max().item<float>() / 100, c.concat_quant};  // saturates a few
      want = at::fake_quantize_per_tensor_affine(want, concat_quant.scale, 0, u8 ? 0 : -128,
                                                 u8 ? 255 : 127);
    }
    engine::AffineInput residual;
    at::Tensor stored_residual;
    if (c.residual != ElemType::kU8) {
      const float rs = 0.02f;
      stored_residual = c.residual == ElemType::kF32 ? at::randn({N, H, W, Ct})
                        : c.residual == ElemType::kF16
                            ? at::randn({N, H, W, Ct}).to(at::kHalf)
                            : at::randint(-128, 128, {N, H, W, Ct}).to(at::kChar);
      residual = {stored_residual.data_ptr(), c.residual, rs, Ct};
      want = want + (c.residual == ElemType::kS8 ? stored_residual.to(at::kFloat) * rs
                                                 : stored_residual.to(at::kFloat))
                        .permute({0, 3, 1, 2});
    }
    const at::Tensor a = at::rand({Ct}) + 0.5, b = at::randn({Ct}), slope = at::rand({Ct}) * 0.3;
    want = want * a.view({1, Ct, 1, 1}) + b.view({1, Ct, 1, 1});
    if (c.prelu) want = at::where(want >= 0, want, want * slope.view({1, Ct, 1, 1}));
    engine::DilatedBranches kernel({N, H, W, C, c.src}, branches, floats(a), floats(b),
                                   c.prelu ? floats(slope) : std::vector<float>(), concat_quant);
    ASSERT_EQ(kernel.channels(), Ct);
    const float s8_scale = want.abs().max().item<float>() / 100, u8_scale = s8_scale / 2;
    at::Tensor f32 = at::empty({N, H, W, Ct}), s8 = at::empty({N, H, W, Ct}, at::kChar),
               u8 = at::empty({N, H, W, Ct}, at::kByte), f16 = at::empty({N, H, W, Ct}, at::kHalf);
    // twice: the padded image's border must stay as it was after a run
    for (int run = 0; run < 2; ++run) {
      kernel.run(codes.data_ptr(), residual,
                 {{f32.data_ptr(), ElemType::kF32, 1.f},
                  {s8.data_ptr(), ElemType::kS8, s8_scale},
                  {u8.data_ptr(), ElemType::kU8, u8_scale},
                  {f16.data_ptr(), ElemType::kF16, 1.f}});
      const std::string what = str_cat(N, "x", H, "x", W, "x", C, " -> ", Ct, ", run ", run);
      EXPECT_TRUE(at::equal(f16, f32.to(at::kHalf))) << what;
      const at::Tensor err = (f32.permute({0, 3, 1, 2}) - want).abs();
      if (concat_quant.scale == 0.f) {
        EXPECT_TRUE(at::allclose(f32.permute({0, 3, 1, 2}), want, 1e-5, 1e-5))
            << what << ": max error " << err.max().item<float>();
      } else {
        // float rounding of a piece may move a value across a rounding tie of the
        // concatenation's quantization: one step of it there (times a and the slope), exact
        // elsewhere
        const at::Tensor off = err > 1e-5 + 1e-5 * want.abs();
        EXPECT_LE(off.sum().item<int64_t>(), std::max<int64_t>(1, want.numel() / 1000)) << what;
        EXPECT_LE(err.max().item<float>(), 1.5f * concat_quant.scale * 1.001f + 1e-5f) << what;
      }
      expect_quantized(s8, want, s8_scale, -128, 127, what);
      expect_quantized(u8, want, u8_scale, 0, 255, what);
    }
  }
  // bad arguments name what is wrong
  engine::DilatedBranch bad;
  bad.out_channels = 4;
  bad.weights.assign(4 * 3 * 9 - 1, 0);
  bad.alpha.assign(4, 1.f);
  bad.beta.assign(4, 0.f);
  EXPECT_THROW(engine::DilatedBranches({1, 4, 4, 3, ElemType::kS8}, {bad},
                                       std::vector<float>(4, 1.f), std::vector<float>(4, 0.f), {}),
               Error);
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
