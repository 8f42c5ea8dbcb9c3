// Conv and ConvTranspose on at::convolution (1-D, 2-D and 3-D).
#include "common/error.h"
#include "ops/registry.h"

namespace segslim::ops {
namespace {

std::string join_ints(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

struct Geometry {
  std::vector<int64_t> kernel, strides, dilations, pad_begin, pad_end;
};

// Kernel, strides, dilations and the explicit begin/end pads of a Conv. auto_pad SAME_*
// pads so that out = ceil(in / stride); the odd pixel goes to the end for SAME_UPPER and to
// the beginning for SAME_LOWER.
Geometry conv_geometry(const NodeContext& ctx, const at::Tensor& x, const at::Tensor& w) {
  if (x.dim() < 3 || w.dim() < 3)
    ctx.fail(str_cat("X ", x.sizes(), " and W ", w.sizes(), " must both be [N, C, spatial...]"));
  const size_t n = static_cast<size_t>(x.dim() - 2);
  Geometry g;
  g.kernel =
      ctx.attr_ints("kernel_shape", std::vector<int64_t>(w.sizes().begin() + 2, w.sizes().end()));
  if (g.kernel.size() != n || static_cast<size_t>(w.dim() - 2) != n)
    ctx.fail(str_cat("kernel rank ", w.dim() - 2, " (kernel_shape ", join_ints(g.kernel),
                     ") does not match the ", n, " spatial axes of the input"));
  for (size_t i = 0; i < n; ++i)
    if (g.kernel[i] != w.size(i + 2))
      ctx.fail(str_cat("kernel_shape ", join_ints(g.kernel), " disagrees with weight shape ",
                       join_ints(w.sizes().vec())));
  g.strides = spatial_attr(ctx, "strides", n, 1);
  g.dilations = spatial_attr(ctx, "dilations", n, 1);
  const std::string auto_pad = ctx.attr_string("auto_pad", "NOTSET");
  g.pad_begin.assign(n, 0);
  g.pad_end.assign(n, 0);
  if (auto_pad == "NOTSET") {
    const auto pads = spatial_attr(ctx, "pads", 2 * n, 0);
    for (size_t i = 0; i < n; ++i) {
      g.pad_begin[i] = pads[i];
      g.pad_end[i] = pads[i + n];
    }
  } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    for (size_t i = 0; i < n; ++i) {
      const int64_t in = x.size(i + 2), s = g.strides[i];
      const int64_t out = (in + s - 1) / s;
      const int64_t k_eff = (g.kernel[i] - 1) * g.dilations[i] + 1;
      const int64_t total = std::max<int64_t>(0, (out - 1) * s + k_eff - in);
      g.pad_begin[i] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      g.pad_end[i] = total - g.pad_begin[i];
    }
  } else if (auto_pad != "VALID") {
    ctx.fail("auto_pad '" + auto_pad +
             "' is not supported (valid: NOTSET, SAME_UPPER, SAME_LOWER, VALID)");
  }
  return g;
}

// at::constant_pad_nd takes (begin, end) pairs starting from the LAST axis. Negative values
// crop, which ConvTranspose uses to apply its pads.
std::vector<int64_t> aten_pad_list(const std::vector<int64_t>& begin,
                                   const std::vector<int64_t>& end) {
  std::vector<int64_t> p;
  for (size_t i = begin.size(); i-- > 0;) {
    p.push_back(begin[i]);
    p.push_back(end[i]);
  }
  return p;
}

void check_input(const NodeContext& ctx, const Tensors& in) {
  if (!has_input(in, 0) || !has_input(in, 1)) ctx.fail("inputs X and W are required");
  if (in[0].dim() < 3 || in[0].dim() > 5)
    ctx.fail(str_cat("input rank ", in[0].dim(), " is not supported (valid: 3, 4, 5)"));
}

Tensors conv(const NodeContext& ctx, const Tensors& in) {
  check_input(ctx, in);
  at::Tensor x = in[0];
  const at::Tensor& w = in[1];
  const at::Tensor b = has_input(in, 2) ? in[2] : at::Tensor();
  const Geometry g = conv_geometry(ctx, x, w);
  const int64_t groups = ctx.attr_int("group", 1);
  // ATen pads symmetrically only; asymmetric ONNX pads are applied explicitly with zeros.
  std::vector<int64_t> padding = g.pad_begin;
  if (g.pad_begin != g.pad_end) {
    x = at::constant_pad_nd(x, aten_pad_list(g.pad_begin, g.pad_end), 0);
    padding.assign(padding.size(), 0);
  }
  const std::vector<int64_t> no_output_padding(padding.size(), 0);
  return {
      at::convolution(x, w, b, g.strides, padding, g.dilations, false, no_output_padding, groups)};
}

Tensors conv_transpose(const NodeContext& ctx, const Tensors& in) {
  check_input(ctx, in);
  const at::Tensor& x = in[0];
  const at::Tensor& w = in[1];
  const at::Tensor b = has_input(in, 2) ? in[2] : at::Tensor();
  if (x.dim() < 3 || w.dim() < 3)
    ctx.fail(str_cat("X ", x.sizes(), " and W ", w.sizes(), " must both be [N, C, spatial...]"));
  const size_t n = static_cast<size_t>(x.dim() - 2);
  const int64_t groups = ctx.attr_int("group", 1);
  auto kernel =
      ctx.attr_ints("kernel_shape", std::vector<int64_t>(w.sizes().begin() + 2, w.sizes().end()));
  if (kernel.size() != n || static_cast<size_t>(w.dim() - 2) != n)
    ctx.fail(str_cat("kernel rank ", w.dim() - 2, " does not match the ", n,
                     " spatial axes of the input"));
  for (size_t i = 0; i < n; ++i)
    if (kernel[i] != w.size(i + 2))
      ctx.fail(str_cat("kernel_shape ", join_ints(kernel), " disagrees with weight shape ",
                       join_ints(w.sizes().vec())));
  const auto strides = spatial_attr(ctx, "strides", n, 1);
  const auto dilations = spatial_attr(ctx, "dilations", n, 1);
  const auto output_padding = spatial_attr(ctx, "output_padding", n, 0);
  const std::string auto_pad = ctx.attr_string("auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER" &&
      auto_pad != "VALID")
    ctx.fail("auto_pad '" + auto_pad +
             "' is not supported (valid: NOTSET, SAME_UPPER, SAME_LOWER, VALID)");

  // The unpadded ("full") output length is stride*(in-1) + dilated kernel; ONNX then adds
  // output_padding at the end and removes pads. output_shape (or SAME_*, which asks for
  // in*stride) fixes the output instead, and the total padding follows from it; a negative
  // total means growing the output at the end.
  std::vector<int64_t> full(n), begin(n, 0), end(n, 0);
  for (size_t i = 0; i < n; ++i)
    full[i] = strides[i] * (x.size(i + 2) - 1) + (kernel[i] - 1) * dilations[i] + 1;
  std::vector<int64_t> target = ctx.attr_ints("output_shape");
  if (target.size() == n + 2) target.erase(target.begin(), target.begin() + 2);
  if (!target.empty() && target.size() != n)
    ctx.fail(str_cat("output_shape ", join_ints(target), " does not have ", n, " values"));
  if (target.empty() && (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER")) {
    target.resize(n);
    for (size_t i = 0; i < n; ++i) target[i] = x.size(i + 2) * strides[i];
  }
  if (!target.empty()) {
    for (size_t i = 0; i < n; ++i) {
      const int64_t total = full[i] + output_padding[i] - target[i];
      if (total < 0) {
        end[i] = total;  // grows the output at the end
      } else {
        // The ONNX spec: SAME_UPPER puts the odd pad last; NOTSET (an explicit output_shape)
        // and SAME_LOWER put it first.
        begin[i] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
        end[i] = total - begin[i];
      }
    }
  } else if (auto_pad == "NOTSET") {
    const auto pads = spatial_attr(ctx, "pads", 2 * n, 0);
    for (size_t i = 0; i < n; ++i) {
      begin[i] = pads[i];
      end[i] = pads[i + n];
    }
  }

  // ATen handles symmetric non-negative pads and output_padding < max(stride, dilation).
  bool native = true;
  for (size_t i = 0; i < n; ++i)
    native = native && begin[i] == end[i] && begin[i] >= 0 &&
             output_padding[i] < std::max(strides[i], dilations[i]) && output_padding[i] >= 0;
  if (native)
    return {at::convolution(x, w, b, strides, begin, dilations, true, output_padding, groups)};

  // General case: full output, then crop pads / extend by output_padding with zeros (negative
  // constant_pad_nd values crop), then the bias over everything.
  const std::vector<int64_t> zeros(n, 0);
  at::Tensor y =
      at::convolution(x, w, at::Tensor(), strides, zeros, dilations, true, zeros, groups);
  std::vector<int64_t> neg_begin(n), neg_end(n);
  for (size_t i = 0; i < n; ++i) {
    neg_begin[i] = -begin[i];
    neg_end[i] = output_padding[i] - end[i];
  }
  y = at::constant_pad_nd(y, aten_pad_list(neg_begin, neg_end), 0);
  if (b.defined()) {
    std::vector<int64_t> shape(y.dim(), 1);
    shape[1] = -1;
    y = y + b.reshape(shape);
  }
  return {y};
}

}  // namespace

void register_conv_ops(Registry& r) {
  r.add("Conv", {conv, {1, 2}});
  r.add("ConvTranspose", {conv_transpose, {1, 2}});
}

}  // namespace segslim::ops
