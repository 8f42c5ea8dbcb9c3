// Conv / ConvTranspose beyond the conformance cases (groups, depthwise, dilations, asymmetric
// pads, SAME_LOWER, output_padding), against naive direct loops, plus gradient checks.
#include <gtest/gtest.h>

#include "ops/op_test_util.h"

namespace segslim::testing {
namespace {

struct Conv2dParams {
  std::vector<int64_t> strides{1, 1}, dilations{1, 1}, pads{0, 0, 0, 0};  // pads: t, l, b, r
  int64_t group = 1;
};

// y[n, m, oh, ow] = b[m] + sum_{c, i, j} x[n, g*Cg + c, oh*s - pt + i*d, ow*s - pl + j*d] *
// w[m,c,i,j]
at::Tensor naive_conv2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                        const Conv2dParams& p) {
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  const int64_t M = w.size(0), Cg = w.size(1), KH = w.size(2), KW = w.size(3);
  const int64_t OH =
      (H + p.pads[0] + p.pads[2] - ((KH - 1) * p.dilations[0] + 1)) / p.strides[0] + 1;
  const int64_t OW =
      (W + p.pads[1] + p.pads[3] - ((KW - 1) * p.dilations[1] + 1)) / p.strides[1] + 1;
  at::Tensor y = at::zeros({N, M, OH, OW}, at::kDouble);
  auto xa = x.accessor<double, 4>();
  auto wa = w.accessor<double, 4>();
  auto ya = y.accessor<double, 4>();
  const int64_t Mg = M / p.group;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double s = b.defined() ? b[m].item<double>() : 0.0;
          const int64_t g = m / Mg;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t i = 0; i < KH; ++i)
              for (int64_t j = 0; j < KW; ++j) {
                const int64_t ih = oh * p.strides[0] - p.pads[0] + i * p.dilations[0];
                const int64_t iw = ow * p.strides[1] - p.pads[1] + j * p.dilations[1];
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += xa[n][g * Cg + c][ih][iw] * wa[m][c][i][j];
              }
          ya[n][m][oh][ow] = s;
        }
  return y;
}

onnx::ModelProto conv_model(const Conv2dParams& p, bool with_bias) {
  auto m = one_node_model(
      "Conv",
      with_bias ? std::vector<std::string>{"X", "W", "B"} : std::vector<std::string>{"X", "W"},
      {"Y"});
  set_ints(m.node, "strides", p.strides);
  set_ints(m.node, "dilations", p.dilations);
  set_ints(m.node, "pads", p.pads);
  set_int(m.node, "group", p.group);
  return m.model;
}

void check_conv(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws,
                const Conv2dParams& p, bool with_bias) {
  at::manual_seed(1);
  const at::Tensor x = at::randn(xs, at::kDouble), w = at::randn(ws, at::kDouble);
  const at::Tensor b = with_bias ? at::randn({ws[0]}, at::kDouble) : at::Tensor();
  const auto model = conv_model(p, with_bias);
  TensorMap feeds{{"X", x}, {"W", w}};
  if (with_bias) feeds["B"] = b;
  const at::Tensor expected = naive_conv2d(x, w, b, p);
  EXPECT_TRUE(all_close(run_first(model, feeds), expected, 1e-9, 1e-9));
  EXPECT_TRUE(all_close(run_first(model, feeds, at::kFloat).to(at::kDouble), expected, 1e-4, 1e-4));
  expect_gradients_match(
      model, feeds,
      with_bias ? std::vector<std::string>{"X", "W", "B"} : std::vector<std::string>{"X", "W"});
}

TEST(ConvExtra, GroupsDilationsAsymmetricPads) {
  Conv2dParams p;
  p.strides = {2, 1};
  p.dilations = {2, 1};
  p.pads = {1, 0, 2, 1};
  p.group = 2;
  check_conv({2, 6, 7, 9}, {4, 3, 3, 2}, p, true);
}

TEST(ConvExtra, DepthwiseOnOneByOne) {
  Conv2dParams p;
  p.pads = {1, 1, 1, 1};
  p.group = 5;
  check_conv({1, 5, 1, 1}, {5, 1, 3, 3}, p, false);
}

TEST(ConvExtra, DepthwiseMultiplierOddChannels) {
  Conv2dParams p;
  p.strides = {2, 2};
  p.pads = {0, 1, 1, 0};
  p.group = 3;
  check_conv({2, 3, 6, 5}, {6, 1, 3, 3}, p, true);
}

TEST(ConvExtra, SameLowerMatchesExplicitPads) {
  at::manual_seed(2);
  const at::Tensor x = at::randn({1, 3, 5, 6}, at::kDouble),
                   w = at::randn({2, 3, 4, 3}, at::kDouble);
  auto m = one_node_model("Conv", {"X", "W"}, {"Y"});
  set_string(m.node, "auto_pad", "SAME_LOWER");
  set_ints(m.node, "strides", {2, 2});
  // out = ceil(in / 2) = 3, 3; total pads: (3-1)*2 + 4 - 5 = 3 and (3-1)*2 + 3 - 6 = 1, the
  // odd one at the beginning for SAME_LOWER.
  Conv2dParams p;
  p.strides = {2, 2};
  p.pads = {2, 1, 1, 0};
  EXPECT_TRUE(
      all_close(run_first(m.model, {{"X", x}, {"W", w}}), naive_conv2d(x, w, {}, p), 1e-9, 1e-9));
}

// Transposed conv: every x[n, ci, ih, iw] scatters x * w[ci, oc, i, j] into the full output at
// (ih*s + i*d, iw*s + j*d); the ONNX output is the full one cropped by pads[begin] at the start
// and extended (zeros) or cropped at the end, plus the bias everywhere.
at::Tensor naive_conv_transpose2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                                  const std::vector<int64_t>& s, const std::vector<int64_t>& d,
                                  const std::vector<int64_t>& pads,
                                  const std::vector<int64_t>& out_pad, int64_t group) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Cg = C / group, Og = w.size(1), KH = w.size(2), KW = w.size(3);
  const int64_t OH = s[0] * (H - 1) + out_pad[0] + (KH - 1) * d[0] + 1 - pads[0] - pads[2];
  const int64_t OW = s[1] * (W - 1) + out_pad[1] + (KW - 1) * d[1] + 1 - pads[1] - pads[3];
  at::Tensor y = at::zeros({N, Og * group, OH, OW}, at::kDouble);
  auto xa = x.accessor<double, 4>();
  auto wa = w.accessor<double, 4>();
  auto ya = y.accessor<double, 4>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ci = 0; ci < C; ++ci)
      for (int64_t ih = 0; ih < H; ++ih)
        for (int64_t iw = 0; iw < W; ++iw)
          for (int64_t oc = 0; oc < Og; ++oc)
            for (int64_t i = 0; i < KH; ++i)
              for (int64_t j = 0; j < KW; ++j) {
                const int64_t oh = ih * s[0] + i * d[0] - pads[0];
                const int64_t ow = iw * s[1] + j * d[1] - pads[1];
                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                ya[n][(ci / Cg) * Og + oc][oh][ow] += xa[n][ci][ih][iw] * wa[ci][oc][i][j];
              }
  if (b.defined()) y += b.reshape({1, -1, 1, 1});
  return y;
}

void check_conv_transpose(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws,
                          const std::vector<int64_t>& s, const std::vector<int64_t>& d,
                          const std::vector<int64_t>& pads, const std::vector<int64_t>& out_pad,
                          int64_t group) {
  at::manual_seed(3);
  const at::Tensor x = at::randn(xs, at::kDouble), w = at::randn(ws, at::kDouble);
  const at::Tensor b = at::randn({ws[1] * group}, at::kDouble);
  auto m = one_node_model("ConvTranspose", {"X", "W", "B"}, {"Y"});
  set_ints(m.node, "strides", s);
  set_ints(m.node, "dilations", d);
  set_ints(m.node, "pads", pads);
  set_ints(m.node, "output_padding", out_pad);
  set_int(m.node, "group", group);
  const TensorMap feeds{{"X", x}, {"W", w}, {"B", b}};
  EXPECT_TRUE(all_close(run_first(m.model, feeds),
                        naive_conv_transpose2d(x, w, b, s, d, pads, out_pad, group), 1e-9, 1e-9));
  expect_gradients_match(m.model, feeds, {"X", "W", "B"});
}

TEST(ConvTransposeExtra, GroupsOutputPaddingAsymmetricPads) {
  check_conv_transpose({2, 4, 3, 4}, {4, 3, 3, 2}, {2, 3}, {1, 2}, {1, 0, 0, 1}, {1, 2}, 2);
}

TEST(ConvTransposeExtra, SymmetricPadsOutputPadding) {
  check_conv_transpose({1, 3, 1, 1}, {3, 5, 3, 3}, {2, 2}, {1, 1}, {1, 1, 1, 1}, {1, 1}, 1);
}

TEST(ConvTransposeExtra, DepthwiseOutputPaddingLargerThanPads) {
  check_conv_transpose({2, 3, 4, 3}, {3, 1, 2, 2}, {2, 2}, {1, 1}, {0, 0, 0, 0}, {1, 0}, 3);
}

TEST(ConvExtra, UnsupportedAutoPadIsRefused) {
  auto m = one_node_model("Conv", {"X", "W"}, {"Y"});
  set_string(m.node, "auto_pad", "SAME");
  EXPECT_THROW(run_first(m.model, {{"X", at::zeros({1, 1, 3, 3})}, {"W", at::zeros({1, 1, 1, 1})}}),
               Error);
}

}  // namespace
}  // namespace segslim::testing
