// MaxPool / AveragePool beyond the conformance cases: asymmetric pads with ceil_mode,
// count_include_pad, dilations, odd shapes, against a naive loop implementing the ONNX
// semantics (explicit pads count only with count_include_pad=1; the ceil-mode overhang past
// the padded input never counts).
#include <gtest/gtest.h>

#include <limits>

#include "ops/op_test_util.h"

namespace segslim::testing {
namespace {

struct PoolParams {
  std::vector<int64_t> kernel, strides{1, 1}, dilations{1, 1}, pads{0, 0, 0, 0};  // t, l, b, r
  bool ceil = false, count_include_pad = false;
};

at::Tensor naive_pool2d(const at::Tensor& x, const PoolParams& p, bool max) {
  const int64_t N = x.size(0), C = x.size(1), in[2] = {x.size(2), x.size(3)};
  int64_t out[2];
  for (int d = 0; d < 2; ++d) {
    const int64_t span =
        in[d] + p.pads[d] + p.pads[d + 2] - ((p.kernel[d] - 1) * p.dilations[d] + 1);
    out[d] = (p.ceil ? (span + p.strides[d] - 1) / p.strides[d] : span / p.strides[d]) + 1;
    if (p.ceil && (out[d] - 1) * p.strides[d] >= in[d] + p.pads[d]) --out[d];
  }
  at::Tensor y = at::zeros({N, C, out[0], out[1]}, at::kDouble);
  auto xa = x.accessor<double, 4>();
  auto ya = y.accessor<double, 4>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t oh = 0; oh < out[0]; ++oh)
        for (int64_t ow = 0; ow < out[1]; ++ow) {
          double best = -std::numeric_limits<double>::infinity(), sum = 0, count = 0;
          for (int64_t i = 0; i < p.kernel[0]; ++i)
            for (int64_t j = 0; j < p.kernel[1]; ++j) {
              const int64_t h = oh * p.strides[0] - p.pads[0] + i * p.dilations[0];
              const int64_t w = ow * p.strides[1] - p.pads[1] + j * p.dilations[1];
              if (h >= 0 && h < in[0] && w >= 0 && w < in[1]) {
                best = std::max(best, xa[n][c][h][w]);
                sum += xa[n][c][h][w];
                ++count;
              } else if (p.count_include_pad && h >= -p.pads[0] && h < in[0] + p.pads[2] &&
                         w >= -p.pads[1] && w < in[1] + p.pads[3]) {
                ++count;  // explicit padding, counted as a zero
              }
            }
          ya[n][c][oh][ow] = max ? best : sum / count;
        }
  return y;
}

void check_pool(const std::vector<int64_t>& shape, const PoolParams& p, bool max) {
  at::manual_seed(11);
  const at::Tensor x = at::randn(shape, at::kDouble);
  auto m = one_node_model(max ? "MaxPool" : "AveragePool", {"X"}, {"Y"});
  set_ints(m.node, "kernel_shape", p.kernel);
  set_ints(m.node, "strides", p.strides);
  set_ints(m.node, "pads", p.pads);
  set_int(m.node, "ceil_mode", p.ceil);
  if (max)
    set_ints(m.node, "dilations", p.dilations);
  else
    set_int(m.node, "count_include_pad", p.count_include_pad);
  const TensorMap feeds{{"X", x}};
  EXPECT_TRUE(all_close(run_first(m.model, feeds), naive_pool2d(x, p, max), 1e-9, 1e-9));
  expect_gradients_match(m.model, feeds, {"X"}, 8);
}

TEST(PoolExtra, AverageAsymmetricPadsCeil) {
  for (bool include : {false, true}) {
    PoolParams p;
    p.kernel = {3, 2};
    p.strides = {2, 2};
    p.pads = {1, 0, 2, 1};
    p.ceil = true;
    p.count_include_pad = include;
    check_pool({2, 3, 6, 7}, p, false);
  }
}

TEST(PoolExtra, AverageSymmetricNativePath) {
  for (bool include : {false, true}) {
    PoolParams p;
    p.kernel = {3, 3};
    p.pads = {1, 1, 1, 1};
    p.count_include_pad = include;
    check_pool({1, 5, 1, 1}, p, false);
    check_pool({2, 3, 5, 4}, p, false);
  }
}

TEST(PoolExtra, MaxAsymmetricPadsDilationsCeil) {
  PoolParams p;
  p.kernel = {2, 3};
  p.strides = {2, 3};
  p.dilations = {2, 1};
  p.pads = {0, 2, 1, 0};
  p.ceil = true;
  check_pool({2, 3, 7, 8}, p, true);
  // Native path (symmetric pads within kernel / 2); no window may lie wholly in padding.
  p.ceil = false;
  p.dilations = {1, 1};
  p.strides = {1, 1};
  p.pads = {1, 1, 1, 1};
  check_pool({1, 5, 1, 1}, p, true);
}

// A dilated window that sees only padding: ONNX gives -inf there; the kernel must not take
// ATen's native path (which would scatter gradients to index -1).
TEST(PoolExtra, MaxDilatedWindowInPaddingOnly) {
  at::manual_seed(12);
  const at::Tensor x = at::randn({1, 2, 1, 1}, at::kDouble).requires_grad_(true);
  auto m = one_node_model("MaxPool", {"X"}, {"Y"});
  set_ints(m.node, "kernel_shape", {2, 1});
  set_ints(m.node, "dilations", {2, 1});
  set_ints(m.node, "pads", {1, 0, 1, 0});
  ExecutorOptions opts;
  opts.float_type = at::kDouble;
  Executor exec(m.model, opts);
  const at::Tensor y = exec.run({{"X", x}}).at("Y");
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, 2, 1, 1}));
  EXPECT_TRUE(at::isinf(y).all().item<bool>());
  // The window holds no input element, so no gradient may reach X (and nothing may be
  // scattered out of bounds on the way).
  y.masked_fill(at::isinf(y), 0.0).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().abs().sum().item<double>(), 0.0);
}

TEST(PoolExtra, MaxPoolIndicesOutputIsRefused) {
  auto m = one_node_model("MaxPool", {"X"}, {"Y", "I"});
  set_ints(m.node, "kernel_shape", {2, 2});
  EXPECT_THROW(run_first(m.model, {{"X", at::zeros({1, 1, 4, 4})}}), Error);
}

}  // namespace
}  // namespace segslim::testing
