#include "engine/concat_affine.h"

#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <type_traits>
#include <vector>

#include "common/error.h"
#include "engine/cpu_features.h"

namespace segslim::engine {

namespace {

// The portable path's loops over the channels, inlined into run_pixels_plain below. The
// pointers are __restrict: an int8 store may alias anything as far as the compiler knows, and
// would keep these loops scalar.

// x = dequantized s (kAdd false) or x += it (kAdd true), n values.
template <bool kAdd, typename T>
SEGSLIM_INLINE void read(const T* __restrict s, float k, float* __restrict x, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    const float v = std::is_same_v<T, float> ? static_cast<float>(s[c]) : s[c] * k;
    x[c] = kAdd ? x[c] + v : v;
  }
}
template <bool kAdd>
SEGSLIM_INLINE void read_half(const uint16_t* __restrict s, float* __restrict x, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    const float v = c10::detail::fp16_ieee_to_fp32_value(s[c]);
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
    case ElemType::kF16:
      return read_half<kAdd>(static_cast<const uint16_t*>(in.data) + at, x, n);
  }
}
// x = fake_quant(x) at scale q.scale in q.type's range (ConcatQuant).
template <typename Q>
SEGSLIM_INLINE void fake_quantize(float inv, float scale, float* __restrict x, int64_t n) {
  for (int64_t c = 0; c < n; ++c) x[c] = saturate_round<Q>(x[c] * inv) * scale;
}
SEGSLIM_INLINE void fake_quantize(const ConcatQuant& q, float* x, int64_t n) {
  if (q.type == ElemType::kU8) return fake_quantize<uint8_t>(1.f / q.scale, q.scale, x, n);
  fake_quantize<int8_t>(1.f / q.scale, q.scale, x, n);
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
SEGSLIM_INLINE void store_f16(const float* __restrict x, uint16_t* __restrict o, int64_t n) {
  for (int64_t c = 0; c < n; ++c) o[c] = c10::detail::fp16_ieee_from_fp32_value(x[c]);
}
SEGSLIM_INLINE void store_s8(const float* __restrict x, float inv, int8_t* __restrict o,
                             int64_t n) {
  for (int64_t c = 0; c < n; ++c) o[c] = saturate_round<int8_t>(x[c] * inv);
}
SEGSLIM_INLINE void store_u8(const float* __restrict x, float inv, uint8_t* __restrict o,
                             int64_t n) {
  for (int64_t c = 0; c < n; ++c) o[c] = saturate_round<uint8_t>(x[c] * inv);
}

// A tile's pieces, pixel by pixel, into x (tile_pixels rows of all channels): the portable
// path. (AVX2 clone: the int8 conversions vectorize there where a piece has enough channels.)
__attribute__((target_clones("avx2", "default"))) void read_tile_plain(const ConcatAffineArgs& args,
                                                                       int64_t t0, int64_t pixels,
                                                                       float* x) {
  for (int64_t px = t0; px < t0 + pixels; ++px)
    for (const auto& p : args.pieces) {
      read<false>(p, px * p.channels, x, p.channels);
      x += p.channels;
    }
}

// Pixels [begin, end) tile by tile: the pieces into x, then the per-channel steps over the
// whole tile as long flat loops, compiled for AVX2 besides the baseline (which has no vector
// rounding for the quantized stores).
__attribute__((target_clones("avx2", "default"))) void run_pixels_plain(
    const ConcatAffineArgs& args, const AffineOutput* f32_out, int64_t begin, int64_t end,
    float* scratch) {
  const ConcatAffineCoefficients& k = *args.coefficients;
  const int64_t C = k.channels;
  for (int64_t t0 = begin; t0 < end; t0 += k.tile_pixels) {
    const int64_t n = std::min(k.tile_pixels, end - t0) * C;  // elements in this tile
    float* x = f32_out ? static_cast<float*>(f32_out->data) + t0 * C : scratch;
    read_tile_plain(args, t0, n / C, x);
    if (k.concat_quant.scale > 0.f) fake_quantize(k.concat_quant, x, n);
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
        case ElemType::kF16:
          store_f16(x, static_cast<uint16_t*>(o.data) + t0 * C, n);
          break;
      }
    }
  }
}

// The AVX-512 path holds 16 channels of a pixel in a register. It takes a tile of up to kTile
// pixels one 16-channel chunk of the concatenation at a time, so that the chunk's masks and
// coefficients stay put while the pixels go by, in passes over a buffer of kTile registers in
// L1: the chunk's values gathered from its pieces (the last piece's pass also doing the
// residual and the tail's math), then each output's stores. Each pass is a loop compiled for
// one element type. (One loop doing it all, branching on the pieces', residual's and outputs'
// types at every pixel, cost more than its arithmetic: `segslim bench --vs` of ESPNet-CamVid's
// FP32 and INT8 models went from 2.70x to 2.92x with the passes, its blocks' tails being
// these.) A chunk takes its channels from one or more pieces (ESPNet's are 25 or 28 wide): each
// such run is one masked load into its lanes.
#define SEGSLIM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
constexpr int64_t kTile = 32;  // pixels: all their channels stay in L1 between chunks

struct Segment {
  size_t piece;    // index into the pieces
  int64_t offset;  // element of lane 0, relative to the pixel's first in the piece
  __mmask16 mask;  // the lanes this run fills
};
struct Chunk {
  std::vector<Segment> segments;
};
std::vector<Chunk> chunks_of(const std::vector<AffineInput>& pieces, int64_t channels) {
  std::vector<Chunk> chunks(static_cast<size_t>((channels + 15) / 16));
  int64_t at = 0;  // the piece's first channel in the concatenation
  for (size_t i = 0; i < pieces.size(); ++i) {
    const AffineInput& p = pieces[i];
    for (int64_t c = 0; c < p.channels;) {
      const int64_t g = at + c, lane = g % 16, count = std::min(16 - lane, p.channels - c);
      chunks[g / 16].segments.push_back(
          {i, c - lane, static_cast<__mmask16>(((1u << count) - 1) << lane)});
      c += count;
    }
    at += p.channels;
  }
  return chunks;
}

// The element at index `at` (which may lie before the data: only lanes under the mask read).
template <typename T>
SEGSLIM_INLINE T* element(uintptr_t data, int64_t at) {
  return reinterpret_cast<T*>(data + static_cast<uintptr_t>(at * static_cast<int64_t>(sizeof(T))));
}

// 16 values of type T under mask m as float: loaded, or converted (int8: and scaled); lanes off
// the mask are 0. (The maskz forms: GCC 12 warns about the plain ones' undefined operand.)
template <ElemType T>
SEGSLIM_AVX512 SEGSLIM_INLINE __m512 load_as(uintptr_t data, int64_t at, __mmask16 m,
                                             __m512 scale) {
  if constexpr (T == ElemType::kF32) {
    return _mm512_maskz_loadu_ps(m, element<const float>(data, at));
  } else if constexpr (T == ElemType::kF16) {
    return _mm512_maskz_cvtph_ps(m, _mm256_maskz_loadu_epi16(m, element<const uint16_t>(data, at)));
  } else {
    const __m128i q = _mm_maskz_loadu_epi8(m, element<const int8_t>(data, at));
    const __m512i i32 =
        T == ElemType::kS8 ? _mm512_maskz_cvtepi8_epi32(m, q) : _mm512_maskz_cvtepu8_epi32(m, q);
    return _mm512_maskz_mul_ps(m, _mm512_maskz_cvtepi32_ps(m, i32), scale);
  }
}

// y's lanes under m as type T (int8: y * inv rounded half to even, saturated; a float clamp
// at the top only, since the conversion turns anything below the int32 range into INT32_MIN,
// which saturates to the bottom anyway).
template <ElemType T>
SEGSLIM_AVX512 SEGSLIM_INLINE void store_as(uintptr_t data, int64_t at, __mmask16 m, __m512 y,
                                            __m512 inv) {
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  if constexpr (T == ElemType::kF32) {
    _mm512_mask_storeu_ps(element<float>(data, at), m, y);
  } else if constexpr (T == ElemType::kF16) {
    _mm256_mask_storeu_epi16(element<uint16_t>(data, at), m, _mm512_maskz_cvtps_ph(m, y, kRound));
  } else if constexpr (T == ElemType::kS8) {
    const __m512 q = _mm512_maskz_min_ps(m, _mm512_maskz_mul_ps(m, y, inv), _mm512_set1_ps(127.f));
    _mm_mask_storeu_epi8(
        element<int8_t>(data, at), m,
        _mm512_maskz_cvtsepi32_epi8(m, _mm512_maskz_cvt_roundps_epi32(m, q, kRound)));
  } else {  // u8: clamped at 0 (the unsigned saturation reads negatives as large)
    const __m512 q = _mm512_maskz_max_ps(m, _mm512_maskz_mul_ps(m, y, inv), _mm512_setzero_ps());
    _mm_mask_storeu_epi8(
        element<uint8_t>(data, at), m,
        _mm512_maskz_cvtusepi32_epi8(m, _mm512_maskz_cvt_roundps_epi32(m, q, kRound)));
  }
}

// The per-chunk constants of the AVX-512 path: coefficients, the concatenation's quantization.
struct ChunkMath {
  __mmask16 m;  // the chunk's lanes within the channels
  __m512 a, b, slope;
  bool prelu, quantize_concat;
  __m512 concat_inv, concat_scale, concat_lo, concat_hi;
};

// The concatenation's 16 values x of a pixel through the tail: fake-quantized (when the model
// quantizes the concatenation), plus the residual r, affine, PRelu.
SEGSLIM_AVX512 SEGSLIM_INLINE __m512 tail_math(const ChunkMath& k, __m512 x, const __m512* r) {
  if (k.quantize_concat) {
    const __m512 q = _mm512_maskz_min_ps(
        k.m, _mm512_maskz_max_ps(k.m, _mm512_maskz_mul_ps(k.m, x, k.concat_inv), k.concat_lo),
        k.concat_hi);
    x = _mm512_maskz_mul_ps(
        k.m, _mm512_maskz_roundscale_ps(k.m, q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
        k.concat_scale);
  }
  if (r) x = _mm512_add_ps(x, *r);
  __m512 y = _mm512_fmadd_ps(k.a, x, k.b);
  if (k.prelu)  // y >= 0 ? y : slope * y
    y = _mm512_mask_mul_ps(y, _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_LT_OQ), y, k.slope);
  return y;
}

// A tensor as the passes read or write it: its data, the elements of a pixel, its scale.
struct Lanes {
  uintptr_t data;
  int64_t stride;
  float scale;  // a load's dequantization scale, a store's 1 / scale
};

// The passes over pixels [t0, t0 + n) of a chunk starting at element `at` of each pixel (x: n
// registers). Gather: a segment's lanes into x (the first segment sets all lanes); the last
// segment's pass (kMath) also takes the values through the tail's math, with the residual's
// lanes (res, from its element c0 of a pixel, type R) when kResidual.
template <bool kFirst, bool kMath, bool kResidual, ElemType R>
struct GatherPass {
  template <ElemType T>
  SEGSLIM_AVX512 static void run(const Lanes in, const int64_t at, const __mmask16 m,
                                 const Lanes res, const int64_t c0, const ChunkMath& k,
                                 const int64_t t0, const int64_t n, __m512* __restrict x) {
    const ChunkMath kk = k;  // a copy no store can alias
    const __m512 scale = _mm512_set1_ps(in.scale), res_scale = _mm512_set1_ps(res.scale);
    for (int64_t i = 0; i < n; ++i) {
      __m512 v = load_as<T>(in.data, (t0 + i) * in.stride + at, m, scale);
      if constexpr (!kFirst) v = _mm512_mask_mov_ps(x[i], m, v);
      if constexpr (kMath && kResidual) {
        const __m512 r = load_as<R>(res.data, (t0 + i) * res.stride + c0, kk.m, res_scale);
        v = tail_math(kk, v, &r);
      } else if constexpr (kMath) {
        v = tail_math(kk, v, nullptr);
      }
      x[i] = v;
    }
  }
};
// An output's lanes (out.scale: 1 / its scale).
struct StorePass {
  template <ElemType T>
  SEGSLIM_AVX512 static void run(const Lanes out, const int64_t at, const __mmask16 m,
                                 const int64_t t0, const int64_t n, const __m512* __restrict y) {
    const __m512 inv = _mm512_set1_ps(out.scale);
    for (int64_t i = 0; i < n; ++i) store_as<T>(out.data, (t0 + i) * out.stride + at, m, y[i], inv);
  }
};

// Pass::run<type>(args...), the type chosen at run time.
template <typename Pass, typename... Args>
SEGSLIM_AVX512 void for_type(ElemType type, Args&&... args) {
  switch (type) {
    case ElemType::kF32:
      return Pass::template run<ElemType::kF32>(args...);
    case ElemType::kF16:
      return Pass::template run<ElemType::kF16>(args...);
    case ElemType::kS8:
      return Pass::template run<ElemType::kS8>(args...);
    case ElemType::kU8:
      return Pass::template run<ElemType::kU8>(args...);
  }
}

// The last segment's pass with the residual: the residual's type R fixed here, the piece's
// chosen at run time.
template <bool kFirst>
struct LastWithResidual {
  template <ElemType R, typename... Args>
  SEGSLIM_AVX512 static void run(ElemType piece, Args&&... args) {
    for_type<GatherPass<kFirst, true, true, R>>(piece, args...);
  }
};

// The last segment's pass: its piece's and the residual's types chosen at run time.
template <bool kFirst>
SEGSLIM_AVX512 void gather_last(ElemType piece, const AffineInput& residual, const Lanes in,
                                const int64_t at, const __mmask16 m, const Lanes res,
                                const int64_t c0, const ChunkMath& k, const int64_t t0,
                                const int64_t n, __m512* x) {
  if (!residual.data)
    return for_type<GatherPass<kFirst, true, false, ElemType::kF32>>(piece, in, at, m, res, c0, k,
                                                                     t0, n, x);
  for_type<LastWithResidual<kFirst>>(residual.type, piece, in, at, m, res, c0, k, t0, n, x);
}

SEGSLIM_AVX512 void run_pixels_avx512(const ConcatAffineArgs& args,
                                      const std::vector<Chunk>& chunks, int64_t begin,
                                      int64_t end) {
  const ConcatAffineCoefficients& coef = *args.coefficients;
  const int64_t C = coef.channels;
  const ConcatQuant& cq = coef.concat_quant;
  const bool concat_u8 = cq.type == ElemType::kU8;
  ChunkMath k;
  k.prelu = !coef.slope.empty();
  k.quantize_concat = cq.scale > 0.f;
  k.concat_inv = _mm512_set1_ps(k.quantize_concat ? 1.f / cq.scale : 0.f);
  k.concat_scale = _mm512_set1_ps(cq.scale);
  k.concat_lo = _mm512_set1_ps(concat_u8 ? 0.f : -128.f);
  k.concat_hi = _mm512_set1_ps(concat_u8 ? 255.f : 127.f);
  const auto lanes = [](const void* data, int64_t stride, float scale) {
    return Lanes{reinterpret_cast<uintptr_t>(data), stride, scale};
  };
  const Lanes residual = lanes(args.residual.data, C, args.residual.scale);
  std::vector<Lanes> outs;
  for (const auto& o : args.outs) outs.push_back(lanes(o.data, C, 1.f / o.scale));
  __m512 x[kTile];
  for (int64_t t0 = begin; t0 < end; t0 += kTile) {
    const int64_t n = std::min(kTile, end - t0);
    for (int64_t j = 0; j < static_cast<int64_t>(chunks.size()); ++j) {
      const int64_t c0 = j * 16;
      k.m = C - c0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (C - c0)) - 1);
      k.a = _mm512_maskz_loadu_ps(k.m, coef.a.data() + c0);
      k.b = _mm512_maskz_loadu_ps(k.m, coef.b.data() + c0);
      k.slope = k.prelu ? _mm512_maskz_loadu_ps(k.m, coef.slope.data() + c0) : _mm512_setzero_ps();
      const std::vector<Segment>& segments = chunks[static_cast<size_t>(j)].segments;
      for (size_t i = 0; i < segments.size(); ++i) {
        const Segment& sg = segments[i];
        const AffineInput& p = args.pieces[sg.piece];
        const Lanes in = lanes(p.data, p.channels, p.scale);
        if (i + 1 < segments.size()) {  // gather only
          if (i == 0) {
            for_type<GatherPass<true, false, false, ElemType::kF32>>(p.type, in, sg.offset, sg.mask,
                                                                     residual, c0, k, t0, n, x);
          } else {
            for_type<GatherPass<false, false, false, ElemType::kF32>>(
                p.type, in, sg.offset, sg.mask, residual, c0, k, t0, n, x);
          }
        } else if (i == 0) {
          gather_last<true>(p.type, args.residual, in, sg.offset, sg.mask, residual, c0, k, t0, n,
                            x);
        } else {
          gather_last<false>(p.type, args.residual, in, sg.offset, sg.mask, residual, c0, k, t0, n,
                             x);
        }
      }
      for (size_t o = 0; o < outs.size(); ++o)
        for_type<StorePass>(args.outs[o].type, outs[o], c0, k.m, t0, n, x);
    }
  }
}

#undef SEGSLIM_AVX512

}  // namespace

ConcatAffineCoefficients::ConcatAffineCoefficients(const std::vector<float>& a_c,
                                                   const std::vector<float>& b_c,
                                                   const std::vector<float>& slope_c,
                                                   ConcatQuant quant)
    : channels(static_cast<int64_t>(a_c.size())),
      tile_pixels(std::max<int64_t>(1, 2048 / std::max<int64_t>(channels, 1))),
      concat_quant(quant) {
  SEGSLIM_CHECK(quant.scale >= 0.f && (quant.type == ElemType::kS8 || quant.type == ElemType::kU8),
                "concat_affine: the concatenation's quantization needs a scale >= 0 (0: none) "
                "and an int8 type, not scale ",
                quant.scale);
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

namespace {

void check_args(const ConcatAffineArgs& args) {
  SEGSLIM_CHECK(args.coefficients, "concat_affine_nhwc: no coefficients");
  const int64_t C = args.coefficients->channels;
  int64_t sum = 0;
  for (const auto& p : args.pieces) sum += p.channels;
  SEGSLIM_CHECK(sum == C, "concat_affine_nhwc: the pieces have ", sum, " channels, the output ", C);
  SEGSLIM_CHECK(!args.residual.data || args.residual.channels == C,
                "concat_affine_nhwc: the residual has ", args.residual.channels,
                " channels, the output ", C);
  for (const auto& o : args.outs)
    SEGSLIM_CHECK(o.type == ElemType::kF32 || o.type == ElemType::kF16 || o.scale > 0,
                  "concat_affine_nhwc: output scale ", o.scale, " must be positive");
}

}  // namespace

struct ConcatAffineRows::Prepared {
  bool avx512;
  std::vector<Chunk> chunks;  // the AVX-512 path's
};

ConcatAffineRows::ConcatAffineRows(const ConcatAffineArgs& layout)
    : p_(std::make_unique<Prepared>()) {
  check_args(layout);
  p_->avx512 = use_avx512();
  if (p_->avx512) p_->chunks = chunks_of(layout.pieces, layout.coefficients->channels);
}

ConcatAffineRows::~ConcatAffineRows() = default;

void ConcatAffineRows::run(const ConcatAffineArgs& args, int64_t begin, int64_t end) const {
  if (p_->avx512) return run_pixels_avx512(args, p_->chunks, begin, end);
  // The portable path's float output (when there is one) is its scratch: computed in place.
  const AffineOutput* f32_out = nullptr;
  for (const auto& o : args.outs)
    if (o.type == ElemType::kF32 && !f32_out) f32_out = &o;
  const ConcatAffineCoefficients& k = *args.coefficients;
  std::vector<float> scratch(f32_out ? 0 : static_cast<size_t>(k.tile_pixels * k.channels));
  run_pixels_plain(args, f32_out, begin, end, scratch.data());
}

void concat_affine_nhwc(const ConcatAffineArgs& args) {
  const ConcatAffineRows rows(args);
  at::parallel_for(0, args.pixels, args.coefficients->tile_pixels,
                   [&](int64_t begin, int64_t end) { rows.run(args, begin, end); });
}

}  // namespace segslim::engine
