// MatMul and Gemm.
#include "common/error.h"
#include "ops/registry.h"

namespace segslim::ops {
namespace {

Tensors matmul(const NodeContext& ctx, const Tensors& in) {
  if (!has_input(in, 0) || !has_input(in, 1)) ctx.fail("inputs A and B are required");
  // at::matmul follows numpy.matmul: 1-D operands are promoted and the batch axes broadcast.
  return {at::matmul(in[0], in[1])};
}

// Y = alpha * A' B' + beta * C, with C unidirectionally broadcast to [M, N].
Tensors gemm(const NodeContext& ctx, const Tensors& in) {
  if (!has_input(in, 0) || !has_input(in, 1)) ctx.fail("inputs A and B are required");
  if (in[0].dim() != 2 || in[1].dim() != 2)
    ctx.fail(str_cat("A and B must be 2-D (got ranks ", in[0].dim(), " and ", in[1].dim(), ")"));
  const double alpha = ctx.attr_float("alpha", 1.0f);
  const double beta = ctx.attr_float("beta", 1.0f);
  const at::Tensor a = ctx.attr_int("transA", 0) ? in[0].t() : in[0];
  const at::Tensor b = ctx.attr_int("transB", 0) ? in[1].t() : in[1];
  at::Tensor y = at::matmul(a, b);
  if (alpha != 1.0) y = y * alpha;
  if (has_input(in, 2) && beta != 0.0) y = beta == 1.0 ? y + in[2] : y + in[2] * beta;
  return {y};
}

}  // namespace

void register_matmul_ops(Registry& r) {
  r.add("MatMul", {matmul, {0, 1}, 2});
  r.add("Gemm", {gemm, {1, 2}});
}

}  // namespace segslim::ops
