// BatchNormalization, InstanceNormalization, LayerNormalization.
#include <ATen/Context.h>

#include "common/error.h"
#include "ops/registry.h"

namespace segslim::ops {
namespace {

// Shape [1, C, 1, ...] to broadcast a per-channel vector against x.
at::Tensor per_channel(const at::Tensor& v, int64_t rank) {
  std::vector<int64_t> shape(rank, 1);
  shape[1] = -1;
  return v.reshape(shape);
}

std::vector<int64_t> all_but_channel(int64_t rank) {
  std::vector<int64_t> dims{0};
  for (int64_t i = 2; i < rank; ++i) dims.push_back(i);
  return dims;
}

bool output_requested(const NodeContext& ctx, int i) {
  return ctx.node().output_size() > i && !ctx.node().output(i).empty();
}

Tensors batch_norm(const NodeContext& ctx, const Tensors& in) {
  for (size_t i = 0; i < 5; ++i)
    if (!has_input(in, i)) ctx.fail("inputs X, scale, B, input_mean and input_var are required");
  const at::Tensor& x = in[0];
  const at::Tensor &scale = in[1], &bias = in[2], &mean = in[3], &var = in[4];
  if (x.dim() < 2) ctx.fail(str_cat("input rank ", x.dim(), " is below 2 (N, C, ...)"));
  const double eps = ctx.attr_float("epsilon", 1e-5f);
  const double momentum = ctx.attr_float("momentum", 0.9f);
  if (ctx.opset() < 9 && ctx.attr_int("spatial", 1) != 1)
    ctx.fail(str_cat("spatial '", ctx.attr_int("spatial", 1), "' is not supported (valid: 1)"));
  const int64_t training_mode = ctx.opset() >= 14 ? ctx.attr_int("training_mode", 0) : 0;
  if (training_mode != 0 && training_mode != 1)
    ctx.fail(str_cat("training_mode '", training_mode, "' is not supported (valid: 0, 1)"));
  if (ctx.opset() < 14)
    for (int i = 1; i < 5; ++i)
      if (output_requested(ctx, i))
        ctx.fail(
            "the optional outputs mean/var/saved_mean/saved_var of BatchNormalization "
            "before opset 14 are not supported (valid: the Y output only)");
  if (!training_mode && (output_requested(ctx, 1) || output_requested(ctx, 2)))
    ctx.fail("outputs running_mean and running_var need training_mode=1");

  if (training_mode) {
    // ONNX training mode: normalize with the batch statistics (population variance) and
    // return running = momentum * input + (1 - momentum) * batch as extra outputs.
    const auto dims = all_but_channel(x.dim());
    const at::Tensor batch_mean = x.mean(dims);
    const at::Tensor batch_var = x.var(dims, /*unbiased=*/false);
    const at::Tensor y = (x - per_channel(batch_mean, x.dim())) *
                             per_channel(at::rsqrt(batch_var + eps) * scale, x.dim()) +
                         per_channel(bias, x.dim());
    const at::Tensor new_mean =
        mean * momentum + batch_mean.to(mean.scalar_type()) * (1 - momentum);
    const at::Tensor new_var = var * momentum + batch_var.to(var.scalar_type()) * (1 - momentum);
    if (ctx.training()) {
      // The executor's buffers follow the graph's own running statistics.
      at::NoGradGuard no_grad;
      if (!mean.requires_grad()) mean.copy_(new_mean.detach());
      if (!var.requires_grad()) var.copy_(new_var.detach());
    }
    return {y, new_mean, new_var};
  }
  if (ctx.training()) {
    // Executor train mode: PyTorch's batch norm (batch statistics; running stats updated in
    // place). ONNX momentum m keeps m of the old value, PyTorch's keeps 1 - m. As in PyTorch,
    // the running variance takes the unbiased batch variance.
    if (mean.requires_grad() || var.requires_grad())
      ctx.fail("running mean/var inputs require grad; they must be buffers to be updated");
    return {at::batch_norm(x, scale, bias, mean, var, true, 1.0 - momentum, eps,
                           at::globalContext().userEnabledCuDNN())};
  }
  // Inference: y = x * a + b with a = scale / sqrt(var + eps), b = bias - mean * a. Written
  // out (not at::batch_norm) so gradients also reach mean and var when they are inputs.
  const at::Tensor a = scale * at::rsqrt(var + eps);
  const at::Tensor b = bias - mean * a;
  return {x * per_channel(a, x.dim()) + per_channel(b, x.dim())};
}

Tensors instance_norm(const NodeContext& ctx, const Tensors& in) {
  for (size_t i = 0; i < 3; ++i)
    if (!has_input(in, i)) ctx.fail("inputs input, scale and B are required");
  const at::Tensor& x = in[0];
  if (x.dim() < 3) ctx.fail(str_cat("input rank ", x.dim(), " is below 3 (N, C, spatial...)"));
  const double eps = ctx.attr_float("epsilon", 1e-5f);
  return {at::instance_norm(x, in[1], in[2], at::Tensor(), at::Tensor(), true, 0.0, eps,
                            at::globalContext().userEnabledCuDNN())};
}

Tensors layer_norm(const NodeContext& ctx, const Tensors& in) {
  if (!has_input(in, 0) || !has_input(in, 1)) ctx.fail("inputs X and Scale are required");
  at::Tensor x = in[0];
  const int64_t axis = normalize_axis(ctx, ctx.attr_int("axis", -1), x.dim());
  const double eps = ctx.attr_float("epsilon", 1e-5f);
  const int64_t stash_type = ctx.attr_int("stash_type", 1);
  if (stash_type != 1)
    ctx.fail(str_cat("stash_type '", stash_type, "' is not supported (valid: 1)"));
  // stash_type 1: statistics in float32 at least (half inputs are upcast for the math).
  const at::ScalarType type = x.scalar_type();
  const bool upcast = type == at::kHalf || type == at::kBFloat16;
  if (upcast) x = x.to(at::kFloat);
  std::vector<int64_t> normalized(x.sizes().begin() + axis, x.sizes().end());
  const at::Tensor& scale = in[1];
  const at::Tensor bias = has_input(in, 2) ? in[2] : at::Tensor();
  const bool want_stats = output_requested(ctx, 1) || output_requested(ctx, 2);
  at::Tensor y, mean, inv_std;
  if (!want_stats) {
    y = std::get<0>(at::native_layer_norm(x, normalized, at::Tensor(), at::Tensor(), eps));
  } else {
    // Written out so that gradients flow through the Mean and InvStdDev outputs too.
    std::vector<int64_t> dims;
    for (int64_t i = axis; i < x.dim(); ++i) dims.push_back(i);
    mean = x.mean(dims, true);
    const at::Tensor centered = x - mean;
    inv_std = at::rsqrt((centered * centered).mean(dims, true) + eps);
    y = centered * inv_std;
  }
  y = y * scale.to(y.scalar_type());
  if (bias.defined()) y = y + bias.to(y.scalar_type());
  if (upcast) y = y.to(type);
  if (!want_stats) return {y};
  return {y, mean, inv_std};
}

}  // namespace

void register_normalization_ops(Registry& r) {
  r.add("BatchNormalization", {batch_norm, {1, 2}, 1, {3, 4}});
  r.add("InstanceNormalization", {instance_norm, {1, 2}});
  r.add("LayerNormalization", {layer_norm, {1, 2}});
}

}  // namespace segslim::ops
