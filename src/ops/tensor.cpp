// Shape and data-movement ops. Shape-like int64 tensors (Shape outputs, Reshape targets,
// Slice bounds, ...) stay on the host, where kernels read them with to_int_vector.
#include <algorithm>
#include <limits>

#include "common/error.h"
#include "graph/tensor_proto.h"
#include "ops/registry.h"

namespace segslim::ops {
namespace {

// An axes list from the attribute (older opsets) or from input `index` (newer ones).
std::vector<int64_t> axes_from(const NodeContext& ctx, const Tensors& in, size_t index) {
  return has_input(in, index) ? to_int_vector(in[index]) : ctx.attr_ints("axes");
}

Tensors concat(const NodeContext& ctx, const Tensors& raw) {
  const Tensors in = on_common_device(raw);
  if (in.empty()) ctx.fail("needs at least one input");
  const int64_t axis = normalize_axis(ctx, ctx.attr_int("axis"), in[0].dim());
  return {at::cat(in, axis)};
}

Tensors split(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  const int64_t axis = normalize_axis(ctx, ctx.attr_int("axis", 0), x.dim());
  const int64_t dim = x.size(axis);
  const int64_t outputs = ctx.node().output_size();
  std::vector<int64_t> sizes = has_input(in, 1) ? to_int_vector(in[1]) : ctx.attr_ints("split");
  if (sizes.empty()) {
    // Equal parts, one per output.
    if (dim % outputs != 0)
      ctx.fail(str_cat("cannot split axis ", axis, " of size ", dim, " into ", outputs,
                       " equal parts; give the 'split' sizes"));
    sizes.assign(outputs, dim / outputs);
  }
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  if (total != dim || static_cast<int64_t>(sizes.size()) != outputs)
    ctx.fail(str_cat("split sizes ", at::IntArrayRef(sizes), " do not match axis ", axis,
                     " of size ", dim, " with ", outputs, " outputs"));
  auto parts = at::split_with_sizes(x, sizes, axis);
  return {parts.begin(), parts.end()};
}

// Slices one axis with ONNX semantics: bounds are clamped per the spec, steps may be
// negative (ATen's slice only takes positive steps, so a negative one slices forward and
// flips).
at::Tensor slice_axis(const at::Tensor& x, int64_t axis, int64_t start, int64_t end, int64_t step) {
  const int64_t dim = x.size(axis);
  if (start < 0) start += dim;
  if (end < 0) end += dim;
  if (step > 0) {
    start = std::clamp<int64_t>(start, 0, dim);
    end = std::clamp<int64_t>(end, 0, dim);
    return x.slice(axis, start, std::max(start, end), step);
  }
  if (dim == 0) return x.slice(axis, 0, 0);  // nothing to step backwards through
  start = std::clamp<int64_t>(start, 0, dim - 1);
  end = std::clamp<int64_t>(end, -1, dim - 1);
  const int64_t s = -step;
  // Elements start, start - s, ... down to but excluding end.
  const int64_t n = start > end ? (start - end + s - 1) / s : 0;
  if (n == 0) return x.slice(axis, 0, 0);
  const int64_t last = start - (n - 1) * s;
  return x.slice(axis, last, start + 1, s).flip({axis});
}

Tensors slice(const NodeContext& ctx, const Tensors& in) {
  at::Tensor x = in.at(0);
  std::vector<int64_t> starts, ends, axes, steps;
  if (ctx.opset() < 10) {
    starts = ctx.attr_ints("starts");
    ends = ctx.attr_ints("ends");
    axes = ctx.attr_ints("axes");
  } else {
    starts = to_int_vector(in.at(1));
    ends = to_int_vector(in.at(2));
    if (has_input(in, 3)) axes = to_int_vector(in[3]);
    if (has_input(in, 4)) steps = to_int_vector(in[4]);
  }
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    ctx.fail(str_cat("starts, ends, axes and steps have different lengths (", starts.size(), ", ",
                     ends.size(), ", ", axes.size(), ", ", steps.size(), ")"));
  axes = normalize_axes(ctx, axes, x.dim());
  for (size_t i = 0; i < axes.size(); ++i) {
    if (steps[i] == 0) ctx.fail("a step of 0 is not allowed");
    x = slice_axis(x, axes[i], starts[i], ends[i], steps[i]);
  }
  return {x};
}

Tensors reshape(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  std::vector<int64_t> shape = to_int_vector(in.at(1));
  const bool allow_zero = ctx.attr_int("allowzero", 0) != 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] != 0 || allow_zero) continue;
    // 0 copies the input's dimension at the same index.
    if (static_cast<int64_t>(i) >= x.dim())
      ctx.fail(str_cat("shape ", at::IntArrayRef(shape), " copies dimension ", i,
                       " (0), but the input has rank ", x.dim()));
    shape[i] = x.size(static_cast<int64_t>(i));
  }
  return {x.reshape(shape)};
}

Tensors transpose(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  return {x.permute(transpose_perm(ctx, x.dim()))};
}

Tensors flatten(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  int64_t axis = ctx.attr_int("axis", 1);
  if (axis < -x.dim() || axis > x.dim())
    ctx.fail(str_cat("axis ", axis, " is out of range [", -x.dim(), ", ", x.dim(), "]"));
  if (axis < 0) axis += x.dim();
  int64_t rows = 1, cols = 1;
  for (int64_t d = 0; d < x.dim(); ++d) (d < axis ? rows : cols) *= x.size(d);
  return {x.reshape({rows, cols})};
}

Tensors squeeze(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  const auto axes_in = axes_from(ctx, in, 1);
  std::vector<bool> drop(x.dim(), false);
  if (axes_in.empty()) {
    for (int64_t d = 0; d < x.dim(); ++d) drop[d] = x.size(d) == 1;
  } else {
    for (int64_t a : normalize_axes(ctx, axes_in, x.dim())) {
      if (x.size(a) != 1) ctx.fail(str_cat("cannot squeeze axis ", a, " of size ", x.size(a)));
      drop[a] = true;
    }
  }
  std::vector<int64_t> shape;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (!drop[d]) shape.push_back(x.size(d));
  return {x.reshape(shape)};
}

Tensors unsqueeze(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  const auto axes_in = axes_from(ctx, in, 1);
  if (axes_in.empty()) ctx.fail("axes are missing");
  // Axes index the output, whose rank is the input's plus the number of axes.
  const int64_t rank = x.dim() + static_cast<int64_t>(axes_in.size());
  std::vector<bool> inserted(rank, false);
  for (int64_t a : normalize_axes(ctx, axes_in, rank)) inserted[a] = true;
  std::vector<int64_t> shape;
  int64_t next = 0;
  for (int64_t d = 0; d < rank; ++d) shape.push_back(inserted[d] ? 1 : x.size(next++));
  return {x.reshape(shape)};
}

Tensors shape(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  const int64_t rank = x.dim();
  // Shape-15 start/end: negative counts from the back, out-of-range values clamp.
  int64_t start = ctx.attr_int("start", 0), end = ctx.attr_int("end", rank);
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, start, rank);
  std::vector<int64_t> dims(x.sizes().begin() + start, x.sizes().begin() + end);
  return {at::tensor(dims, at::kLong)};
}

Tensors gather(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  const int64_t axis = normalize_axis(ctx, ctx.attr_int("axis", 0), x.dim());
  const int64_t dim = x.size(axis);
  // Indices are often a host initializer while the data is on the device.
  at::Tensor idx = in.at(1).to(x.device(), at::kLong);
  idx = at::where(idx < 0, idx + dim, idx);  // negative indices count from the back
  // index_select gathers along one axis with flat indices; the reshape restores
  // data.shape[:axis] + indices.shape + data.shape[axis+1:].
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().begin() + axis);
  shape.insert(shape.end(), idx.sizes().begin(), idx.sizes().end());
  shape.insert(shape.end(), x.sizes().begin() + axis + 1, x.sizes().end());
  return {at::index_select(x, axis, idx.reshape({-1})).reshape(shape)};
}

Tensors constant(const NodeContext& ctx, const Tensors&) {
  if (ctx.has_attr("value")) return {ctx.attr_tensor("value")};
  if (ctx.has_attr("value_float"))
    return {at::scalar_tensor(ctx.attr_float("value_float", 0.f), at::kFloat)};
  if (ctx.has_attr("value_floats")) return {at::tensor(ctx.attr_floats("value_floats"))};
  if (ctx.has_attr("value_int")) return {at::scalar_tensor(ctx.attr_int("value_int"), at::kLong)};
  if (ctx.has_attr("value_ints")) return {at::tensor(ctx.attr_ints("value_ints"), at::kLong)};
  for (const auto& a : ctx.node().attribute())
    ctx.fail("attribute '" + a.name() +
             "' is not supported (valid: value, value_float, value_floats, value_int, "
             "value_ints)");
  ctx.fail("has no value attribute");
}

Tensors constant_of_shape(const NodeContext& ctx, const Tensors& in) {
  const std::vector<int64_t> shape = to_int_vector(in.at(0));
  at::Tensor value = ctx.has_attr("value") ? ctx.attr_tensor("value") : at::zeros({1}, at::kFloat);
  if (value.numel() != 1) ctx.fail("'value' must hold exactly one element");
  return {value.reshape({}).expand(shape).contiguous()};
}

Tensors cast(const NodeContext& ctx, const Tensors& in) {
  const int64_t to = ctx.attr_int("to");
  at::ScalarType type;
  try {
    type = scalar_type_from_onnx(static_cast<int32_t>(to), "Cast target");
  } catch (const Error& e) {
    ctx.fail(str_cat("'to' = ", to, " is not supported: ", e.what()));
  }
  return {in.at(0).to(type)};
}

// The broadcast of two shapes (numpy rules), or nullopt if they are incompatible.
c10::optional<std::vector<int64_t>> broadcast_shapes(at::IntArrayRef a, at::IntArrayRef b) {
  const size_t rank = std::max(a.size(), b.size());
  std::vector<int64_t> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < a.size() ? a[a.size() - 1 - i] : 1;
    const int64_t db = i < b.size() ? b[b.size() - 1 - i] : 1;
    if (da != db && da != 1 && db != 1) return c10::nullopt;
    out[rank - 1 - i] = da == 1 ? db : da;
  }
  return out;
}

Tensors expand(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  const std::vector<int64_t> target = to_int_vector(in.at(1));
  // Bidirectional: a 1 in the target keeps X's dimension.
  const auto shape = broadcast_shapes(x.sizes(), target);
  if (!shape)
    ctx.fail(str_cat("input of shape ", x.sizes(), " does not broadcast with shape ",
                     at::IntArrayRef(target)));
  return {x.expand(*shape)};
}

// Source index along one axis for output position i in [-before, n + after), per pad mode.
int64_t pad_source(const std::string& mode, int64_t i, int64_t n) {
  if (mode == "edge") return std::clamp<int64_t>(i, 0, n - 1);
  // reflect mirrors about the edges without repeating them: period 2 (n - 1).
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  int64_t m = i % period;
  if (m < 0) m += period;
  return m < n ? m : period - m;
}

Tensors pad(const NodeContext& ctx, const Tensors& in) {
  at::Tensor x = in.at(0);
  const int64_t rank = x.dim();
  const std::string mode = ctx.attr_string("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge")
    ctx.fail("mode '" + mode + "' is not supported (valid: constant, reflect, edge)");
  std::vector<int64_t> pads;
  double value = 0;
  at::Tensor value_tensor;  // a constant_value that requires grad
  std::vector<int64_t> axes;
  if (ctx.opset() < 11) {
    pads = ctx.attr_ints("pads");
    value = ctx.attr_float("value", 0.f);
  } else {
    pads = to_int_vector(in.at(1));
    if (has_input(in, 2) && in[2].numel() > 0) {
      if (in[2].requires_grad())
        value_tensor = in[2].reshape({});
      else
        value = in[2].reshape({-1})[0].item<double>();
    }
    if (has_input(in, 3)) axes = to_int_vector(in[3]);
  }
  if (axes.empty())
    for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
  axes = normalize_axes(ctx, axes, rank);
  const size_t k = axes.size();
  if (pads.size() != 2 * k)
    ctx.fail(str_cat("pads has ", pads.size(), " entries; expected ", 2 * k));
  // ONNX orders pads [begin of each axis..., end of each axis...].
  std::vector<int64_t> before(rank, 0), after(rank, 0);
  for (size_t i = 0; i < k; ++i) {
    before[axes[i]] = pads[i];
    after[axes[i]] = pads[k + i];
  }
  if (mode == "constant") {
    // ATen orders pads from the last axis backwards, (begin, end) per axis; negative pads
    // crop in both.
    std::vector<int64_t> aten_pads;
    for (int64_t d = rank - 1; d >= 0; --d) {
      aten_pads.push_back(before[d]);
      aten_pads.push_back(after[d]);
    }
    if (!value_tensor.defined()) return {at::constant_pad_nd(x, aten_pads, value)};
    // A trainable pad value: y = pad(x, 0) + value * (1 - pad(ones, 0)) carries its gradient
    // (the sum of the output gradient over the padded border).
    const at::Tensor border = 1 - at::constant_pad_nd(at::ones_like(x), aten_pads, 0);
    return {at::constant_pad_nd(x, aten_pads, 0) + value_tensor.to(x.device()) * border};
  }
  // reflect / edge: gather each padded axis through an index map, which handles any rank,
  // negative pads and (by index_select's backward) the gradient.
  for (int64_t d = 0; d < rank; ++d) {
    if (before[d] == 0 && after[d] == 0) continue;
    const int64_t n = x.size(d);
    if (n == 0) ctx.fail(str_cat("cannot ", mode, "-pad the empty axis ", d));
    std::vector<int64_t> src;
    for (int64_t i = -before[d]; i < n + after[d]; ++i) src.push_back(pad_source(mode, i, n));
    x = at::index_select(x, d, at::tensor(src, at::kLong).to(x.device()));
  }
  return {x};
}

Tensors identity(const NodeContext&, const Tensors& in) { return {in.at(0)}; }

Tensors dropout(const NodeContext& ctx, const Tensors& in) {
  const at::Tensor& x = in.at(0);
  double ratio = 0.5;
  bool training = ctx.training();
  if (ctx.opset() < 12) {
    ratio = ctx.attr_float("ratio", 0.5f);
  } else {
    if (has_input(in, 1)) ratio = in[1].item<double>();
    if (has_input(in, 2) && in[2].item<bool>()) training = true;
  }
  // Opset 10+ masks are bool; Dropout-7 gives the mask in X's type.
  const at::ScalarType mask_type = ctx.opset() >= 10 ? at::kBool : x.scalar_type();
  const bool want_mask = ctx.node().output_size() > 1 && !ctx.node().output(1).empty();
  if (!training || ratio == 0) {
    return {x, want_mask ? at::ones(x.sizes(), x.options().dtype(mask_type)) : at::Tensor()};
  }
  if (ratio < 0 || ratio > 1) ctx.fail(str_cat("ratio ", ratio, " is outside [0, 1]"));
  // at::dropout semantics: keep each element with probability 1 - ratio and scale the kept
  // ones by 1 / (1 - ratio), so the expectation is unchanged.
  const at::Tensor keep =
      at::empty_like(x, x.options().dtype(at::kFloat)).bernoulli_(1 - ratio).to(at::kBool);
  const at::Tensor y = ratio == 1 ? x * 0 : x * keep.to(x.scalar_type()) * (1.0 / (1 - ratio));
  return {y, want_mask ? keep.to(mask_type) : at::Tensor()};
}

Tensors range(const NodeContext&, const Tensors& in) {
  const at::Tensor &start = in.at(0), &limit = in.at(1), &delta = in.at(2);
  const auto options = start.options();
  // ONNX: n = max(ceil((limit - start) / delta), 0) elements start + i * delta, which is
  // at::arange's definition.
  if (at::isFloatingType(start.scalar_type()))
    return {at::arange(start.item<double>(), limit.item<double>(), delta.item<double>(), options)};
  return {at::arange(start.item<int64_t>(), limit.item<int64_t>(), delta.item<int64_t>(), options)};
}

OpInfo op(Kernel run) { return {std::move(run), {}, 1, {}}; }

}  // namespace

void register_tensor_ops(Registry& r) {
  r.add("Concat", op(concat));
  r.add("Split", op(split));
  r.add("Slice", op(slice));
  r.add("Reshape", op(reshape));
  r.add("Transpose", op(transpose));
  r.add("Flatten", op(flatten));
  r.add("Squeeze", op(squeeze));
  r.add("Unsqueeze", op(unsqueeze));
  r.add("Shape", op(shape));
  r.add("Gather", op(gather));
  r.add("Constant", op(constant));
  r.add("ConstantOfShape", op(constant_of_shape));
  r.add("Cast", op(cast));
  r.add("Expand", op(expand));
  r.add("Pad", op(pad));
  r.add("Identity", op(identity));
  r.add("Dropout", op(dropout));
  r.add("Range", op(range));
}

}  // namespace segslim::ops
