// Broadcasting elementwise ops (numpy multidirectional broadcasting, which ATen implements).
#include "common/error.h"
#include "ops/registry.h"

namespace segslim::ops {
namespace {

using Binary = at::Tensor (*)(const at::Tensor&, const at::Tensor&);

Kernel binary(Binary f) {
  return [f](const NodeContext&, const Tensors& raw) -> Tensors {
    const Tensors in = on_common_device(raw);
    return {f(in.at(0), in.at(1))};
  };
}

at::Tensor divide(const at::Tensor& a, const at::Tensor& b) {
  // Integer division truncates toward zero, like C and ONNX Runtime.
  if (!at::isFloatingType(a.scalar_type()) && !at::isFloatingType(b.scalar_type()))
    return at::div(a, b, "trunc");
  return at::div(a, b);
}

Tensors power(const NodeContext&, const Tensors& raw) {
  const Tensors in = on_common_device(raw);
  const at::Tensor &x = in.at(0), &y = in.at(1);
  // Pow-12+ lets the exponent's type differ from the base's; the result has the base's type
  // (an integer base with a float exponent truncates, as numpy's astype does).
  at::Tensor z = at::pow(x, y);
  return {z.scalar_type() == x.scalar_type() ? z : z.to(x.scalar_type())};
}

Tensors not_op(const NodeContext&, const Tensors& in) { return {at::logical_not(in.at(0))}; }

Tensors where(const NodeContext&, const Tensors& raw) {
  const Tensors in = on_common_device(raw);
  return {at::where(in.at(0).to(at::kBool), in.at(1), in.at(2))};
}

Kernel variadic(Binary f) {
  return [f](const NodeContext& ctx, const Tensors& raw) -> Tensors {
    if (raw.empty()) ctx.fail("needs at least one input");
    const Tensors in = on_common_device(raw);
    at::Tensor acc = in[0];
    for (size_t i = 1; i < in.size(); ++i) acc = f(acc, in[i]);
    return {acc};
  };
}

OpInfo op(Kernel run, std::vector<int> weight_inputs = {}, int64_t min_weight_numel = 1) {
  return {std::move(run), std::move(weight_inputs), min_weight_numel, {}};
}

at::Tensor add(const at::Tensor& a, const at::Tensor& b) { return at::add(a, b); }
at::Tensor sub(const at::Tensor& a, const at::Tensor& b) { return at::sub(a, b); }
at::Tensor mul(const at::Tensor& a, const at::Tensor& b) { return at::mul(a, b); }
at::Tensor equal(const at::Tensor& a, const at::Tensor& b) { return at::eq(a, b); }
at::Tensor less(const at::Tensor& a, const at::Tensor& b) { return at::lt(a, b); }
at::Tensor greater(const at::Tensor& a, const at::Tensor& b) { return at::gt(a, b); }
at::Tensor minimum(const at::Tensor& a, const at::Tensor& b) { return at::minimum(a, b); }
at::Tensor maximum(const at::Tensor& a, const at::Tensor& b) { return at::maximum(a, b); }

}  // namespace

void register_elementwise_ops(Registry& r) {
  // Bias / scale vectors feeding Add, Mul, ... are trainable; scalar constants are not.
  const std::vector<int> both{0, 1};
  r.add("Add", op(binary(add), both, 2));
  r.add("Sub", op(binary(sub), both, 2));
  r.add("Mul", op(binary(mul), both, 2));
  r.add("Div", op(binary(divide), both, 2));
  r.add("Pow", op(power));
  r.add("Equal", op(binary(equal)));
  r.add("Less", op(binary(less)));
  r.add("Greater", op(binary(greater)));
  r.add("Not", op(not_op));
  r.add("Where", op(where));
  r.add("Min", op(variadic(minimum)));
  r.add("Max", op(variadic(maximum)));
}

}  // namespace segslim::ops
