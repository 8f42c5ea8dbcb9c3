#include "quant/quant_params.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace segslim {
namespace {

void check_bits(int bits) {
  // 2..16: at 1 bit the symmetric range is {-0, 0}; above 16 int64 levels still work but no
  // ONNX runtime has such a QuantizeLinear type, so it is surely a configuration mistake.
  SEGSLIM_CHECK(bits >= 2 && bits <= 16, "quantization bits must be in [2, 16], got ", bits);
}

}  // namespace

QuantParams symmetric_params(double abs_max, int bits) {
  check_bits(bits);
  SEGSLIM_CHECK(std::isfinite(abs_max) && abs_max >= 0,
                "symmetric quantization needs a finite abs-max >= 0, got ", abs_max);
  QuantParams p;
  p.qmax = (int64_t{1} << (bits - 1)) - 1;
  p.qmin = -p.qmax;
  p.zero_point = 0;
  p.scale = std::max(abs_max / static_cast<double>(p.qmax), kMinScale);
  return p;
}

QuantParams asymmetric_params(double min, double max, int bits) {
  check_bits(bits);
  SEGSLIM_CHECK(std::isfinite(min) && std::isfinite(max) && min <= max,
                "asymmetric quantization needs a finite range min <= max, got [", min, ", ", max,
                "]");
  min = std::min(min, 0.0);
  max = std::max(max, 0.0);
  QuantParams p;
  p.qmin = 0;
  p.qmax = (int64_t{1} << bits) - 1;
  p.scale = std::max((max - min) / static_cast<double>(p.qmax - p.qmin), kMinScale);
  // std::nearbyint rounds half to even under the default rounding mode, like torch.round.
  const double zp = static_cast<double>(p.qmin) - std::nearbyint(min / p.scale);
  p.zero_point = static_cast<int64_t>(
      std::clamp(zp, static_cast<double>(p.qmin), static_cast<double>(p.qmax)));
  return p;
}

at::Tensor fake_quantize(const at::Tensor& x, const QuantParams& p) {
  SEGSLIM_CHECK(p.scale > 0 && p.qmin <= p.zero_point && p.zero_point <= p.qmax,
                "invalid quantization parameters: scale ", p.scale, ", zero point ", p.zero_point,
                ", range [", p.qmin, ", ", p.qmax, "]");
  // at::round is round-half-to-even (std::nearbyint), matching ONNX QuantizeLinear.
  at::Tensor q = at::round(x / p.scale) + static_cast<double>(p.zero_point);
  q = at::clamp(q, static_cast<double>(p.qmin), static_cast<double>(p.qmax));
  return (q - static_cast<double>(p.zero_point)) * p.scale;
}

}  // namespace segslim
