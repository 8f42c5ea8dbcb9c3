// Resize (opsets 10-17) and Upsample (opsets 7-9).
//
// Implemented exactly as the ONNX reference (onnx/backend/test/case/node/resize.py): each
// resized axis is interpolated separately. For output index o, the source coordinate x is
// given by the coordinate transformation mode; nearest picks floor(x) or floor(x) + 1 by
// nearest_mode, linear mixes floor(x) and floor(x) + 1 with weights 1 - r and r
// (r = x - floor(x)), indices clamped to the axis (the reference pads with edge values).
// Indices and weights are computed on the host (they depend only on shapes and scales);
// the data path is index_select and multiply-add, so it is differentiable and runs on the
// input's device.
#include <cmath>

#include "common/error.h"
#include "common/strings.h"
#include "ops/registry.h"

namespace segslim::ops {
namespace {

struct ResizeMode {
  bool linear = false;
  std::string coord = "half_pixel";
  std::string nearest = "round_prefer_floor";
};

// One axis: output length and the scale the coordinate transform divides by. The reference
// uses scale * in as the "output width" (not the rounded output length) in align_corners and
// pytorch_half_pixel; with `sizes`, scale = out / in, so that width is out.
struct AxisSpec {
  int64_t in, out;
  double scale, width;
};

double source_coordinate(const ResizeMode& m, const AxisSpec& a, int64_t o) {
  const double x = static_cast<double>(o);
  if (m.coord == "half_pixel") return (x + 0.5) / a.scale - 0.5;
  if (m.coord == "pytorch_half_pixel") return a.width == 1.0 ? -0.5 : (x + 0.5) / a.scale - 0.5;
  if (m.coord == "align_corners")
    return a.width == 1.0 ? 0.0 : x * static_cast<double>(a.in - 1) / (a.width - 1.0);
  if (m.coord == "asymmetric") return x / a.scale;
  return (x + 0.5) / a.scale;  // tf_half_pixel_for_nn
}

at::Tensor resize_axis(const at::Tensor& x, int64_t axis, const ResizeMode& m, const AxisSpec& a) {
  std::vector<int64_t> i0(a.out), i1(a.out);
  std::vector<double> w0(a.out, 1.0), w1(a.out, 0.0);
  auto clamp = [&](int64_t i) { return std::min<int64_t>(std::max<int64_t>(i, 0), a.in - 1); };
  bool identity = a.out == a.in, single = true;
  for (int64_t o = 0; o < a.out; ++o) {
    const double src = source_coordinate(m, a, o);
    const double f = std::floor(src);
    const double r = src - f;
    const int64_t fi = static_cast<int64_t>(f);
    if (m.linear) {
      i0[o] = clamp(fi);
      i1[o] = clamp(fi + 1);
      w0[o] = 1.0 - r;
      w1[o] = r;
      if (r != 0.0 && i0[o] != i1[o]) single = false;
    } else {
      bool up = false;  // floor(x) + 1 instead of floor(x)
      if (r != 0.0) {
        if (m.nearest == "round_prefer_floor")
          up = r > 0.5;
        else if (m.nearest == "round_prefer_ceil")
          up = r >= 0.5;
        else if (m.nearest == "ceil")
          up = true;
      }
      i0[o] = clamp(up ? fi + 1 : fi);
    }
    identity = identity && i0[o] == o;
  }
  if (identity && single) return x;
  const auto long_opts = at::TensorOptions().dtype(at::kLong);
  auto index = [&](const std::vector<int64_t>& v) {
    return at::tensor(v, long_opts).to(x.device());
  };
  const at::Tensor g0 = x.index_select(axis, index(i0));
  if (single) return g0;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[axis] = a.out;
  auto weight = [&](const std::vector<double>& v) {
    return at::tensor(v, at::TensorOptions().dtype(at::kDouble))
        .to(x.device(), x.scalar_type())
        .reshape(shape);
  };
  return g0 * weight(w0) + x.index_select(axis, index(i1)) * weight(w1);
}

// Bilinear resizes of the two last axes of a 4-D tensor that PyTorch computes identically
// (it uses 1 / scale when given a scale, and clamps negative source coordinates to 0, which
// is what the reference's edge padding does).
bool bilinear_native_ok(const ResizeMode& m, const std::vector<AxisSpec>& axes) {
  if (!m.linear || axes.size() != 4) return false;
  for (int i = 0; i < 2; ++i)
    if (axes[i].out != axes[i].in) return false;
  for (int i = 2; i < 4; ++i) {
    const AxisSpec& a = axes[i];
    if (m.coord == "half_pixel") continue;
    if (m.coord == "pytorch_half_pixel" && a.out > 1) continue;
    if (m.coord == "align_corners" && a.out > 1 && a.width == static_cast<double>(a.out)) continue;
    return false;
  }
  return true;
}

at::Tensor resize(const NodeContext& ctx, const at::Tensor& x, const ResizeMode& m,
                  const std::vector<AxisSpec>& axes) {
  // Interpolation weights are fractions: an integer tensor would truncate them to 0 or 1.
  if (m.linear && !at::isFloatingType(x.scalar_type()))
    ctx.fail(str_cat("linear interpolation of a ", c10::toString(x.scalar_type()),
                     " tensor is not supported (valid: floating-point inputs, or mode nearest)"));
  if (bilinear_native_ok(m, axes)) {
    const bool align = m.coord == "align_corners";
    return at::upsample_bilinear2d(x, {axes[2].out, axes[3].out}, align,
                                   align ? c10::optional<double>() : axes[2].scale,
                                   align ? c10::optional<double>() : axes[3].scale);
  }
  at::Tensor y = x;
  for (size_t i = 0; i < axes.size(); ++i) y = resize_axis(y, static_cast<int64_t>(i), m, axes[i]);
  return y;
}

std::vector<AxisSpec> axes_from_scales(const NodeContext& ctx, const at::Tensor& x,
                                       const std::vector<double>& scales) {
  if (static_cast<int64_t>(scales.size()) != x.dim())
    ctx.fail(str_cat("scales has ", scales.size(), " values for a rank-", x.dim(), " input"));
  std::vector<AxisSpec> axes;
  for (int64_t i = 0; i < x.dim(); ++i) {
    if (!(scales[i] > 0)) ctx.fail(str_cat("scale ", scales[i], " is not positive"));
    const double width = scales[i] * static_cast<double>(x.size(i));
    axes.push_back({x.size(i), static_cast<int64_t>(std::floor(width)), scales[i], width});
  }
  return axes;
}

std::vector<AxisSpec> axes_from_sizes(const NodeContext& ctx, const at::Tensor& x,
                                      const std::vector<int64_t>& sizes) {
  if (static_cast<int64_t>(sizes.size()) != x.dim())
    ctx.fail(str_cat("sizes has ", sizes.size(), " values for a rank-", x.dim(), " input"));
  std::vector<AxisSpec> axes;
  for (int64_t i = 0; i < x.dim(); ++i) {
    if (sizes[i] <= 0) ctx.fail(str_cat("size ", sizes[i], " is not positive"));
    axes.push_back({x.size(i), sizes[i],
                    static_cast<double>(sizes[i]) / static_cast<double>(x.size(i)),
                    static_cast<double>(sizes[i])});
  }
  return axes;
}

std::vector<double> to_double_vector(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU).to(at::kDouble).contiguous().reshape({-1});
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

std::string checked(const NodeContext& ctx, const std::string& name, const std::string& value,
                    const std::vector<std::string>& valid) {
  if (std::find(valid.begin(), valid.end(), value) != valid.end()) return value;
  ctx.fail(str_cat(name, " '", value, "' is not supported (valid: ", join(valid), ")"));
}

Tensors resize_op(const NodeContext& ctx, const Tensors& in) {
  if (!has_input(in, 0)) ctx.fail("input X is required");
  const at::Tensor& x = in[0];
  ResizeMode m;
  m.linear =
      checked(ctx, "mode", ctx.attr_string("mode", "nearest"), {"nearest", "linear"}) == "linear";
  if (ctx.opset() < 11) {
    // Resize-10 is Upsample: asymmetric coordinates, nearest rounds down.
    m.coord = "asymmetric";
    m.nearest = "floor";
    if (!has_input(in, 1)) ctx.fail("input scales is required");
    return {resize(ctx, x, m, axes_from_scales(ctx, x, to_double_vector(in[1])))};
  }
  m.coord = checked(
      ctx, "coordinate_transformation_mode",
      ctx.attr_string("coordinate_transformation_mode", "half_pixel"),
      {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"});
  m.nearest = checked(ctx, "nearest_mode", ctx.attr_string("nearest_mode", "round_prefer_floor"),
                      {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"});
  const int64_t exclude_outside = ctx.attr_int("exclude_outside", 0);
  if (exclude_outside != 0)
    ctx.fail(str_cat("exclude_outside '", exclude_outside, "' is not supported (valid: 0)"));
  const int64_t antialias = ctx.attr_int("antialias", 0);
  if (antialias != 0) ctx.fail(str_cat("antialias '", antialias, "' is not supported (valid: 0)"));
  if (ctx.has_attr("axes")) ctx.fail("attribute 'axes' is not supported (valid: all axes)");
  checked(ctx, "keep_aspect_ratio_policy", ctx.attr_string("keep_aspect_ratio_policy", "stretch"),
          {"stretch"});
  if (has_input(in, 3) && in[3].numel() > 0)
    return {resize(ctx, x, m, axes_from_sizes(ctx, x, to_int_vector(in[3])))};
  if (has_input(in, 2) && in[2].numel() > 0)
    return {resize(ctx, x, m, axes_from_scales(ctx, x, to_double_vector(in[2])))};
  ctx.fail("one of the inputs scales and sizes must be given");
}

Tensors upsample_op(const NodeContext& ctx, const Tensors& in) {
  if (!has_input(in, 0)) ctx.fail("input X is required");
  const at::Tensor& x = in[0];
  ResizeMode m;
  // Upsample-7 and -9: asymmetric coordinates, nearest rounds down ("bilinear" is Upsample-1's
  // name for linear).
  m.linear = checked(ctx, "mode", ctx.attr_string("mode", "nearest"),
                     {"nearest", "linear", "bilinear"}) != "nearest";
  m.coord = "asymmetric";
  m.nearest = "floor";
  std::vector<double> scales;
  if (has_input(in, 1)) {
    scales = to_double_vector(in[1]);
  } else {
    if (!ctx.has_attr("scales")) ctx.fail("the scales input (or attribute) is required");
    for (float s : ctx.attr_floats("scales")) scales.push_back(s);
  }
  return {resize(ctx, x, m, axes_from_scales(ctx, x, scales))};
}

}  // namespace

void register_resize_ops(Registry& r) {
  r.add("Resize", {resize_op});
  r.add("Upsample", {upsample_op});
}

}  // namespace segslim::ops
