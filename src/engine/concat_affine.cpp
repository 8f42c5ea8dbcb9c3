#include "engine/concat_affine.h"

#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <immintrin.h>

#include <algorithm>
#include <array>
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

// The AVX-512 path computes each 16 output channels of a pixel in one register, from the
// loads to the stores: no scratch rows, no pass per step (ESPNet-CamVid INT8, 2 threads, the
// ConcatAffine steps of `segslim bench --profile 200`: 2.9 -> 2.3 ms; the step also waits on
// reading its float pieces, so less than the arithmetic saved). A 16-channel chunk of the
// concatenation takes its channels from one or more pieces (ESPNet's are 25 or 28 wide): each
// such run is one masked load into its lanes. The chunks are the outer loop over a tile of
// pixels, so their masks, runs and coefficients stay put while the pixels go by.
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
SEGSLIM_INLINE const T* element(const void* data, int64_t at) {
  return reinterpret_cast<const T*>(reinterpret_cast<uintptr_t>(data) + at * sizeof(T));
}

// 16 values under mask m as float: loaded, or int8 converted and scaled (lanes off the mask: 0;
// the maskz forms throughout: GCC 12 warns about the plain ones' undefined operand).
__attribute__((target("avx512f,avx512bw,avx512vl"))) SEGSLIM_INLINE __m512
load16(const AffineInput& in, int64_t at, __mmask16 m) {
  if (in.type == ElemType::kF32) return _mm512_maskz_loadu_ps(m, element<float>(in.data, at));
  if (in.type == ElemType::kF16)
    return _mm512_maskz_cvtph_ps(m, _mm256_maskz_loadu_epi16(m, element<uint16_t>(in.data, at)));
  const __m128i q = _mm_maskz_loadu_epi8(m, element<int8_t>(in.data, at));
  const __m512i i32 = in.type == ElemType::kS8 ? _mm512_maskz_cvtepi8_epi32(m, q)
                                               : _mm512_maskz_cvtepu8_epi32(m, q);
  return _mm512_maskz_mul_ps(m, _mm512_maskz_cvtepi32_ps(m, i32), _mm512_set1_ps(in.scale));
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
__attribute__((target("avx512f,avx512bw,avx512vl"))) SEGSLIM_INLINE __m512
tail_math(const ChunkMath& k, __m512 x, const __m512* r) {
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

// An output as the pixel loops hold it: the chunk's lane 0 of pixel 0, and the inverse scale.
struct OutLanes {
  uintptr_t at;
  ElemType type;
  float inv;  // 1 / scale (a float, not a register: a std::vector of these is 16-byte aligned)
};

// y's lanes under m into o at pixel px (`channels` elements a pixel): float, or clamped to the
// type's range and rounded half to even (clamping to integer bounds first gives the same as
// after). Plain stores where all 16 lanes are written.
__attribute__((target("avx512f,avx512bw,avx512vl"))) SEGSLIM_INLINE void store16(
    const OutLanes& o, int64_t px, int64_t channels, __mmask16 m, __m512 y) {
  if (o.type == ElemType::kF32) {
    float* d = reinterpret_cast<float*>(o.at + static_cast<uintptr_t>(px * channels * 4));
    if (m == 0xffff) {
      _mm512_storeu_ps(d, y);
    } else {
      _mm512_mask_storeu_ps(d, m, y);
    }
    return;
  }
  if (o.type == ElemType::kF16) {
    auto* d = reinterpret_cast<uint16_t*>(o.at + static_cast<uintptr_t>(px * channels * 2));
    const __m256i h =
        _mm512_maskz_cvtps_ph(__mmask16(0xffff), y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (m == 0xffff) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), h);
    } else {
      _mm256_mask_storeu_epi16(d, m, h);
    }
    return;
  }
  const bool u8 = o.type == ElemType::kU8;
  __m512 q = _mm512_mul_ps(y, _mm512_set1_ps(o.inv));
  q = _mm512_maskz_min_ps(m, _mm512_maskz_max_ps(m, q, _mm512_set1_ps(u8 ? 0.f : -128.f)),
                          _mm512_set1_ps(u8 ? 255.f : 127.f));
  const __m128i v = _mm512_maskz_cvtepi32_epi8(
      m, _mm512_maskz_cvt_roundps_epi32(m, q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  int8_t* d = reinterpret_cast<int8_t*>(o.at + static_cast<uintptr_t>(px * channels));
  if (m == 0xffff) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d), v);
  } else {
    _mm_mask_storeu_epi8(d, m, v);
  }
}

// Pixels [t0, t1) of one chunk that a single piece fills (every chunk of a fused block's tail,
// most of a BR module's), with up to kMaxFastOuts outputs. Everything the loop reads is an
// argument or a local here, so it stays in registers: in the general loop below, each int8
// store (which may alias anything, as far as the compiler knows) made it reload the pieces',
// segments' and outputs' fields for every pixel, which cost as much as the arithmetic.
constexpr size_t kMaxFastOuts = 3;
__attribute__((target("avx512f,avx512bw,avx512vl"))) void chunk_one_piece(
    const ChunkMath k, const AffineInput piece, const Segment seg, const AffineInput residual,
    const int64_t c0, const int64_t channels, const std::array<OutLanes, kMaxFastOuts> outs,
    const size_t n_outs, const int64_t t0, const int64_t t1) {
  for (int64_t px = t0; px < t1; ++px) {
    const __m512 x = load16(piece, px * piece.channels + seg.offset, seg.mask);
    __m512 r;
    if (residual.data) r = load16(residual, px * channels + c0, k.m);
    const __m512 y = tail_math(k, x, residual.data ? &r : nullptr);
    for (size_t o = 0; o < kMaxFastOuts; ++o)
      if (o < n_outs) store16(outs[o], px, channels, k.m, y);
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void run_pixels_avx512(
    const ConcatAffineArgs& args, const std::vector<Chunk>& chunks, int64_t begin, int64_t end) {
  const ConcatAffineCoefficients& coef = *args.coefficients;
  const int64_t C = coef.channels;
  const AffineInput* residual = args.residual.data ? &args.residual : nullptr;
  const ConcatQuant& cq = coef.concat_quant;
  const bool concat_u8 = cq.type == ElemType::kU8;
  ChunkMath k;
  k.prelu = !coef.slope.empty();
  k.quantize_concat = cq.scale > 0.f;
  k.concat_inv = _mm512_set1_ps(k.quantize_concat ? 1.f / cq.scale : 0.f);
  k.concat_scale = _mm512_set1_ps(cq.scale);
  k.concat_lo = _mm512_set1_ps(concat_u8 ? 0.f : -128.f);
  k.concat_hi = _mm512_set1_ps(concat_u8 ? 255.f : 127.f);
  std::vector<OutLanes> outs, chunk_outs(args.outs.size());  // the latter: at the chunk's c0
  for (const auto& o : args.outs)
    outs.push_back({reinterpret_cast<uintptr_t>(o.data), o.type, 1.f / o.scale});
  constexpr int64_t kTile = 32;  // pixels: all their channels stay in L1 between chunks
  for (int64_t t0 = begin; t0 < end; t0 += kTile) {
    const int64_t t1 = std::min(t0 + kTile, end);
    for (int64_t j = 0; j < static_cast<int64_t>(chunks.size()); ++j) {
      const int64_t c0 = j * 16;
      k.m = C - c0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (C - c0)) - 1);
      k.a = _mm512_maskz_loadu_ps(k.m, coef.a.data() + c0);
      k.b = _mm512_maskz_loadu_ps(k.m, coef.b.data() + c0);
      k.slope = k.prelu ? _mm512_maskz_loadu_ps(k.m, coef.slope.data() + c0) : _mm512_setzero_ps();
      for (size_t o = 0; o < outs.size(); ++o) {
        chunk_outs[o] = outs[o];
        chunk_outs[o].at += static_cast<uintptr_t>(c0 * elem_bytes(outs[o].type));
      }
      const std::vector<Segment>& segments = chunks[j].segments;
      if (segments.size() == 1 && outs.size() <= kMaxFastOuts) {
        std::array<OutLanes, kMaxFastOuts> at{};  // by value: no store can alias it
        std::copy(chunk_outs.begin(), chunk_outs.end(), at.begin());
        chunk_one_piece(k, args.pieces[segments[0].piece], segments[0],
                        residual ? *residual : AffineInput{}, c0, C, at, outs.size(), t0, t1);
        continue;
      }
      for (int64_t px = t0; px < t1; ++px) {
        __m512 x = _mm512_setzero_ps();
        for (const Segment& sg : segments) {
          const AffineInput& piece = args.pieces[sg.piece];
          x = _mm512_mask_mov_ps(x, sg.mask,
                                 load16(piece, px * piece.channels + sg.offset, sg.mask));
        }
        __m512 r;
        if (residual) r = load16(*residual, px * C + c0, k.m);
        const __m512 y = tail_math(k, x, residual ? &r : nullptr);
        for (const OutLanes& o : chunk_outs) store16(o, px, C, k.m, y);
      }
    }
  }
}

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
