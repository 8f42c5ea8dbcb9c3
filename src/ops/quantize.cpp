// QuantizeLinear and DequantizeLinear (opsets 10 and 13), the two ops of segslim's QDQ
// representation (docs/quantization.md).
//   Q:  q = saturate(round_half_to_even(x / scale) + zero_point)   into int8 / uint8
//   DQ: y = (q - zero_point) * scale
// Per-tensor when the scale has one element, per-axis (opset 13, attribute `axis`, default 1)
// when it is 1-D. A Q immediately followed by its DQ is normally not run through these
// kernels at all: the executor fuses the pair into one fake-quant step (src/exec/executor.cpp).
#include "ops/quantize.h"

#include <cmath>

#include "common/error.h"
#include "ops/registry.h"

namespace segslim::ops {

std::pair<int64_t, int64_t> quant_range(at::ScalarType type) {
  switch (type) {
    case at::kChar:
      return {-128, 127};
    case at::kByte:
      return {0, 255};
    case at::kInt:
      return {INT32_MIN, INT32_MAX};
    default:
      throw Error(str_cat("zero point of type ", at::toString(type),
                          " (QuantizeLinear/DequantizeLinear take int8 or uint8)"));
  }
}

namespace {

// Scale and zero point shaped to broadcast against a rank-`rank` tensor: as they are for
// per-tensor, [1, .., C, .., 1] for per-axis. Returns the per-axis dimension or -1.
int64_t quant_axis(const NodeContext& ctx, const at::Tensor& x, const at::Tensor& scale) {
  if (scale.numel() == 1 && scale.dim() <= 1) return -1;
  if (scale.dim() != 1)
    ctx.fail(
        str_cat("scale must be a scalar (per-tensor) or 1-D (per-axis), got rank ", scale.dim()));
  if (ctx.opset() < 13) ctx.fail("per-axis quantization needs opset >= 13");
  const int64_t axis = normalize_axis(ctx, ctx.attr_int("axis", 1), x.dim());
  if (x.size(axis) != scale.numel())
    ctx.fail(str_cat("per-axis scale has ", scale.numel(), " values but axis ", axis,
                     " of the input has ", x.size(axis)));
  return axis;
}

at::Tensor broadcast_along(const at::Tensor& t, int64_t axis, int64_t rank) {
  if (axis < 0) return t.reshape({});
  std::vector<int64_t> shape(static_cast<size_t>(rank), 1);
  shape[static_cast<size_t>(axis)] = t.numel();
  return t.reshape(shape);
}

Tensors quantize_linear(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  const at::Tensor& scale = in.at(1);
  // An absent zero point means uint8 with zero point 0 (the ONNX default).
  const at::Tensor zp = has_input(in, 2) ? in[2] : at::zeros({}, x.options().dtype(at::kByte));
  if (zp.scalar_type() != at::kChar && zp.scalar_type() != at::kByte)
    ctx.fail(str_cat("zero point must be int8 or uint8, got ", at::toString(zp.scalar_type())));
  if (zp.numel() != scale.numel())
    ctx.fail(str_cat("zero point has ", zp.numel(), " values, scale has ", scale.numel()));
  const int64_t axis = quant_axis(ctx, x, scale);
  return {quantize_tensor(x, scale, zp, axis)};
}

Tensors dequantize_linear(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& q = in.at(0);
  const at::Tensor& scale = in.at(1);
  const at::Tensor zp = has_input(in, 2) ? in[2] : at::zeros({}, q.options());
  if (zp.scalar_type() != q.scalar_type())
    ctx.fail(str_cat("zero point type ", at::toString(zp.scalar_type()),
                     " differs from the input type ", at::toString(q.scalar_type())));
  quant_range(q.scalar_type());  // int8, uint8 or int32
  if (zp.numel() != scale.numel())
    ctx.fail(str_cat("zero point has ", zp.numel(), " values, scale has ", scale.numel()));
  const int64_t axis = quant_axis(ctx, q, scale);
  // The integer input may be a host initializer (an exported int8 weight): compute where the
  // scale lives, in its float type, so the result is differentiable w.r.t. the scale.
  const at::Tensor s = broadcast_along(scale, axis, q.dim());
  const at::Tensor qf = q.to(scale.device(), scale.scalar_type());
  const at::Tensor z = broadcast_along(zp.to(scale.device(), scale.scalar_type()), axis, q.dim());
  return {(qf - z) * s};
}

}  // namespace

at::Tensor quantize_tensor(const at::Tensor& x, const at::Tensor& scale,
                           const at::Tensor& zero_point, int64_t axis) {
  const auto [qmin, qmax] = quant_range(zero_point.scalar_type());
  const at::Tensor s = broadcast_along(scale.to(x.device(), x.scalar_type()), axis, x.dim());
  const at::Tensor z = broadcast_along(zero_point.to(x.device(), x.scalar_type()), axis, x.dim());
  // at::round is round-half-to-even (nearbyint under the default rounding mode), as ONNX
  // requires. The output is integer, so nothing flows back through here; the fused Q/DQ step
  // carries the straight-through gradient.
  const at::Tensor q =
      at::clamp(at::round(x / s) + z, static_cast<double>(qmin), static_cast<double>(qmax));
  return q.to(zero_point.scalar_type());
}

at::Tensor fake_quantize(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                         int64_t axis, bool learnable) {
  const at::ScalarType zp_type = zero_point.defined() ? zero_point.scalar_type() : at::kByte;
  const auto [qmin, qmax] = quant_range(zp_type);
  SEGSLIM_CHECK(zp_type != at::kInt, "fake quantization needs an int8 or uint8 zero point");
  // The ATen fake-quant kernels take float32 input and parameters on the input's device;
  // .to() is differentiable, so the gradient still reaches a double input or scale.
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor s32 = scale.to(x.device(), at::kFloat).reshape({-1});
  const at::Tensor zp = zero_point.defined() ? zero_point.to(x.device()).reshape({-1})
                                             : at::zeros({1}, x.options().dtype(at::kInt));
  at::Tensor y;
  if (s32.numel() == 1) {
    if (learnable) {
      // LSQ (Esser et al. 2020): STE for x, and d/ds of the quantization error for the scale,
      // scaled by g = 1 / sqrt(numel * qmax) so the scale's step size matches the weights'.
      const double grad_factor = 1.0 / std::sqrt(static_cast<double>(x.numel()) * qmax);
      y = at::_fake_quantize_learnable_per_tensor_affine(x32, s32, zp.to(at::kFloat), qmin, qmax,
                                                         grad_factor);
    } else {
      y = at::fake_quantize_per_tensor_affine(x32, s32, zp.to(at::kInt), qmin, qmax);
    }
  } else {
    const int64_t rank = x.dim();
    SEGSLIM_CHECK(axis >= -rank && axis < rank, "fake quantization axis ", axis,
                  " is out of range for a rank-", rank, " tensor");
    const int64_t a = axis < 0 ? axis + rank : axis;
    SEGSLIM_CHECK(x.size(a) == s32.numel(), "per-channel scale has ", s32.numel(),
                  " values but axis ", a, " of the input has ", x.size(a));
    y = at::fake_quantize_per_channel_affine(x32, s32, zp.to(at::kInt), a, qmin, qmax);
  }
  return y.to(x.scalar_type());
}

void register_quantize_ops(Registry& r) {
  // Scale and zero point are quantization parameters, never trained by the optimizer: they
  // are buffers (the executor promotes activation scales to weights for LSQ).
  r.add("QuantizeLinear", {quantize_linear, {}, 1, {1, 2}});
  r.add("DequantizeLinear", {dequantize_linear, {}, 1, {1, 2}});
}

}  // namespace segslim::ops
