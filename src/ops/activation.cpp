// Pointwise activations and unary math ops.
#include <cfloat>

#include "common/error.h"
#include "ops/registry.h"

namespace segslim::ops {
namespace {

OpInfo op(Kernel run, std::vector<int> weight_inputs = {}) {
  return {std::move(run), std::move(weight_inputs), 1, {}};
}

using Unary = at::Tensor (*)(const at::Tensor&);

OpInfo unary(Unary f) {
  return op([f](const NodeContext&, const Tensors& in) -> Tensors { return {f(in.at(0))}; });
}

// Moves a small operand (a CPU initializer or Constant output) to the activation's device.
at::Tensor on_device_of(const at::Tensor& t, const at::Tensor& like) {
  return t.device() == like.device() ? t : t.to(like.device());
}

Tensors prelu(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  const at::Tensor slope = on_device_of(in.at(1), x);
  // Unidirectional (numpy) broadcasting: slope's shape must broadcast to X's shape without
  // changing it, e.g. [C,1,1] or [1] against NCHW; a [C] slope aligns with the last axis.
  const auto xs = x.sizes(), ss = slope.sizes();
  bool ok = ss.size() <= xs.size();
  for (size_t i = 0; ok && i < ss.size(); ++i) {
    const int64_t s = ss[ss.size() - 1 - i], d = xs[xs.size() - 1 - i];
    ok = s == 1 || s == d;
  }
  if (!ok)
    ctx.fail(
        str_cat("slope of shape ", ss, " does not broadcast unidirectionally to X of shape ", xs));
  // where() rather than at::prelu: at::prelu only takes a 1-D per-channel slope, while ONNX
  // allows any broadcastable shape; the gradient reaches the slope through x * slope.
  return {at::where(x >= 0, x, x * slope)};
}

Tensors leaky_relu(const NodeContext& ctx, const Tensors& in) {
  return {at::leaky_relu(in.at(0), ctx.attr_float("alpha", 0.01f))};
}

Tensors hard_sigmoid(const NodeContext& ctx, const Tensors& in) {
  const double alpha = ctx.attr_float("alpha", 0.2f), beta = ctx.attr_float("beta", 0.5f);
  return {at::clamp(in.at(0) * alpha + beta, 0.0, 1.0)};
}

Tensors hard_swish(const NodeContext&, const Tensors& in) {
  // ONNX: x * max(0, min(1, x / 6 + 1 / 2)), which is exactly at::hardswish.
  return {at::hardswish(in.at(0))};
}

Tensors clip(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  if (ctx.opset() < 11) {
    // Clip-6: float attributes, defaulting to the float range.
    const double lo = ctx.attr_float("min", -FLT_MAX), hi = ctx.attr_float("max", FLT_MAX);
    return {at::clamp(x, lo, hi)};
  }
  // Clip-11+: optional scalar inputs of X's type. Tensor bounds keep them differentiable
  // (a trainable bound gets the gradient of the clipped elements). min > max gives max,
  // as both ONNX and at::clamp specify.
  c10::optional<at::Tensor> lo, hi;
  if (has_input(in, 1)) lo = on_device_of(in[1], x).to(x.scalar_type()).reshape({});
  if (has_input(in, 2)) hi = on_device_of(in[2], x).to(x.scalar_type()).reshape({});
  if (!lo && !hi) return {x};
  return {at::clamp(x, lo, hi)};
}

}  // namespace

void register_activation_ops(Registry& r) {
  r.add("Relu", unary([](const at::Tensor& x) { return at::relu(x); }));
  r.add("PRelu", op(prelu, {1}));
  r.add("LeakyRelu", op(leaky_relu));
  r.add("Sigmoid", unary([](const at::Tensor& x) { return at::sigmoid(x); }));
  r.add("HardSigmoid", op(hard_sigmoid));
  r.add("HardSwish", op(hard_swish));
  r.add("Tanh", unary([](const at::Tensor& x) { return at::tanh(x); }));
  r.add("Clip", op(clip));
  r.add("Erf", unary([](const at::Tensor& x) { return at::erf(x); }));
  r.add("Sqrt", unary([](const at::Tensor& x) { return at::sqrt(x); }));
  r.add("Reciprocal", unary([](const at::Tensor& x) { return at::reciprocal(x); }));
  r.add("Exp", unary([](const at::Tensor& x) { return at::exp(x); }));
  r.add("Log", unary([](const at::Tensor& x) { return at::log(x); }));
  r.add("Neg", unary([](const at::Tensor& x) { return at::neg(x); }));
  r.add("Abs", unary([](const at::Tensor& x) { return at::abs(x); }));
  r.add("Floor", unary([](const at::Tensor& x) { return at::floor(x); }));
  r.add("Ceil", unary([](const at::Tensor& x) { return at::ceil(x); }));
}

}  // namespace segslim::ops
