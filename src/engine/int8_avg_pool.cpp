#include "engine/int8_avg_pool.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/error.h"

namespace segslim::engine {

namespace {

// acc[c] += p[c] over one window position. int16 accumulators: a window sums at most
// kh * kw values of magnitude <= 255, checked by the caller to fit. Compiled for AVX-512BW and
// AVX2 besides the baseline, picked at run time (the loop is the whole cost of the kernel).
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void add_u8(
    const uint8_t* p, int16_t* acc, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] = static_cast<int16_t>(acc[c] + p[c]);
}
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void add_s8(
    const int8_t* p, int16_t* acc, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] = static_cast<int16_t>(acc[c] + p[c]);
}
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void scale_out(
    const int16_t* acc, float k, float* o, int64_t n) {
  for (int64_t c = 0; c < n; ++c) o[c] = static_cast<float>(acc[c]) * k;
}
// o = saturate(round_half_even(acc * k * inv)): the float mean acc * k as scale_out computes
// it, then quantized like PyTorch's fake quantization (multiplying by the inverse scale).
// Compiled like add_*: the baseline x86-64 has no vector rounding (SSE4.1), where the loop
// would call nearbyintf per element.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void quantize_u8(
    const int16_t* acc, float k, float inv, uint8_t* o, int64_t n) {
  for (int64_t c = 0; c < n; ++c)
    o[c] = static_cast<uint8_t>(
        std::clamp(std::nearbyint(static_cast<float>(acc[c]) * k * inv), 0.f, 255.f));
}
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void quantize_s8(
    const int16_t* acc, float k, float inv, int8_t* o, int64_t n) {
  for (int64_t c = 0; c < n; ++c)
    o[c] = static_cast<int8_t>(
        std::clamp(std::nearbyint(static_cast<float>(acc[c]) * k * inv), -128.f, 127.f));
}
void quantize_out(const int16_t* acc, float k, float inv, uint8_t* o, int64_t n) {
  quantize_u8(acc, k, inv, o, n);
}
void quantize_out(const int16_t* acc, float k, float inv, int8_t* o, int64_t n) {
  quantize_s8(acc, k, inv, o, n);
}
void add(const uint8_t* p, int16_t* acc, int64_t n) { add_u8(p, acc, n); }
void add(const int8_t* p, int16_t* acc, int64_t n) { add_s8(p, acc, n); }

template <typename T>
void pool(const T* src, float scale, void* dst, PoolOut out, float out_scale,
          const Int8AvgPoolShape& s) {
  const float inv = 1.f / out_scale;
  const int64_t C = s.c;
  at::parallel_for(0, s.n * s.oh, 1, [&](int64_t begin, int64_t end) {
    std::vector<int16_t> acc(static_cast<size_t>(C));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / s.oh, oy = row % s.oh;
      const int64_t y0 = oy * s.sh - s.pad_top;
      const int64_t ya = std::max<int64_t>(y0, 0), yb = std::min<int64_t>(y0 + s.kh, s.h);
      for (int64_t ox = 0; ox < s.ow; ++ox) {
        const int64_t x0 = ox * s.sw - s.pad_left;
        const int64_t xa = std::max<int64_t>(x0, 0), xb = std::min<int64_t>(x0 + s.kw, s.w);
        std::fill(acc.begin(), acc.end(), 0);
        for (int64_t y = ya; y < yb; ++y)
          for (int64_t x = xa; x < xb; ++x) add(src + ((b * s.h + y) * s.w + x) * C, acc.data(), C);
        // Padding included: the full window (the engine refuses windows that reach past the
        // padding, ceil_mode with count_include_pad); else the valid taps only.
        const int64_t count = s.count_include_pad ? s.kh * s.kw : (yb - ya) * (xb - xa);
        const float k = scale / static_cast<float>(std::max<int64_t>(count, 1));
        const int64_t at = ((b * s.oh + oy) * s.ow + ox) * C;
        switch (out) {
          case PoolOut::kF32:
            scale_out(acc.data(), k, static_cast<float*>(dst) + at, C);
            break;
          case PoolOut::kU8:
            quantize_out(acc.data(), k, inv, static_cast<uint8_t*>(dst) + at, C);
            break;
          case PoolOut::kS8:
            quantize_out(acc.data(), k, inv, static_cast<int8_t*>(dst) + at, C);
            break;
        }
      }
    }
  });
}

}  // namespace

void avg_pool_int8_nhwc(const void* src, bool src_unsigned, float scale, void* dst, PoolOut out,
                        float out_scale, const Int8AvgPoolShape& s) {
  SEGSLIM_CHECK(s.kh * s.kw <= 128, "avg_pool_int8_nhwc: a ", s.kh, "x", s.kw,
                " window could overflow the int16 sums");
  SEGSLIM_CHECK(out == PoolOut::kF32 || out_scale > 0, "avg_pool_int8_nhwc: output scale ",
                out_scale, " must be positive");
  if (src_unsigned) {
    pool(static_cast<const uint8_t*>(src), scale, dst, out, out_scale, s);
  } else {
    pool(static_cast<const int8_t*>(src), scale, dst, out, out_scale, s);
  }
}

}  // namespace segslim::engine
