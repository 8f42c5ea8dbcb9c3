#pragma once
// Quantization helpers shared by the QuantizeLinear/DequantizeLinear kernels, the executor's
// fused fake-quant step and the QDQ passes, so that all of them round and saturate alike.
#include <ATen/ATen.h>

#include <cstdint>
#include <utility>

namespace segslim::ops {

// [qmin, qmax] of a zero-point type: int8 [-128, 127], uint8 [0, 255] (int32 for DQ).
// Throws segslim::Error for any other type.
std::pair<int64_t, int64_t> quant_range(at::ScalarType type);

// QuantizeLinear's arithmetic: saturate(round_half_to_even(x / scale) + zero_point) as the
// zero point's type (int8 / uint8), per-tensor (axis -1) or along dimension `axis` (>= 0).
// Used by the kernel and by export_qdq, so exported int8 weights match the kernel exactly.
at::Tensor quantize_tensor(const at::Tensor& x, const at::Tensor& scale,
                           const at::Tensor& zero_point, int64_t axis);

// One fused Q -> DQ: (clamp(round_half_even(x / s) + zp, qmin, qmax) - zp) * s in float, with
// the straight-through estimator as gradient (d/dx = 1 inside [qmin, qmax], 0 where clamped).
// Per-tensor when `scale` has one element, else per-channel along `axis` (may be negative).
// `zero_point` may be undefined (uint8, 0). With `learnable` (per-tensor only) the LSQ op is
// used and the gradient also reaches `scale`. Works for any float type of `x` (computes in
// float32, which the ATen fake-quant kernels require, and casts back; autograd stays intact).
at::Tensor fake_quantize(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                         int64_t axis, bool learnable);

}  // namespace segslim::ops
