#pragma once
// How the engine's own kernels store their results: as float, or quantized as QuantizeLinear
// with zero point 0 does and as PyTorch's fake quantization computes it (multiplying by the
// inverse scale), q = saturate(round_half_even(v * (1 / scale))).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "engine/cpu_features.h"

namespace segslim::engine {

// kF16: IEEE half precision, for float maps passed between the engine's own kernels only
// (EngineOptions::half_links); values convert to and from float rounding to nearest even, as
// the F16C/AVX-512 conversions and ATen's .to(kHalf) do.
enum class ElemType { kF32, kS8, kU8, kF16 };

constexpr int64_t elem_bytes(ElemType t) {
  return t == ElemType::kF32 ? 4 : t == ElemType::kF16 ? 2 : 1;
}

// Portable conversions (the vector kernels use the hardware's). Half: 1 sign, 5 exponent
// (bias 15), 10 mantissa bits; magnitudes past 65504 become infinity, NaN stays NaN.
SEGSLIM_INLINE float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu,
                 man = h & 0x3ffu;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(man), -24);  // zero and subnormals: man x 2^-24
  } else if (exp == 31) {
    v = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    v = std::ldexp(static_cast<float>(man | 0x400u), static_cast<int>(exp) - 25);
  }
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits |= sign;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}
SEGSLIM_INLINE uint16_t float_to_half(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(a)) return static_cast<uint16_t>(sign | 0x7e00u);
  if (a >= 65520.f) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504: inf
  if (a < 6.103515625e-05f) {  // below the smallest normal half (2^-14): multiples of 2^-24
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.f)));
  }
  // normal: keep 10 of the 23 mantissa bits, rounding half to even on the 13 dropped
  uint32_t m = (bits & 0x7fffffffu) - (112u << 23);  // rebias the exponent 127 -> 15
  const uint32_t dropped = m & 0x1fffu;
  m >>= 13;
  if (dropped > 0x1000u || (dropped == 0x1000u && (m & 1u))) ++m;  // may carry into the exponent
  return static_cast<uint16_t>(sign | m);
}

// `scaled` (v times the inverse scale, and whatever else the caller folds into that product)
// rounded half to even, saturated to Q's range.
template <typename Q>
SEGSLIM_INLINE Q saturate_round(float scaled) {
  static_assert(std::is_same_v<Q, int8_t> || std::is_same_v<Q, uint8_t>);
  constexpr float lo = std::is_same_v<Q, uint8_t> ? 0.f : -128.f;
  constexpr float hi = std::is_same_v<Q, uint8_t> ? 255.f : 127.f;
  return static_cast<Q>(std::clamp(std::nearbyint(scaled), lo, hi));
}

}  // namespace segslim::engine
