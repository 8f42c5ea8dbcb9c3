// MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.
//
// ONNX and PyTorch disagree on two points, so the kernels pad explicitly unless the native
// ATen call is known to agree:
//  - PyTorch pads symmetrically and only up to kernel/2; ONNX pads may be asymmetric.
//  - With ceil_mode, ONNX's output length is ceil((in + pads - k_eff) / s) + 1, while PyTorch
//    also drops a last window that would start inside the right padding. ONNX windows that
//    run past the padded input (ceil overhang) see no elements there.
#include <limits>

#include "common/error.h"
#include "ops/registry.h"

namespace segslim::ops {
namespace {

struct PoolGeometry {
  std::vector<int64_t> kernel, strides, dilations, pad_begin, pad_end;
  std::vector<int64_t> out;  // output spatial lengths
  // Extra end padding so that every output window lies inside the padded tensor (ceil mode).
  std::vector<int64_t> overhang;
  bool ceil_mode = false;
};

PoolGeometry pool_geometry(const NodeContext& ctx, const at::Tensor& x, bool has_dilations) {
  if (x.dim() < 3 || x.dim() > 5)
    ctx.fail(str_cat("input rank ", x.dim(), " is not supported (valid: 3, 4, 5)"));
  const size_t n = static_cast<size_t>(x.dim() - 2);
  PoolGeometry g;
  if (!ctx.has_attr("kernel_shape")) ctx.fail("required attribute 'kernel_shape' is missing");
  g.kernel = spatial_attr(ctx, "kernel_shape", n, 1);
  g.strides = spatial_attr(ctx, "strides", n, 1);
  g.dilations = has_dilations ? spatial_attr(ctx, "dilations", n, 1) : std::vector<int64_t>(n, 1);
  g.ceil_mode = ctx.attr_int("ceil_mode", 0) != 0;
  g.pad_begin.assign(n, 0);
  g.pad_end.assign(n, 0);
  g.out.assign(n, 0);
  g.overhang.assign(n, 0);
  const std::string auto_pad = ctx.attr_string("auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER" &&
      auto_pad != "VALID")
    ctx.fail("auto_pad '" + auto_pad +
             "' is not supported (valid: NOTSET, SAME_UPPER, SAME_LOWER, VALID)");
  const auto pads =
      auto_pad == "NOTSET" ? spatial_attr(ctx, "pads", 2 * n, 0) : std::vector<int64_t>(2 * n, 0);
  for (size_t i = 0; i < n; ++i) {
    const int64_t in = x.size(i + 2), s = g.strides[i];
    const int64_t k_eff = (g.kernel[i] - 1) * g.dilations[i] + 1;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      // out = ceil(in / s); the odd pad goes last for SAME_UPPER, first for SAME_LOWER.
      g.out[i] = (in + s - 1) / s;
      const int64_t total = std::max<int64_t>(0, (g.out[i] - 1) * s + k_eff - in);
      g.pad_begin[i] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      g.pad_end[i] = total - g.pad_begin[i];
    } else {
      g.pad_begin[i] = pads[i];
      g.pad_end[i] = pads[i + n];
      const int64_t span = in + g.pad_begin[i] + g.pad_end[i] - k_eff;
      if (span < 0)
        ctx.fail(str_cat("kernel extent ", k_eff, " exceeds the padded input length ",
                         in + g.pad_begin[i] + g.pad_end[i], " on spatial axis ", i));
      g.out[i] = (g.ceil_mode ? (span + s - 1) / s : span / s) + 1;
      // A ceil-mode window that would start inside the end padding sees no input at all:
      // PyTorch and ONNX Runtime drop it, and so do we.
      if (g.ceil_mode && (g.out[i] - 1) * s >= in + g.pad_begin[i]) --g.out[i];
    }
    const int64_t needed = (g.out[i] - 1) * s + k_eff;
    g.overhang[i] = std::max<int64_t>(0, needed - (in + g.pad_begin[i] + g.pad_end[i]));
  }
  return g;
}

// (begin, end) pairs from the last axis, as at::constant_pad_nd wants them.
std::vector<int64_t> aten_pad_list(const PoolGeometry& g, bool with_pads, bool with_overhang) {
  std::vector<int64_t> p;
  for (size_t i = g.kernel.size(); i-- > 0;) {
    p.push_back(with_pads ? g.pad_begin[i] : 0);
    p.push_back((with_pads ? g.pad_end[i] : 0) + (with_overhang ? g.overhang[i] : 0));
  }
  return p;
}

// True when ATen's own symmetric padding (limited to kernel/2) gives the ONNX result.
bool native_padding_ok(const PoolGeometry& g) {
  for (size_t i = 0; i < g.kernel.size(); ++i)
    if (g.pad_begin[i] != g.pad_end[i] || g.pad_begin[i] > g.kernel[i] / 2 || g.overhang[i] != 0)
      return false;
  return !g.ceil_mode;
}

Tensors max_pool(const NodeContext& ctx, const Tensors& in) {
  if (!has_input(in, 0)) ctx.fail("input X is required");
  if (ctx.node().output_size() > 1 && !ctx.node().output(1).empty())
    ctx.fail("the Indices output is not supported (valid: the Y output only)");
  const int64_t storage_order = ctx.attr_int("storage_order", 0);
  if (storage_order != 0 && storage_order != 1)
    ctx.fail(str_cat("storage_order '", storage_order, "' is not supported (valid: 0, 1)"));
  at::Tensor x = in[0];
  const PoolGeometry g = pool_geometry(ctx, x, true);
  // ATen's pooling kernels are floating-point only; integer inputs (uint8, int8, int32, int64)
  // are pooled exactly in double and cast back.
  const at::ScalarType type = x.scalar_type();
  const bool integral = !at::isFloatingType(type);
  if (integral) x = x.to(at::kDouble);
  // With dilation, a window may hold padding only; ATen's max pool then records index -1 and
  // its backward writes out of bounds, so dilated padded pools take the explicit path.
  bool native = native_padding_ok(g);
  for (size_t i = 0; i < g.kernel.size(); ++i)
    native = native && (g.dilations[i] == 1 || g.pad_begin[i] == 0);
  std::vector<int64_t> padding = g.pad_begin;
  if (!native) {
    // -inf never wins a max, so padded and overhang positions are ignored as ONNX requires.
    x = at::constant_pad_nd(x, aten_pad_list(g, true, true),
                            -std::numeric_limits<double>::infinity());
    padding.assign(padding.size(), 0);
  }
  at::Tensor y;
  switch (x.dim()) {
    case 3:
      y = at::max_pool1d(x, g.kernel, g.strides, padding, g.dilations, false);
      break;
    case 4:
      y = at::max_pool2d(x, g.kernel, g.strides, padding, g.dilations, false);
      break;
    default:
      y = at::max_pool3d(x, g.kernel, g.strides, padding, g.dilations, false);
  }
  return {integral ? y.to(type) : y};
}

at::Tensor avg_pool_native(const at::Tensor& x, const PoolGeometry& g,
                           const std::vector<int64_t>& padding, bool count_include_pad) {
  switch (x.dim()) {
    case 3:
      return at::avg_pool1d(x, g.kernel, g.strides, padding, false, count_include_pad);
    case 4:
      return at::avg_pool2d(x, g.kernel, g.strides, padding, false, count_include_pad);
    default:
      return at::avg_pool3d(x, g.kernel, g.strides, padding, false, count_include_pad);
  }
}

Tensors average_pool(const NodeContext& ctx, const Tensors& in) {
  if (!has_input(in, 0)) ctx.fail("input X is required");
  if (ctx.has_attr("dilations")) {
    for (int64_t d : ctx.attr_ints("dilations"))
      if (d != 1) ctx.fail(str_cat("dilations value '", d, "' is not supported (valid: 1)"));
  }
  const at::Tensor& x = in[0];
  const PoolGeometry g = pool_geometry(ctx, x, false);
  const bool count_include_pad = ctx.attr_int("count_include_pad", 0) != 0;
  if (native_padding_ok(g)) return {avg_pool_native(x, g, g.pad_begin, count_include_pad)};

  // Explicit path: sum over each window of the zero-padded input, divided by the number of
  // counted positions in that window: the input itself, plus the explicit pads when
  // count_include_pad=1, never the ceil-mode overhang. Both come from one average pool
  // (same kernel volume), so y = avg(x_padded) / avg(mask).
  const std::vector<int64_t> zeros(g.kernel.size(), 0);
  const at::Tensor xp = at::constant_pad_nd(x, aten_pad_list(g, true, true), 0);
  std::vector<int64_t> mask_shape{1, 1};
  for (int64_t i = 2; i < x.dim(); ++i) mask_shape.push_back(x.size(i));
  at::Tensor mask = at::ones(mask_shape, x.options().requires_grad(false));
  if (count_include_pad) {
    mask = at::constant_pad_nd(mask, aten_pad_list(g, true, false), 1);
    mask = at::constant_pad_nd(mask, aten_pad_list(g, false, true), 0);
  } else {
    mask = at::constant_pad_nd(mask, aten_pad_list(g, true, true), 0);
  }
  const at::Tensor sums = avg_pool_native(xp, g, zeros, true);
  const at::Tensor counts = avg_pool_native(mask, g, zeros, true);
  return {sums / counts};
}

std::vector<int64_t> spatial_dims(const NodeContext& ctx, const at::Tensor& x) {
  if (x.dim() < 3) ctx.fail(str_cat("input rank ", x.dim(), " is below 3 (N, C, spatial...)"));
  std::vector<int64_t> dims;
  for (int64_t i = 2; i < x.dim(); ++i) dims.push_back(i);
  return dims;
}

Tensors global_average_pool(const NodeContext& ctx, const Tensors& in) {
  if (!has_input(in, 0)) ctx.fail("input X is required");
  return {in[0].mean(spatial_dims(ctx, in[0]), true)};
}

Tensors global_max_pool(const NodeContext& ctx, const Tensors& in) {
  if (!has_input(in, 0)) ctx.fail("input X is required");
  return {at::amax(in[0], spatial_dims(ctx, in[0]), true)};
}

}  // namespace

void register_pool_ops(Registry& r) {
  r.add("MaxPool", {max_pool});
  r.add("AveragePool", {average_pool});
  r.add("GlobalAveragePool", {global_average_pool});
  r.add("GlobalMaxPool", {global_max_pool});
}

}  // namespace segslim::ops
