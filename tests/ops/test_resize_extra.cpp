// Resize beyond the conformance cases: every coordinate transformation mode with both scales
// and sizes, nearest modes, rank 3 and 5, against a naive per-pixel implementation of the
// ONNX formulas, plus gradient checks and refusals.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/op_test_util.h"

namespace segslim::testing {
namespace {

// Source coordinate of output index o per the ONNX spec; `width` is scale * in (the
// reference's "output width", which is the output length when sizes are given).
double src_coord(const std::string& mode, int64_t o, int64_t in, double scale, double width) {
  if (mode == "half_pixel") return (o + 0.5) / scale - 0.5;
  if (mode == "pytorch_half_pixel") return width > 1 ? (o + 0.5) / scale - 0.5 : -0.5;
  if (mode == "align_corners") return width == 1 ? 0.0 : o * (in - 1.0) / (width - 1.0);
  return o / scale;  // asymmetric
}

int64_t clampi(int64_t i, int64_t n) { return std::max<int64_t>(0, std::min(i, n - 1)); }

// Per-axis (index, weight) taps for one output index.
std::vector<std::pair<int64_t, double>> taps(const std::string& mode, const std::string& nearest,
                                             bool linear, int64_t o, int64_t in, double scale,
                                             double width) {
  const double x = src_coord(mode, o, in, scale, width);
  const double f = std::floor(x), r = x - f;
  if (linear) return {{clampi(int64_t(f), in), 1 - r}, {clampi(int64_t(f) + 1, in), r}};
  int64_t k = int64_t(f);
  if (r > 0 && ((nearest == "round_prefer_floor" && r > 0.5) ||
                (nearest == "round_prefer_ceil" && r >= 0.5) || nearest == "ceil"))
    ++k;
  return {{clampi(k, in), 1.0}};
}

// Naive resize of a double tensor of any rank (up to 5) by sum over the tap products.
at::Tensor naive_resize(const at::Tensor& x, const std::vector<int64_t>& out,
                        const std::vector<double>& scales, const std::vector<double>& widths,
                        const std::string& mode, const std::string& nearest, bool linear) {
  const int64_t r = x.dim();
  at::Tensor xc = x.contiguous();
  at::Tensor y = at::zeros(out, at::kDouble);
  const double* xp = xc.data_ptr<double>();
  double* yp = y.data_ptr<double>();
  std::vector<int64_t> xstride(r, 1);
  for (int64_t d = r - 2; d >= 0; --d) xstride[d] = xstride[d + 1] * x.size(d + 1);
  std::vector<int64_t> idx(r, 0);
  for (int64_t flat = 0; flat < y.numel(); ++flat) {
    int64_t rem = flat;
    for (int64_t d = r - 1; d >= 0; --d) {
      idx[d] = rem % out[d];
      rem /= out[d];
    }
    std::vector<std::vector<std::pair<int64_t, double>>> t(r);
    for (int64_t d = 0; d < r; ++d)
      t[d] = taps(mode, nearest, linear, idx[d], x.size(d), scales[d], widths[d]);
    // Sum over the cartesian product of the taps.
    std::vector<size_t> pick(r, 0);
    double sum = 0;
    while (true) {
      double w = 1;
      int64_t off = 0;
      for (int64_t d = 0; d < r; ++d) {
        w *= t[d][pick[d]].second;
        off += t[d][pick[d]].first * xstride[d];
      }
      sum += w * xp[off];
      int64_t d = r - 1;
      while (d >= 0 && ++pick[d] == t[d].size()) pick[d--] = 0;
      if (d < 0) break;
    }
    yp[flat] = sum;
  }
  return y;
}

struct Case {
  std::vector<int64_t> shape;
  std::string coord, nearest = "round_prefer_floor";
  bool linear = true;
};

onnx::ModelProto resize_model(const Case& c, bool with_sizes) {
  auto m = one_node_model(
      "Resize", {"X", "", with_sizes ? "" : "scales", with_sizes ? "sizes" : ""}, {"Y"}, 13);
  set_string(m.node, "mode", c.linear ? "linear" : "nearest");
  set_string(m.node, "coordinate_transformation_mode", c.coord);
  set_string(m.node, "nearest_mode", c.nearest);
  return m.model;
}

void check_scales(const Case& c, const std::vector<float>& scales_f) {
  at::manual_seed(5);
  const at::Tensor x = at::randn(c.shape, at::kDouble);
  std::vector<double> scales, widths;
  std::vector<int64_t> out;
  for (size_t d = 0; d < c.shape.size(); ++d) {
    scales.push_back(scales_f[d]);
    widths.push_back(double(scales_f[d]) * c.shape[d]);
    out.push_back(int64_t(std::floor(widths.back())));
  }
  const auto model = resize_model(c, false);
  const TensorMap feeds{{"X", x}, {"scales", at::tensor(scales_f)}};
  SCOPED_TRACE(c.coord + (c.linear ? " linear" : " nearest " + c.nearest) + " scales");
  const at::Tensor expected = naive_resize(x, out, scales, widths, c.coord, c.nearest, c.linear);
  EXPECT_TRUE(all_close(run_first(model, feeds), expected, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(run_first(model, feeds, at::kFloat).to(at::kDouble), expected, 1e-4, 1e-4));
  expect_gradients_match(model, feeds, {"X"}, 6);
}

void check_sizes(const Case& c, const std::vector<int64_t>& sizes) {
  at::manual_seed(6);
  const at::Tensor x = at::randn(c.shape, at::kDouble);
  std::vector<double> scales, widths;
  for (size_t d = 0; d < c.shape.size(); ++d) {
    scales.push_back(double(sizes[d]) / c.shape[d]);
    widths.push_back(double(sizes[d]));
  }
  const auto model = resize_model(c, true);
  const TensorMap feeds{{"X", x}, {"sizes", at::tensor(sizes)}};
  SCOPED_TRACE(c.coord + (c.linear ? " linear" : " nearest " + c.nearest) + " sizes");
  const at::Tensor expected = naive_resize(x, sizes, scales, widths, c.coord, c.nearest, c.linear);
  EXPECT_TRUE(all_close(run_first(model, feeds), expected, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(run_first(model, feeds, at::kFloat).to(at::kDouble), expected, 1e-4, 1e-4));
  expect_gradients_match(model, feeds, {"X"}, 6);
}

const std::vector<std::string> kCoords{"half_pixel", "pytorch_half_pixel", "align_corners",
                                       "asymmetric"};

TEST(ResizeExtra, BilinearAllCoordinateModesWithScales) {
  for (const auto& coord : kCoords) {
    check_scales({{2, 3, 4, 7}, coord}, {1, 1, 1.7f, 0.6f});
    check_scales({{1, 5, 1, 1}, coord}, {1, 1, 3, 2});
    check_scales({{1, 2, 3, 5}, coord}, {1, 1, 0.34f, 2.5f});  // 1-pixel output row
  }
}

TEST(ResizeExtra, BilinearAllCoordinateModesWithSizes) {
  for (const auto& coord : kCoords) {
    check_sizes({{2, 3, 4, 7}, coord}, {2, 3, 9, 3});
    check_sizes({{1, 3, 5, 4}, coord}, {1, 3, 1, 8});
  }
}

TEST(ResizeExtra, LinearRank3And5) {
  for (const auto& coord : kCoords) {
    check_sizes({{2, 3, 5}, coord}, {2, 3, 8});
    check_scales({{1, 2, 3, 4, 2}, coord}, {1, 1, 1.5f, 0.5f, 2});
  }
}

TEST(ResizeExtra, NearestModes) {
  for (const auto& coord : kCoords)
    for (const char* nearest : {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"}) {
      check_scales({{2, 3, 4, 6}, coord, nearest, false}, {1, 1, 1.75f, 0.5f});
      check_sizes({{1, 3, 5, 4}, coord, nearest, false}, {1, 3, 7, 3});
    }
}

TEST(ResizeExtra, RefusesUnsupportedAttributes) {
  const TensorMap feeds{{"X", at::zeros({1, 1, 2, 2})},
                        {"scales", at::tensor({1.f, 1.f, 2.f, 2.f})}};
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"mode", "cubic"},
           {"coordinate_transformation_mode", "tf_crop_and_resize"},
           {"nearest_mode", "round"}}) {
    auto m = one_node_model("Resize", {"X", "", "scales"}, {"Y"}, 13);
    set_string(m.node, name, value);
    try {
      run_first(m.model, feeds);
      ADD_FAILURE() << name << "=" << value << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(value), std::string::npos) << e.what();
    }
  }
  auto m = one_node_model("Resize", {"X", "", "scales"}, {"Y"}, 13);
  set_int(m.node, "exclude_outside", 1);
  EXPECT_THROW(run_first(m.model, feeds), Error);
}

TEST(UpsampleExtra, LinearAsymmetricScalesInput) {
  at::manual_seed(8);
  const at::Tensor x = at::randn({2, 3, 3, 4}, at::kDouble);
  for (const char* mode : {"nearest", "linear"}) {
    auto m = one_node_model("Upsample", {"X", "scales"}, {"Y"}, 9);
    set_string(m.node, "mode", mode);
    const std::vector<float> s{1, 1, 2, 1.5f};
    const bool linear = std::string(mode) == "linear";
    const at::Tensor expected =
        naive_resize(x, {2, 3, 6, 6}, {1, 1, 2, 1.5}, {2, 3, 6, 6}, "asymmetric", "floor", linear);
    EXPECT_TRUE(
        all_close(run_first(m.model, {{"X", x}, {"scales", at::tensor(s)}}), expected, 1e-6, 1e-6))
        << mode;
  }
}

}  // namespace
}  // namespace segslim::testing
