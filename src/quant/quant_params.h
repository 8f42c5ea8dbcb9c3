#pragma once
// Quantization parameters of one tensor (per-tensor) and the reference fake-quant math.
// The QDQ graph itself runs through src/ops/quantize.cpp; fake_quantize() here is the same
// formula written once more in plain ATen, for tests and for scoring calibration choices.
#include <ATen/ATen.h>

#include <cstdint>

namespace segslim {

// q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax); x' = (q - zero_point) * scale.
struct QuantParams {
  double scale = 1;
  int64_t zero_point = 0;
  int64_t qmin = -127, qmax = 127;
};

// Smallest scale handed out. A tensor that is identically zero (abs_max == 0) would give
// scale 0 and x / 0 = NaN; a tiny positive scale keeps zeros exact (0 / s = 0) and is still a
// normal float32, so it survives being written into a float ONNX initializer.
constexpr double kMinScale = 1e-8;

// int8-style symmetric: qmin = -(2^(bits-1) - 1), qmax = 2^(bits-1) - 1 (the range is kept
// symmetric, -128 is never used: PaddleSlim's choice), zero point 0, scale = abs_max / qmax
// (kMinScale when abs_max == 0). abs_max must be finite and >= 0.
QuantParams symmetric_params(double abs_max, int bits = 8);

// uint8-style asymmetric: [0, 2^bits - 1]. The range is first widened to include 0 (so that
// 0, e.g. zero padding, is exactly representable); scale = (max - min) / (qmax - qmin)
// (kMinScale when the range is empty); zero_point = clamp(qmin - round_half_even(min / scale),
// qmin, qmax) (torch.ao's formula).
QuantParams asymmetric_params(double min, double max, int bits = 8);

// Reference fake quantization, in x's dtype, on x's device:
//   (clamp(round_half_even(x / s) + zp, qmin, qmax) - zp) * s.
// Not meant for training (round has zero gradient); the executor uses ATen's STE kernels.
at::Tensor fake_quantize(const at::Tensor& x, const QuantParams& p);

}  // namespace segslim
