#include "engine/concat_affine.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "common/error.h"
#include "engine/cpu_features.h"

namespace segslim::engine {

namespace {

// Per-pixel loops over the channels, inlined into run_pixels below. The pointers are
// __restrict: an int8 store may alias anything as far as the compiler knows, and would keep
// these loops scalar.

// x = dequantized s (kAdd false) or x += it (kAdd true), n values.
template <bool kAdd, typename T>
SEGSLIM_INLINE void read(const T* __restrict s, float k, float* __restrict x, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    const float v = std::is_same_v<T, float> ? static_cast<float>(s[c]) : s[c] * k;
    x[c] = kAdd ? x[c] + v : v;
  }
}
// n values of `in` from element `at` on.
template <bool kAdd>
SEGSLIM_INLINE void read(const AffineInput& in, int64_t at, float* x, int64_t n) {
  switch (in.type) {
    case ElemType::kF32:
      return read<kAdd>(static_cast<const float*>(in.data) + at, in.scale, x, n);
    case ElemType::kS8:
      return read<kAdd>(static_cast<const int8_t*>(in.data) + at, in.scale, x, n);
    case ElemType::kU8:
      return read<kAdd>(static_cast<const uint8_t*>(in.data) + at, in.scale, x, n);
  }
}
SEGSLIM_INLINE void affine(const float* __restrict a, const float* __restrict b,
                           float* __restrict x, int64_t n) {
  for (int64_t c = 0; c < n; ++c) x[c] = a[c] * x[c] + b[c];
}
SEGSLIM_INLINE void affine_prelu(const float* __restrict a, const float* __restrict b,
                                 const float* __restrict slope, float* __restrict x, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    const float y = a[c] * x[c] + b[c], neg = slope[c] * y;  // both: a select, no branch
    x[c] = y >= 0.f ? y : neg;
  }
}
SEGSLIM_INLINE void store(const float* __restrict x, float* __restrict o, int64_t n) {
  for (int64_t c = 0; c < n; ++c) o[c] = x[c];
}
SEGSLIM_INLINE void store_s8(const float* __restrict x, float inv, int8_t* __restrict o,
                             int64_t n) {
  for (int64_t c = 0; c < n; ++c)
    o[c] = static_cast<int8_t>(std::clamp(std::nearbyint(x[c] * inv), -128.f, 127.f));
}
SEGSLIM_INLINE void store_u8(const float* __restrict x, float inv, uint8_t* __restrict o,
                             int64_t n) {
  for (int64_t c = 0; c < n; ++c)
    o[c] = static_cast<uint8_t>(std::clamp(std::nearbyint(x[c] * inv), 0.f, 255.f));
}

// A tile's pieces, pixel by pixel, into x (tile_pixels rows of all channels). A piece's few
// channels (ESPNet: 25 or 28) are too short a loop for the compiler's vectorization: int8
// pieces went scalar (its loop of 64 int8 per vector never runs on 25), so with AVX-512 the
// reader loads 16 channels at a time under a mask instead, tails included.
using ReadTile = void (*)(const ConcatAffineArgs&, int64_t, int64_t, float*);

// (AVX2 clone: the int8 conversions vectorize there where a piece has enough channels.)
__attribute__((target_clones("avx2", "default"))) void read_tile_plain(const ConcatAffineArgs& args,
                                                                       int64_t t0, int64_t pixels,
                                                                       float* x) {
  for (int64_t px = t0; px < t0 + pixels; ++px)
    for (const auto& p : args.pieces) {
      read<false>(p, px * p.channels, x, p.channels);
      x += p.channels;
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void read_tile_avx512(
    const ConcatAffineArgs& args, int64_t t0, int64_t pixels, float* x) {
  for (int64_t px = t0; px < t0 + pixels; ++px)
    for (const auto& p : args.pieces) {
      const int64_t n = p.channels, at = px * n;
      const __m512 k = _mm512_set1_ps(p.scale);
      for (int64_t c = 0; c < n; c += 16) {
        const __mmask16 m = n - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - c)) - 1);
        __m512 v;  // (maskz conversions: GCC 12 warns about the plain ones' undefined operand)
        if (p.type == ElemType::kF32) {
          v = _mm512_maskz_loadu_ps(m, static_cast<const float*>(p.data) + at + c);
        } else {
          const __m128i q = _mm_maskz_loadu_epi8(m, static_cast<const int8_t*>(p.data) + at + c);
          const __m512i i32 = p.type == ElemType::kS8 ? _mm512_maskz_cvtepi8_epi32(m, q)
                                                      : _mm512_maskz_cvtepu8_epi32(m, q);
          v = _mm512_mul_ps(k, _mm512_maskz_cvtepi32_ps(m, i32));
        }
        _mm512_mask_storeu_ps(x + c, m, v);
      }
      x += n;
    }
}

// Pixels [begin, end) tile by tile. Past the reads, the per-channel steps run over the whole
// tile: long flat loops, compiled for x86-64-v4 (AVX-512) and AVX2 besides the baseline and
// picked at run time (the baseline x86-64 has no vector rounding for the quantized stores).
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void run_pixels(
    const ConcatAffineArgs& args, ReadTile read_tile, const AffineOutput* f32_out, int64_t begin,
    int64_t end, float* scratch) {
  const ConcatAffineCoefficients& k = *args.coefficients;
  const int64_t C = k.channels;
  for (int64_t t0 = begin; t0 < end; t0 += k.tile_pixels) {
    const int64_t n = std::min(k.tile_pixels, end - t0) * C;  // elements in this tile
    float* x = f32_out ? static_cast<float*>(f32_out->data) + t0 * C : scratch;
    read_tile(args, t0, n / C, x);
    if (args.residual.data) read<true>(args.residual, t0 * C, x, n);
    if (!k.slope.empty()) {
      affine_prelu(k.a.data(), k.b.data(), k.slope.data(), x, n);
    } else {
      affine(k.a.data(), k.b.data(), x, n);
    }
    for (const auto& o : args.outs) {
      if (&o == f32_out) continue;
      switch (o.type) {
        case ElemType::kF32:
          store(x, static_cast<float*>(o.data) + t0 * C, n);
          break;
        case ElemType::kS8:
          store_s8(x, 1.f / o.scale, static_cast<int8_t*>(o.data) + t0 * C, n);
          break;
        case ElemType::kU8:
          store_u8(x, 1.f / o.scale, static_cast<uint8_t*>(o.data) + t0 * C, n);
          break;
      }
    }
  }
}

}  // namespace

ConcatAffineCoefficients::ConcatAffineCoefficients(const std::vector<float>& a_c,
                                                   const std::vector<float>& b_c,
                                                   const std::vector<float>& slope_c)
    : channels(static_cast<int64_t>(a_c.size())),
      tile_pixels(std::max<int64_t>(1, 2048 / std::max<int64_t>(channels, 1))) {
  SEGSLIM_CHECK(
      channels > 0 && b_c.size() == a_c.size() && (slope_c.empty() || slope_c.size() == a_c.size()),
      "concat_affine: coefficients for ", a_c.size(), " channels, ", b_c.size(), " offsets and ",
      slope_c.size(), " slopes");
  for (int64_t p = 0; p < tile_pixels; ++p) {
    a.insert(a.end(), a_c.begin(), a_c.end());
    b.insert(b.end(), b_c.begin(), b_c.end());
    slope.insert(slope.end(), slope_c.begin(), slope_c.end());
  }
}

void concat_affine_nhwc(const ConcatAffineArgs& args) {
  SEGSLIM_CHECK(args.coefficients, "concat_affine_nhwc: no coefficients");
  const int64_t C = args.coefficients->channels, tile = args.coefficients->tile_pixels;
  int64_t sum = 0;
  for (const auto& p : args.pieces) sum += p.channels;
  SEGSLIM_CHECK(sum == C, "concat_affine_nhwc: the pieces have ", sum, " channels, the output ", C);
  SEGSLIM_CHECK(!args.residual.data || args.residual.channels == C,
                "concat_affine_nhwc: the residual has ", args.residual.channels,
                " channels, the output ", C);
  for (const auto& o : args.outs)
    SEGSLIM_CHECK(o.type == ElemType::kF32 || o.scale > 0, "concat_affine_nhwc: output scale ",
                  o.scale, " must be positive");
  // The float output (when there is one) is the scratch: computed in place.
  const AffineOutput* f32_out = nullptr;
  for (const auto& o : args.outs)
    if (o.type == ElemType::kF32 && !f32_out) f32_out = &o;
  const ReadTile read_tile = use_avx512() ? read_tile_avx512 : read_tile_plain;
  at::parallel_for(0, args.pixels, tile, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(f32_out ? 0 : static_cast<size_t>(tile * C));
    run_pixels(args, read_tile, f32_out, begin, end, scratch.data());
  });
}

}  // namespace segslim::engine
