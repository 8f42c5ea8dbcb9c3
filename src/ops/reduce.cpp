// Reductions, ArgMax and Softmax.
#include <algorithm>
#include <numeric>

#include "common/error.h"
#include "ops/registry.h"

namespace segslim::ops {
namespace {

// The reduced axes, or nullopt for "return the input unchanged" (noop_with_empty_axes).
// Axes come from the attribute, or from input 1 where the opset moved them there (ReduceSum
// 13+, the others 18+); either way an empty list means every axis.
c10::optional<std::vector<int64_t>> reduce_axes(const NodeContext& ctx, const Tensors& in) {
  const int64_t rank = in.at(0).dim();
  std::vector<int64_t> axes = has_input(in, 1) ? to_int_vector(in[1]) : ctx.attr_ints("axes");
  if (axes.empty()) {
    if (ctx.attr_int("noop_with_empty_axes", 0)) return c10::nullopt;
    axes.resize(rank);
    std::iota(axes.begin(), axes.end(), 0);
    return axes;
  }
  return normalize_axes(ctx, std::move(axes), rank);
}

template <typename F>
Kernel reduction(F f) {
  return [f](const NodeContext& ctx, const Tensors& in) -> Tensors {
    const at::Tensor& x = in.at(0);
    const auto axes = reduce_axes(ctx, in);
    if (!axes) return {x};
    const bool keepdims = ctx.attr_int("keepdims", 1) != 0;
    if (x.dim() == 0) return {x};
    return {f(x, *axes, keepdims)};
  };
}

Tensors arg_max(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  const int64_t axis = normalize_axis(ctx, ctx.attr_int("axis", 0), x.dim());
  const bool keepdims = ctx.attr_int("keepdims", 1) != 0;
  if (ctx.attr_int("select_last_index", 0)) {
    // The last maximum is the first one of the reversed axis: i_last = n - 1 - i_first(flip).
    const int64_t n = x.size(axis);
    return {(n - 1) - at::argmax(x.flip({axis}), axis, keepdims)};
  }
  // ATen returns the first maximal index, which is ONNX's default.
  return {at::argmax(x, axis, keepdims)};
}

Tensors softmax(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  if (ctx.opset() >= 13) {
    return {at::softmax(x, normalize_axis(ctx, ctx.attr_int("axis", -1), x.dim()))};
  }
  // Softmax-1/11: the input is coerced to 2-D [prod(dims[:axis]), prod(dims[axis:])] and the
  // softmax runs over each row, i.e. jointly over all axes from `axis` on.
  int64_t axis = ctx.attr_int("axis", 1);
  if (axis < -x.dim() || axis >= x.dim())
    ctx.fail(str_cat("axis ", axis, " is out of range for a rank-", x.dim(), " tensor"));
  if (axis < 0) axis += x.dim();
  int64_t rows = 1;
  for (int64_t d = 0; d < axis; ++d) rows *= x.size(d);
  const int64_t cols = rows == 0 ? 0 : x.numel() / rows;
  return {at::softmax(x.reshape({rows, cols}), 1).reshape(x.sizes())};
}

OpInfo op(Kernel run) { return {std::move(run), {}, 1, {}}; }

}  // namespace

void register_reduce_ops(Registry& r) {
  r.add("ReduceMean", op(reduction([](const at::Tensor& x, at::IntArrayRef axes, bool keep) {
          return at::mean(x, axes, keep);
        })));
  r.add("ReduceSum", op(reduction([](const at::Tensor& x, at::IntArrayRef axes, bool keep) {
          // at::sum promotes integers to int64; ONNX keeps the input type.
          return at::sum(x, axes, keep, x.scalar_type());
        })));
  r.add("ReduceMax", op(reduction([](const at::Tensor& x, at::IntArrayRef axes, bool keep) {
          return at::amax(x, axes, keep);
        })));
  r.add("ArgMax", op(arg_max));
  r.add("Softmax", op(softmax));
}

}  // namespace segslim::ops
