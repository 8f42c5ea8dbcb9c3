#pragma once
// How the engine's own kernels store their results: as float, or quantized as QuantizeLinear
// with zero point 0 does and as PyTorch's fake quantization computes it (multiplying by the
// inverse scale), q = saturate(round_half_even(v * (1 / scale))).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "engine/cpu_features.h"

namespace segslim::engine {

// kF16: IEEE half precision, for float maps passed between the engine's own kernels only
// (EngineOptions::half_links); values convert to and from float rounding to nearest even, as
// the F16C/AVX-512 conversions and c10::Half (ATen's .to(kHalf)) do.
enum class ElemType { kF32, kS8, kU8, kF16 };

constexpr int64_t elem_bytes(ElemType t) {
  return t == ElemType::kF32 ? 4 : t == ElemType::kF16 ? 2 : 1;
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
