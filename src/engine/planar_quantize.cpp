#include "engine/planar_quantize.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <array>
#include <cmath>
#include <cstdint>

#include "engine/cpu_features.h"

// GCC 12 warns inside its own AVX-512 headers (_mm512_max_ps and friends start from an
// "undefined" register) at -O2: a known false positive, not about this file's values.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace segslim::engine {

namespace {

// The saturation bounds applied before rounding, shifted by the zero point: clamping
// x * inv_scale to [lo - zp, hi - zp] (integers) and then rounding equals rounding and then
// saturating, and adding zp afterwards in int32 keeps round(x / s) + zp exact (adding it in
// float first could carry 0.50000003 + 128 to the tie 128.5 and round it the other way).
struct Bounds {
  float lo, hi;
  int32_t zp;
  Bounds(int32_t zero_point, bool to_u8)
      : lo(static_cast<float>((to_u8 ? 0 : -128) - zero_point)),
        hi(static_cast<float>((to_u8 ? 255 : 127) - zero_point)),
        zp(zero_point) {}
};

// One row of one plane into every c-th byte of the channels-last row. std::nearbyint rounds
// half to even in the default rounding mode, as the vector conversion below.
__attribute__((target_clones("arch=x86-64-v3", "default"))) void quantize_strided(
    const float* src, uint8_t* dst, int64_t from, int64_t w, int64_t c, float inv, Bounds b) {
  for (int64_t x = from; x < w; ++x) {
    const float v = std::fmin(std::fmax(src[x] * inv, b.lo), b.hi);
    dst[x * c] = static_cast<uint8_t>(static_cast<int32_t>(std::nearbyint(v)) + b.zp);
  }
}

// Where each of the 48 int32 lanes of 16 interleaved RGB pixels comes from: output vector j,
// lane i holds element k = 16 j + i of r0 g0 b0 r1 g1 b1 ..., i.e. plane k % 3, pixel k / 3.
// Planes 0 and 1 are picked by one two-register permute (index < 16: plane 0, else plane 1),
// plane 2 is then merged in under a mask.
struct Interleave3 {
  std::array<std::array<int32_t, 16>, 3> ab{}, c{};
  std::array<uint16_t, 3> c_mask{};
  Interleave3() {
    for (int j = 0; j < 3; ++j)
      for (int i = 0; i < 16; ++i) {
        const int k = 16 * j + i, plane = k % 3, pixel = k / 3;
        if (plane == 2) {
          c[j][i] = pixel;
          c_mask[j] = static_cast<uint16_t>(c_mask[j] | (1u << i));
        } else {
          ab[j][i] = plane * 16 + pixel;
        }
      }
  }
};
const Interleave3 kInterleave3;

__attribute__((target("avx512f"))) inline __m512i quantize16(const float* p, __m512 inv, __m512 lo,
                                                             __m512 hi, __m512i zp) {
  const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(p), inv), lo), hi);
  return _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);  // cvtps: round half to even
}

__attribute__((target("avx512f"))) void quantize_row3_avx512(const float* r, const float* g,
                                                             const float* bl, uint8_t* dst,
                                                             int64_t w, float inv, Bounds b) {
  const __m512 vinv = _mm512_set1_ps(inv), vlo = _mm512_set1_ps(b.lo), vhi = _mm512_set1_ps(b.hi);
  const __m512i vzp = _mm512_set1_epi32(b.zp);
  __m512i ab[3], ci[3];
  for (int j = 0; j < 3; ++j) {
    ab[j] = _mm512_loadu_si512(kInterleave3.ab[j].data());
    ci[j] = _mm512_loadu_si512(kInterleave3.c[j].data());
  }
  int64_t x = 0;
  for (; x + 16 <= w; x += 16) {
    const __m512i qr = quantize16(r + x, vinv, vlo, vhi, vzp);
    const __m512i qg = quantize16(g + x, vinv, vlo, vhi, vzp);
    const __m512i qb = quantize16(bl + x, vinv, vlo, vhi, vzp);
    for (int j = 0; j < 3; ++j) {
      __m512i t = _mm512_permutex2var_epi32(qr, ab[j], qg);
      t = _mm512_mask_permutexvar_epi32(t, kInterleave3.c_mask[j], ci[j], qb);
      // the values are in range already: the truncating narrow keeps them (u8 too)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 3 * x + 16 * j), _mm512_cvtepi32_epi8(t));
    }
  }
  quantize_strided(r, dst + 0, x, w, 3, inv, b);
  quantize_strided(g, dst + 1, x, w, 3, inv, b);
  quantize_strided(bl, dst + 2, x, w, 3, inv, b);
}

}  // namespace

void quantize_nchw_to_nhwc(const float* src, void* dst, int64_t n, int64_t c, int64_t h, int64_t w,
                           float inv_scale, int32_t zero_point, bool to_u8) {
  const Bounds b(zero_point, to_u8);
  const bool avx512 = c == 3 && use_avx512();
  auto* out = static_cast<uint8_t*>(dst);
  at::parallel_for(0, n * h, 4, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t img = row / h, y = row % h;
      const float* plane0 = src + (img * c * h + y) * w;  // channel k's row: plane0 + k * h * w
      uint8_t* o = out + row * w * c;
      if (avx512) {
        quantize_row3_avx512(plane0, plane0 + h * w, plane0 + 2 * h * w, o, w, inv_scale, b);
        continue;
      }
      for (int64_t k = 0; k < c; ++k)
        quantize_strided(plane0 + k * h * w, o + k, 0, w, c, inv_scale, b);
    }
  });
}

}  // namespace segslim::engine
