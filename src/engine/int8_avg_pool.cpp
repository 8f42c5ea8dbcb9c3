#include "engine/int8_avg_pool.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/error.h"
#include "engine/cpu_features.h"
#include "engine/int8_store.h"

namespace segslim::engine {

namespace {

// The loops over a pixel's channels, inlined into pool_rows_* below (one call per block of
// output rows: a call per window tap cost more than the adds at STDC's 64 channels). __restrict:
// an int8 store may alias anything as far as the compiler knows, and would keep them scalar.

// acc[c] += p[c] over one window position. int16 accumulators: a window sums at most
// kh * kw values of magnitude <= 255, checked by the caller to fit.
template <typename T>
SEGSLIM_INLINE void add(const T* __restrict p, int16_t* __restrict acc, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] = static_cast<int16_t>(acc[c] + p[c]);
}
SEGSLIM_INLINE void scale_out(const int16_t* __restrict acc, float k, float* __restrict o,
                              int64_t n) {
  for (int64_t c = 0; c < n; ++c) o[c] = static_cast<float>(acc[c]) * k;
}
// o = saturate(round_half_even(acc * k * inv)): the float mean acc * k as scale_out computes
// it, then quantized like PyTorch's fake quantization (multiplying by the inverse scale).
template <typename Q>
SEGSLIM_INLINE void quantize_out(const int16_t* __restrict acc, float k, float inv, Q* __restrict o,
                                 int64_t n) {
  for (int64_t c = 0; c < n; ++c) o[c] = saturate_round<Q>(static_cast<float>(acc[c]) * k * inv);
}

// Output rows [begin, end) (row = image * oh + oy); acc: C int16 scratch.
template <typename T>
SEGSLIM_INLINE void pool_rows(const T* src, float scale, void* dst, PoolOut out, float out_scale,
                              const Int8AvgPoolShape& s, int64_t begin, int64_t end, int16_t* acc) {
  const float inv = 1.f / out_scale;
  const int64_t C = s.c;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / s.oh, oy = row % s.oh;
    const int64_t y0 = oy * s.sh - s.pad_top;
    const int64_t ya = std::max<int64_t>(y0, 0), yb = std::min<int64_t>(y0 + s.kh, s.h);
    for (int64_t ox = 0; ox < s.ow; ++ox) {
      const int64_t x0 = ox * s.sw - s.pad_left;
      const int64_t xa = std::max<int64_t>(x0, 0), xb = std::min<int64_t>(x0 + s.kw, s.w);
      std::fill(acc, acc + C, int16_t{0});
      for (int64_t y = ya; y < yb; ++y)
        for (int64_t x = xa; x < xb; ++x) add(src + ((b * s.h + y) * s.w + x) * C, acc, C);
      // Padding included: the full window (the engine refuses windows that reach past the
      // padding, ceil_mode with count_include_pad); else the valid taps only.
      const int64_t count = s.count_include_pad ? s.kh * s.kw : (yb - ya) * (xb - xa);
      const float k = scale / static_cast<float>(std::max<int64_t>(count, 1));
      const int64_t at = ((b * s.oh + oy) * s.ow + ox) * C;
      switch (out) {
        case PoolOut::kF32:
          scale_out(acc, k, static_cast<float*>(dst) + at, C);
          break;
        case PoolOut::kU8:
          quantize_out(acc, k, inv, static_cast<uint8_t*>(dst) + at, C);
          break;
        case PoolOut::kS8:
          quantize_out(acc, k, inv, static_cast<int8_t*>(dst) + at, C);
          break;
      }
    }
  }
}

// Compiled for x86-64-v4 (AVX-512BW: 32 int16 lanes) and AVX2 besides the baseline, picked at
// run time (the baseline x86-64 also has no vector rounding for the quantized means).
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void pool_rows_u8(
    const uint8_t* src, float scale, void* dst, PoolOut out, float out_scale,
    const Int8AvgPoolShape& s, int64_t begin, int64_t end, int16_t* acc) {
  pool_rows(src, scale, dst, out, out_scale, s, begin, end, acc);
}
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void pool_rows_s8(
    const int8_t* src, float scale, void* dst, PoolOut out, float out_scale,
    const Int8AvgPoolShape& s, int64_t begin, int64_t end, int16_t* acc) {
  pool_rows(src, scale, dst, out, out_scale, s, begin, end, acc);
}

}  // namespace

void avg_pool_int8_nhwc(const void* src, bool src_unsigned, float scale, void* dst, PoolOut out,
                        float out_scale, const Int8AvgPoolShape& s) {
  SEGSLIM_CHECK(s.kh * s.kw <= 128, "avg_pool_int8_nhwc: a ", s.kh, "x", s.kw,
                " window could overflow the int16 sums");
  SEGSLIM_CHECK(out == PoolOut::kF32 || out_scale > 0, "avg_pool_int8_nhwc: output scale ",
                out_scale, " must be positive");
  at::parallel_for(0, s.n * s.oh, 1, [&](int64_t begin, int64_t end) {
    std::vector<int16_t> acc(static_cast<size_t>(s.c));
    if (src_unsigned) {
      pool_rows_u8(static_cast<const uint8_t*>(src), scale, dst, out, out_scale, s, begin, end,
                   acc.data());
    } else {
      pool_rows_s8(static_cast<const int8_t*>(src), scale, dst, out, out_scale, s, begin, end,
                   acc.data());
    }
  });
}

}  // namespace segslim::engine
