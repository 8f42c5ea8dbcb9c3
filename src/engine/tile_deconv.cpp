#include "engine/tile_deconv.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "engine/cpu_features.h"

namespace segslim::engine {

namespace {

constexpr int64_t L = kTileDeconvLanes;

// One input row as float, one row per input channel, each pixel repeated kw times so that
// column ow of an output row reads expanded[c][ow]: [C][padded] with padded = OW rounded up to
// L, zeros past OW (the vector loops may read a whole last vector). Two passes over data in
// L1, each a plain loop the compiler vectorizes (rather than one pass with a strided read and
// a run-time repeat per element): channels-last to planar (`planar`: C rows of w floats),
// then each pixel repeated KW times (KW a compile-time constant).
template <typename T, int KW>
SEGSLIM_INLINE void expand_row(const T* __restrict src, int64_t w, int64_t c, int64_t padded,
                               float* __restrict planar, float* __restrict expanded) {
  for (int64_t x = 0; x < w; ++x)
    for (int64_t ch = 0; ch < c; ++ch) planar[ch * w + x] = static_cast<float>(src[x * c + ch]);
  for (int64_t ch = 0; ch < c; ++ch) {
    const float* __restrict p = planar + ch * w;
    float* __restrict e = expanded + ch * padded;
    for (int64_t x = 0; x < w; ++x)
      for (int j = 0; j < KW; ++j) e[x * KW + j] = p[x];
    for (int64_t k = w * KW; k < padded; ++k) e[k] = 0.f;
  }
}

template <typename T>
SEGSLIM_INLINE void expand_typed(const TileDeconvArgs& g, const void* row, int64_t padded,
                                 float* planar, float* expanded) {
  const T* src = static_cast<const T*>(row);
  switch (g.kw) {
    case 1:
      return expand_row<T, 1>(src, g.w, g.c, padded, planar, expanded);
    case 2:
      return expand_row<T, 2>(src, g.w, g.c, padded, planar, expanded);
    case 4:
      return expand_row<T, 4>(src, g.w, g.c, padded, planar, expanded);
    case 8:
      return expand_row<T, 8>(src, g.w, g.c, padded, planar, expanded);
    default:
      return expand_row<T, 16>(src, g.w, g.c, padded, planar, expanded);
  }
}

__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void expand(
    const TileDeconvArgs& g, const void* row, int64_t padded, float* planar, float* expanded) {
  switch (g.src_type) {
    case ElemType::kF32:
      return expand_typed<float>(g, row, padded, planar, expanded);
    case ElemType::kS8:
      return expand_typed<int8_t>(g, row, padded, planar, expanded);
    case ElemType::kU8:
      return expand_typed<uint8_t>(g, row, padded, planar, expanded);
    case ElemType::kF16:  // refused by tile_deconv_to_nchw
      return;
  }
}

// Output row dst (ow < OW) of output channel o and tile row i: 16 columns share one weight
// vector per input channel (the pattern repeats every kw lanes and kw divides 16).
void paint_row_plain(const float* expanded, const float* pattern, int64_t c, int64_t padded,
                     int64_t ow_end, float scale, float bias, float* dst) {
  for (int64_t ow = 0; ow < ow_end; ++ow) {
    float acc = 0.f;
    for (int64_t ch = 0; ch < c; ++ch) acc += expanded[ch * padded + ow] * pattern[ch * L + ow % L];
    dst[ow] = acc * scale + bias;
  }
}

// Four vectors (64 columns) at a time: each weight vector loaded once for the four.
__attribute__((target("avx512f"))) void paint_row_avx512(const float* expanded,
                                                         const float* pattern, int64_t c,
                                                         int64_t padded, int64_t ow_end,
                                                         float scale, float bias, float* dst) {
  const __m512 sc = _mm512_set1_ps(scale), bi = _mm512_set1_ps(bias);
  int64_t ow = 0;
  for (; ow + 4 * L <= ow_end; ow += 4 * L) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t ch = 0; ch < c; ++ch) {
      const __m512 p = _mm512_loadu_ps(pattern + ch * L);
      const float* e = expanded + ch * padded + ow;
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(e), p, a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(e + L), p, a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(e + 2 * L), p, a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(e + 3 * L), p, a3);
    }
    _mm512_storeu_ps(dst + ow, _mm512_fmadd_ps(a0, sc, bi));
    _mm512_storeu_ps(dst + ow + L, _mm512_fmadd_ps(a1, sc, bi));
    _mm512_storeu_ps(dst + ow + 2 * L, _mm512_fmadd_ps(a2, sc, bi));
    _mm512_storeu_ps(dst + ow + 3 * L, _mm512_fmadd_ps(a3, sc, bi));
  }
  for (; ow < ow_end; ow += L) {
    const int64_t left = std::min(L, ow_end - ow);
    const __mmask16 m = static_cast<__mmask16>(left == L ? 0xffff : (1u << left) - 1);
    __m512 a = _mm512_setzero_ps();
    for (int64_t ch = 0; ch < c; ++ch)
      a = _mm512_fmadd_ps(_mm512_loadu_ps(expanded + ch * padded + ow),
                          _mm512_loadu_ps(pattern + ch * L), a);
    _mm512_mask_storeu_ps(dst + ow, m, _mm512_fmadd_ps(a, sc, bi));
  }
}

// The int8 path. An input row as u8 codes per group of 4 channels, each pixel's 4 bytes repeated
// kw times so that output column ow reads expanded[g][ow]: [groups][padded][4] (s8 codes flipped
// to u8 + 128; channels past C: zero; columns past OW: zero).
void expand_row_int8(const uint8_t* src, int64_t w, int64_t c, int64_t kw, int64_t padded,
                     uint8_t flip, uint32_t* expanded) {
  const int64_t groups = (c + 3) / 4;
  const uint32_t flip4 = flip * 0x01010101u;
  for (int64_t g = 0; g < groups; ++g) {
    uint32_t* e = expanded + g * padded;
    const int64_t first = g * 4, bytes = std::min<int64_t>(4, c - first);
    for (int64_t x = 0; x < w; ++x) {
      uint32_t v = 0;
      if (bytes == 4) {
        std::memcpy(&v, src + x * c + first, sizeof v);
        v ^= flip4;
      } else {
        for (int64_t b = 0; b < bytes; ++b)
          v |= static_cast<uint32_t>(src[x * c + first + b] ^ flip) << (8 * b);
      }
      for (int64_t j = 0; j < kw; ++j) e[x * kw + j] = v;
    }
    for (int64_t k = w * kw; k < padded; ++k) e[k] = 0;
  }
}

// Output row dst (ow < ow_end) of output channel o and tile row i from the expanded row: per 16
// columns one vpdpbusd per group of 4 input channels (pattern: this row's [group][16][4]),
// starting from minus the s8 compensation (start: 16 lanes), then acc x scale + bias as the
// float path computes it (the same exact sum). Four vectors at a time.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void paint_row_vnni(
    const uint32_t* expanded, const int8_t* pattern, const int32_t* start, int64_t groups,
    int64_t padded, int64_t ow_end, float scale, float bias, float* dst) {
  const __m512 sc = _mm512_set1_ps(scale), bi = _mm512_set1_ps(bias);
  const __m512i init = _mm512_loadu_si512(start);
  const __mmask16 all = 0xffff;
  int64_t ow = 0;
  for (; ow + 4 * L <= ow_end; ow += 4 * L) {
    __m512i a0 = init, a1 = init, a2 = init, a3 = init;
    for (int64_t g = 0; g < groups; ++g) {
      const __m512i p = _mm512_loadu_si512(pattern + g * L * 4);
      const uint32_t* e = expanded + g * padded + ow;
      a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(e), p);
      a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(e + L), p);
      a2 = _mm512_dpbusd_epi32(a2, _mm512_loadu_si512(e + 2 * L), p);
      a3 = _mm512_dpbusd_epi32(a3, _mm512_loadu_si512(e + 3 * L), p);
    }
    _mm512_storeu_ps(dst + ow, _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all, a0), sc, bi));
    _mm512_storeu_ps(dst + ow + L, _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all, a1), sc, bi));
    _mm512_storeu_ps(dst + ow + 2 * L, _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all, a2), sc, bi));
    _mm512_storeu_ps(dst + ow + 3 * L, _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all, a3), sc, bi));
  }
  for (; ow < ow_end; ow += L) {
    const int64_t left = std::min(L, ow_end - ow);
    const __mmask16 m = static_cast<__mmask16>(left == L ? 0xffff : (1u << left) - 1);
    __m512i a = init;
    for (int64_t g = 0; g < groups; ++g)
      a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512(expanded + g * padded + ow),
                              _mm512_loadu_si512(pattern + g * L * 4));
    _mm512_mask_storeu_ps(dst + ow, m, _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all, a), sc, bi));
  }
}

bool vnni_path(const TileDeconvArgs& g) {
  return g.pattern8 && g.pattern8_start && g.src_type != ElemType::kF32 &&
         tile_deconv_vnni_supported();
}

// tile_deconv_to_nchw's int8 path (vnni_path).
void tile_deconv_vnni(const TileDeconvArgs& g) {
  const int64_t oh = g.h * g.kh, ow = g.w * g.kw, groups = (g.c + 3) / 4;
  const int64_t padded = (ow + L - 1) / L * L;
  const bool s8 = g.src_type == ElemType::kS8;
  at::parallel_for(0, g.n * g.h, 1, [&](int64_t first, int64_t last) {
    std::vector<uint32_t> expanded(static_cast<size_t>(groups * padded));
    for (int64_t r = first; r < last; ++r) {
      const int64_t n = r / g.h, h = r % g.h;
      expand_row_int8(static_cast<const uint8_t*>(g.src) + r * g.w * g.c, g.w, g.c, g.kw, padded,
                      s8 ? 0x80 : 0, expanded.data());
      for (int64_t oc = 0; oc < g.o; ++oc)
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t row = oc * g.kh + i;
          paint_row_vnni(expanded.data(), g.pattern8 + row * groups * L * 4,
                         g.pattern8_start + row * L, groups, padded, ow, g.scale[oc], g.bias[oc],
                         g.out + ((n * g.o + oc) * oh + h * g.kh + i) * ow);
        }
    }
  });
}

}  // namespace

bool tile_deconv_int8_exact(int64_t c, ElemType type) {
  const int64_t largest = type == ElemType::kU8 ? 255 : 128;
  return c * largest * 128 < (int64_t{1} << 24);
}

bool tile_deconv_vnni_supported() { return use_avx512() && __builtin_cpu_supports("avx512vnni"); }

TileDeconvInt8Weights tile_deconv_int8_weights(const float* weights, int64_t c, int64_t o,
                                               int64_t kh, int64_t kw, ElemType src_type) {
  SEGSLIM_CHECK(kw > 0 && L % kw == 0, "tile_deconv_int8_weights: kernel width ", kw,
                " does not divide ", L);
  const int64_t groups = (c + 3) / 4;
  TileDeconvInt8Weights r;
  r.pattern.assign(static_cast<size_t>(o * kh * groups * L * 4), 0);
  r.start.assign(static_cast<size_t>(o * kh * L), 0);
  const int32_t shift = src_type == ElemType::kS8 ? 128 : 0;  // s8 codes read as u8 + 128
  for (int64_t oc = 0; oc < o; ++oc)
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t l = 0; l < L; ++l) {
          const float v = weights[((ch * o + oc) * kh + i) * kw + l % kw];
          SEGSLIM_CHECK(v == std::nearbyint(v) && v >= -128.f && v <= 127.f,
                        "tile_deconv_int8_weights: weight ", v, " is no int8 code");
          const int64_t row = oc * kh + i;
          r.pattern[static_cast<size_t>(((row * groups + ch / 4) * L + l) * 4 + ch % 4)] =
              static_cast<int8_t>(v);
          r.start[static_cast<size_t>(row * L + l)] -= shift * static_cast<int32_t>(v);
        }
  return r;
}

std::vector<float> tile_deconv_pattern(const float* weights, int64_t c, int64_t o, int64_t kh,
                                       int64_t kw) {
  SEGSLIM_CHECK(kw > 0 && L % kw == 0, "tile_deconv_pattern: kernel width ", kw,
                " does not divide ", L);
  std::vector<float> p(static_cast<size_t>(o * kh * c * L));
  for (int64_t oc = 0; oc < o; ++oc)
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t l = 0; l < L; ++l)
          p[((oc * kh + i) * c + ch) * L + l] = weights[((ch * o + oc) * kh + i) * kw + l % kw];
  return p;
}

void tile_deconv_to_nchw(const TileDeconvArgs& g) {
  SEGSLIM_CHECK(g.src && g.out && g.pattern && g.scale && g.bias && g.n > 0 && g.h > 0 && g.w > 0 &&
                    g.c > 0 && g.o > 0 && g.kh > 0 && g.kw > 0 && L % g.kw == 0,
                "tile_deconv_to_nchw: bad arguments");
  SEGSLIM_CHECK(g.src_type != ElemType::kF16, "tile_deconv_to_nchw: no float16 input");
  if (vnni_path(g)) return tile_deconv_vnni(g);
  const int64_t oh = g.h * g.kh, ow = g.w * g.kw;
  const int64_t padded = (ow + L - 1) / L * L;
  const int64_t elem = elem_bytes(g.src_type);
  const auto paint = use_avx512() ? paint_row_avx512 : paint_row_plain;
  // one input row (n, h) at a time: its kh output rows in every output channel
  at::parallel_for(0, g.n * g.h, 1, [&](int64_t first, int64_t last) {
    std::vector<float> planar(static_cast<size_t>(g.c * g.w));
    std::vector<float> expanded(static_cast<size_t>(g.c * padded));
    for (int64_t r = first; r < last; ++r) {
      const int64_t n = r / g.h, h = r % g.h;
      expand(g, static_cast<const uint8_t*>(g.src) + r * g.w * g.c * elem, padded, planar.data(),
             expanded.data());
      for (int64_t oc = 0; oc < g.o; ++oc)
        for (int64_t i = 0; i < g.kh; ++i)
          paint(expanded.data(), g.pattern + (oc * g.kh + i) * g.c * L, g.c, padded, ow,
                g.scale[oc], g.bias[oc], g.out + ((n * g.o + oc) * oh + h * g.kh + i) * ow);
    }
  });
}

}  // namespace segslim::engine
