#include "engine/bilinear_resize.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "engine/cpu_features.h"

namespace segslim::engine {

namespace {

// Source taps of each output coordinate: x = max(0, (o + 0.5) * in / out - 0.5),
// lo = floor(x), hi = min(lo + 1, in - 1), weight of hi = x - lo. 32-bit indices: the AVX-512
// path loads 16 at a time into a vector.
struct Taps {
  std::vector<int32_t> lo, hi;
  std::vector<float> w;
  int64_t in;
  Taps(int64_t in, int64_t out) : lo(out), hi(out), w(out), in(in) {
    const double scale = static_cast<double>(in) / static_cast<double>(out);
    for (int64_t o = 0; o < out; ++o) {
      const double x = std::max(0.0, (o + 0.5) * scale - 0.5);
      lo[o] = static_cast<int32_t>(std::min<int64_t>(static_cast<int64_t>(x), in - 1));
      hi[o] = static_cast<int32_t>(std::min<int64_t>(lo[o] + 1, in - 1));
      w[o] = static_cast<float>(x - static_cast<double>(lo[o]));
    }
  }
};

// r[x] = src[lo[x]] + w[x] * (src[hi[x]] - src[lo[x]]) for outputs [from, n), the sum as one
// fused multiply-add (std::fma, as the AVX-512 path: every path rounds alike; x86-64-v3 has it
// as an instruction, the baseline as a library call).
__attribute__((target_clones("arch=x86-64-v3", "default"))) void lerp_outputs(
    const float* src, const Taps& t, float* r, int64_t from, int64_t n) {
  for (int64_t x = from; x < n; ++x) {
    const float a = src[t.lo[x]], b = src[t.hi[x]];
    r[x] = std::fma(t.w[x], b - a, a);
  }
}
void lerp_row_plain(const float* src, const Taps& t, float* r, int64_t n) {
  lerp_outputs(src, t, r, 0, n);
}
// The compiler does not vectorize these gathers, so with AVX-512 they are written out.
// Upsampling, 16 outputs read at most 17 neighbouring sources: two vector loads from the
// first of them and a two-register permute each for lo and hi, instead of gathers (several
// times slower); chunks spanning more (downsampling) gather.
__attribute__((target("avx512f"))) void lerp_row_avx512(const float* src, const Taps& t, float* r,
                                                        int64_t n) {
  int64_t x = 0;
  for (; x + 16 <= n; x += 16) {
    const __m512i lo = _mm512_loadu_si512(t.lo.data() + x);
    const __m512i hi = _mm512_loadu_si512(t.hi.data() + x);
    const int64_t base = t.lo[x];
    __m512 a, b;
    if (t.hi[x + 15] - base < 32) {
      const int64_t avail = t.in - base;  // sources from base on: load no further
      const __mmask16 m0 = avail >= 16 ? __mmask16(0xffff) : __mmask16((1u << avail) - 1);
      const __mmask16 m1 = avail >= 32   ? __mmask16(0xffff)
                           : avail <= 16 ? __mmask16(0)
                                         : __mmask16((1u << (avail - 16)) - 1);
      const __m512 v0 = _mm512_maskz_loadu_ps(m0, src + base);
      const __m512 v1 = _mm512_maskz_loadu_ps(m1, src + base + 16);
      const __m512i vb = _mm512_set1_epi32(static_cast<int32_t>(base));
      a = _mm512_permutex2var_ps(v0, _mm512_sub_epi32(lo, vb), v1);
      b = _mm512_permutex2var_ps(v0, _mm512_sub_epi32(hi, vb), v1);
    } else {
      a = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xffff, lo, src, 4);
      b = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xffff, hi, src, 4);
    }
    _mm512_storeu_ps(r + x,
                     _mm512_fmadd_ps(_mm512_loadu_ps(t.w.data() + x), _mm512_sub_ps(b, a), a));
  }
  lerp_outputs(src, t, r, x, n);
}
using LerpFn = void (*)(const float*, const Taps&, float*, int64_t);
LerpFn pick_lerp() { return use_avx512() ? lerp_row_avx512 : lerp_row_plain; }

// o = a + w * (b - a), vectorized like lerp_row.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void blend_row(
    const float* a, const float* b, float w, float* o, int64_t n) {
  for (int64_t x = 0; x < n; ++x) o[x] = a[x] + w * (b[x] - a[x]);
}

// blend_row with non-temporal (streaming) stores: the output goes to memory without first
// being read into the cache (a normal store of a line not in cache reads it: twice the memory
// traffic) and without evicting the source rows. Worth it only when the output is far larger
// than the caches and nothing reads it soon: the network's output map (160 MB at 19x1024x2048;
// `segslim bench --profile` shows its Resize step). Aligns to 64 bytes with plain stores first.
__attribute__((target("avx512f"))) void blend_row_stream_avx512(const float* a, const float* b,
                                                                float w, float* o, int64_t n) {
  int64_t x = 0;
  for (; x < n && (reinterpret_cast<uintptr_t>(o + x) & 63) != 0; ++x)
    o[x] = a[x] + w * (b[x] - a[x]);
  const __m512 vw = _mm512_set1_ps(w);
  for (; x + 16 <= n; x += 16) {
    const __m512 va = _mm512_loadu_ps(a + x), vb = _mm512_loadu_ps(b + x);
    _mm512_stream_ps(o + x, _mm512_fmadd_ps(vw, _mm512_sub_ps(vb, va), va));
  }
  for (; x < n; ++x) o[x] = a[x] + w * (b[x] - a[x]);
}

__attribute__((target("avx2,fma"))) void blend_row_stream_avx2(const float* a, const float* b,
                                                               float w, float* o, int64_t n) {
  int64_t x = 0;
  for (; x < n && (reinterpret_cast<uintptr_t>(o + x) & 31) != 0; ++x)
    o[x] = a[x] + w * (b[x] - a[x]);
  const __m256 vw = _mm256_set1_ps(w);
  for (; x + 8 <= n; x += 8) {
    const __m256 va = _mm256_loadu_ps(a + x), vb = _mm256_loadu_ps(b + x);
    _mm256_stream_ps(o + x, _mm256_fmadd_ps(vw, _mm256_sub_ps(vb, va), va));
  }
  for (; x < n; ++x) o[x] = a[x] + w * (b[x] - a[x]);
}

// The running argmax over channels of one row of n pixels: channel c's values are v (or the
// blend a + w * (b - a), the same expression as blend_row); a strictly larger value takes over,
// so ties keep the first channel.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void max_update_row(
    const float* __restrict v, int32_t c, float* __restrict best, int32_t* __restrict idx,
    int64_t n) {
  for (int64_t x = 0; x < n; ++x) {
    const bool m = v[x] > best[x];
    best[x] = m ? v[x] : best[x];
    idx[x] = m ? c : idx[x];
  }
}
// Class ids of 16 (n <= 16) pixels in each of R consecutive output rows that blend the same
// two interpolated source rows: channel k's scores in row r are a + w[r] * (b - a), with a and
// b at a + k * channel_stride and b + k * channel_stride. Per channel, a and b are loaded once
// and their difference taken once for all R rows (upsampling by f, f rows share them: the
// loads from L2, not the arithmetic, bounded the one-row form); each row keeps its running
// maximum and class in registers, and the R rows are independent chains that hide the
// compare's latency. A strictly larger score takes over (ties keep the first class):
// max(v, best) keeps best on a tie or a NaN score, exactly as the compare. (The maskz forms of
// the intrinsics: GCC 12 warns about the undefined source operand of the plain ones.)
template <int R>
__attribute__((target("avx512f"))) void argmax_blend_rows_avx512(const float* a_row,
                                                                 const float* b_row,
                                                                 int64_t channel_stride, int64_t c,
                                                                 const float* w, int64_t* dst,
                                                                 int64_t dst_stride, int64_t n) {
  const __mmask16 m = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
  __m512 best[R], vw[R];
  __m512i idx[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    best[r] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    idx[r] = _mm512_setzero_si512();
    vw[r] = _mm512_set1_ps(w[r]);
  }
  for (int64_t k = 0; k < c; ++k) {
    const __m512 a = _mm512_maskz_loadu_ps(m, a_row + k * channel_stride);
    const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, b_row + k * channel_stride), a);
    const __m512i vk = _mm512_set1_epi32(static_cast<int32_t>(k));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 v = _mm512_fmadd_ps(vw[r], d, a);
      idx[r] = _mm512_mask_mov_epi32(idx[r], _mm512_cmp_ps_mask(v, best[r], _CMP_GT_OQ), vk);
      best[r] = _mm512_maskz_max_ps(0xffff, v, best[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    int64_t* o = dst + r * dst_stride;
    const __m256i lo8 = _mm512_maskz_extracti64x4_epi64(0xf, idx[r], 0);
    const __m256i hi8 = _mm512_maskz_extracti64x4_epi64(0xf, idx[r], 1);
    _mm512_mask_storeu_epi64(o, static_cast<__mmask8>(m), _mm512_maskz_cvtepi32_epi64(0xff, lo8));
    _mm512_mask_storeu_epi64(o + 8, static_cast<__mmask8>(m >> 8),
                             _mm512_maskz_cvtepi32_epi64(0xff, hi8));
  }
}
constexpr int kMaxBlendRows = 8;
__attribute__((target("avx512f"))) void argmax_blend_avx512(const float* a_row, const float* b_row,
                                                            int64_t channel_stride, int64_t c,
                                                            const float* w, int rows, int64_t* dst,
                                                            int64_t dst_stride, int64_t n) {
  switch (rows) {
#define SEGSLIM_BLEND_ROWS(R) \
  case R:                     \
    return argmax_blend_rows_avx512<R>(a_row, b_row, channel_stride, c, w, dst, dst_stride, n);
    SEGSLIM_BLEND_ROWS(1)
    SEGSLIM_BLEND_ROWS(2)
    SEGSLIM_BLEND_ROWS(3)
    SEGSLIM_BLEND_ROWS(4)
    SEGSLIM_BLEND_ROWS(5)
    SEGSLIM_BLEND_ROWS(6)
    SEGSLIM_BLEND_ROWS(7)
    SEGSLIM_BLEND_ROWS(8)
#undef SEGSLIM_BLEND_ROWS
  }
}
__attribute__((target_clones("arch=x86-64-v3", "default"))) void argmax_blend_plain(
    const float* a_row, const float* b_row, int64_t channel_stride, int64_t c, const float* w,
    int rows, int64_t* dst, int64_t dst_stride, int64_t n) {
  for (int r = 0; r < rows; ++r) {
    float best[16];
    int32_t idx[16] = {};
    std::fill(best, best + 16, -std::numeric_limits<float>::infinity());
    for (int64_t k = 0; k < c; ++k) {
      const float* a = a_row + k * channel_stride;
      const float* b = b_row + k * channel_stride;
      for (int64_t x = 0; x < n; ++x) {
        const float v = std::fma(w[r], b[x] - a[x], a[x]);
        if (v > best[x]) {
          best[x] = v;
          idx[x] = static_cast<int32_t>(k);
        }
      }
    }
    for (int64_t x = 0; x < n; ++x) dst[r * dst_stride + x] = idx[x];
  }
}
using ArgmaxBlendFn = void (*)(const float*, const float*, int64_t, int64_t, const float*, int,
                               int64_t*, int64_t, int64_t);

void store_ids(const int32_t* idx, int64_t* dst, int64_t n) {
  for (int64_t x = 0; x < n; ++x) dst[x] = idx[x];
}

using BlendFn = void (*)(const float*, const float*, float, float*, int64_t);

// Streaming pays off past the last-level cache (32 MB on this project's machines); below it the
// consumer would rather find the output in cache.
constexpr int64_t kStreamMinBytes = int64_t{32} << 20;

BlendFn pick_blend(int64_t out_bytes) {
  if (out_bytes < kStreamMinBytes) return blend_row;
  if (use_avx512()) return blend_row_stream_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return blend_row_stream_avx2;
  return blend_row;
}

// Work item `item` of a resize split into blocks of `block` output rows per plane (image):
// the plane, its output rows [y0, y1) and the source rows [first, last] they blend.
struct RowBlock {
  int64_t plane, y0, y1, first, last;
  RowBlock(const Taps& ty, int64_t item, int64_t blocks, int64_t block)
      : plane(item / blocks),
        y0((item % blocks) * block),
        y1(std::min<int64_t>(y0 + block, static_cast<int64_t>(ty.lo.size()))),
        first(ty.lo[y0]),
        last(ty.hi[y1 - 1]) {}
};

}  // namespace

void resize_bilinear_nchw(const float* src, float* dst, int64_t planes, int64_t in_h, int64_t in_w,
                          int64_t out_h, int64_t out_w) {
  const Taps tx(in_w, out_w), ty(in_h, out_h);
  // Separable: interpolate the source rows horizontally once, then each output row is a blend
  // of two of them. Work items are blocks of output rows of one plane (balanced over threads
  // even when planes are few), each interpolating just the source rows its block reads.
  constexpr int64_t kBlock = 32;
  const int64_t blocks = (out_h + kBlock - 1) / kBlock;
  const BlendFn blend = pick_blend(planes * out_h * out_w * static_cast<int64_t>(sizeof(float)));
  const LerpFn lerp = pick_lerp();
  at::parallel_for(0, planes * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> rows;
    for (int64_t item = begin; item < end; ++item) {
      const RowBlock b(ty, item, blocks, kBlock);
      rows.resize(static_cast<size_t>((b.last - b.first + 1) * out_w));
      const float* s = src + b.plane * in_h * in_w;
      for (int64_t y = b.first; y <= b.last; ++y)
        lerp(s + y * in_w, tx, rows.data() + (y - b.first) * out_w, out_w);
      float* d = dst + b.plane * out_h * out_w;
      for (int64_t y = b.y0; y < b.y1; ++y)
        blend(rows.data() + (ty.lo[y] - b.first) * out_w,
              rows.data() + (ty.hi[y] - b.first) * out_w, ty.w[y], d + y * out_w, out_w);
    }
    _mm_sfence();  // streaming stores are weakly ordered: drain this thread's before the join
  });
}

void argmax_channels_nchw(const float* src, int64_t* dst, int64_t n, int64_t c, int64_t h,
                          int64_t w) {
  // Work items: one row of one image; the channels' rows stream past its running maximum.
  at::parallel_for(0, n * h, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> best(static_cast<size_t>(w));
    std::vector<int32_t> idx(static_cast<size_t>(w));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item / h, y = item % h;
      const float* s = src + i * c * h * w + y * w;
      std::fill(best.begin(), best.end(), -std::numeric_limits<float>::infinity());
      std::fill(idx.begin(), idx.end(), 0);
      for (int64_t k = 0; k < c; ++k)
        max_update_row(s + k * h * w, static_cast<int32_t>(k), best.data(), idx.data(), w);
      store_ids(idx.data(), dst + i * h * w + y * w, w);
    }
  });
}

void resize_bilinear_argmax_nchw(const float* src, int64_t* dst, int64_t n, int64_t c, int64_t in_h,
                                 int64_t in_w, int64_t out_h, int64_t out_w) {
  const Taps tx(in_w, out_w), ty(in_h, out_h);
  // Work items: runs of up to kMaxBlendRows output rows of one image that blend the same two
  // source rows; a thread takes consecutive ones. It keeps two source rows interpolated
  // horizontally, all channels (two slots per channel: c x 2 x out_w floats, 311 KB at
  // 19 x 2048, in the core's L2 cache), sliding down the image: a source row is interpolated
  // once per thread, not once per output row. A run's rows go through argmax_blend_*
  // together, 16 pixels at a time: the scores are never stored.
  std::vector<int64_t> run_start;  // output row where each run begins; then out_h
  for (int64_t y = 0; y < out_h; ++y)
    if (y == 0 || ty.lo[y] != ty.lo[y - 1] || ty.hi[y] != ty.hi[y - 1] ||
        y - run_start.back() == kMaxBlendRows)
      run_start.push_back(y);
  const int64_t runs = static_cast<int64_t>(run_start.size());
  run_start.push_back(out_h);
  // A slot's row padded to the next cache line and, where the channel stride is then a
  // multiple of 1 KB, one line more: channels a power of two apart would all map to the same
  // L1 sets and evict each other while argmax_blend reads every channel at one x.
  const int64_t slot = (out_w + 15) / 16 * 16;
  int64_t channel_stride = 2 * slot;
  if (channel_stride % 256 == 0) channel_stride += 16;
  const LerpFn lerp = pick_lerp();
  const ArgmaxBlendFn argmax_blend = use_avx512() ? argmax_blend_avx512 : argmax_blend_plain;
  at::parallel_for(0, n * runs, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(static_cast<size_t>(c * channel_stride));
    int64_t held[2] = {-1, -1};  // the source row in each slot
    int64_t plane = -1;
    // The slot holding source row y (of `plane`), interpolating it into the slot that does
    // not hold `keep` if it is not there yet.
    auto slot_of = [&](int64_t y, int64_t keep) {
      for (int s = 0; s < 2; ++s)
        if (held[s] == y) return s;
      const int s = held[0] == keep ? 1 : 0;
      for (int64_t k = 0; k < c; ++k)
        lerp(src + ((plane * c + k) * in_h + y) * in_w, tx,
             rows.data() + k * channel_stride + s * slot, out_w);
      held[s] = y;
      return s;
    };
    for (int64_t item = begin; item < end; ++item) {
      if (item / runs != plane) {
        plane = item / runs;
        held[0] = held[1] = -1;
      }
      const int64_t y = run_start[item % runs], y_end = run_start[item % runs + 1];
      const int sa = slot_of(ty.lo[y], ty.hi[y]), sb = slot_of(ty.hi[y], ty.lo[y]);
      int64_t* d = dst + (plane * out_h + y) * out_w;
      for (int64_t x = 0; x < out_w; x += 16)
        argmax_blend(rows.data() + sa * slot + x, rows.data() + sb * slot + x, channel_stride, c,
                     ty.w.data() + y, static_cast<int>(y_end - y), d + x, out_w,
                     std::min<int64_t>(16, out_w - x));
    }
  });
}

}  // namespace segslim::engine
