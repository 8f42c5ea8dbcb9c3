#include "engine/bilinear_resize.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace segslim::engine {

namespace {

// Source taps of each output coordinate: x = max(0, (o + 0.5) * in / out - 0.5),
// lo = floor(x), hi = min(lo + 1, in - 1), weight of hi = x - lo.
struct Taps {
  std::vector<int64_t> lo, hi;
  std::vector<float> w;
  Taps(int64_t in, int64_t out) : lo(out), hi(out), w(out) {
    const double scale = static_cast<double>(in) / static_cast<double>(out);
    for (int64_t o = 0; o < out; ++o) {
      const double x = std::max(0.0, (o + 0.5) * scale - 0.5);
      lo[o] = std::min<int64_t>(static_cast<int64_t>(x), in - 1);
      hi[o] = std::min<int64_t>(lo[o] + 1, in - 1);
      w[o] = static_cast<float>(x - static_cast<double>(lo[o]));
    }
  }
};

// r[x] = src[lo[x]] + w[x] * (src[hi[x]] - src[lo[x]]): gathers, vectorized where the CPU has
// AVX2 / AVX-512 (picked at run time).
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void lerp_row(
    const float* src, const int64_t* lo, const int64_t* hi, const float* w, float* r, int64_t n) {
  for (int64_t x = 0; x < n; ++x) r[x] = src[lo[x]] + w[x] * (src[hi[x]] - src[lo[x]]);
}

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

using BlendFn = void (*)(const float*, const float*, float, float*, int64_t);

// Streaming pays off past the last-level cache (32 MB on this project's machines); below it the
// consumer would rather find the output in cache.
constexpr int64_t kStreamMinBytes = int64_t{32} << 20;

BlendFn pick_blend(int64_t out_bytes) {
  if (out_bytes < kStreamMinBytes) return blend_row;
  if (__builtin_cpu_supports("avx512f")) return blend_row_stream_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return blend_row_stream_avx2;
  return blend_row;
}

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
  at::parallel_for(0, planes * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> rows;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t p = item / blocks, y0 = (item % blocks) * kBlock;
      const int64_t y1 = std::min(y0 + kBlock, out_h);
      const int64_t first = ty.lo[y0], last = ty.hi[y1 - 1];  // source rows read
      rows.resize(static_cast<size_t>((last - first + 1) * out_w));
      const float* s = src + p * in_h * in_w;
      for (int64_t y = first; y <= last; ++y)
        lerp_row(s + y * in_w, tx.lo.data(), tx.hi.data(), tx.w.data(),
                 rows.data() + (y - first) * out_w, out_w);
      float* d = dst + p * out_h * out_w;
      for (int64_t y = y0; y < y1; ++y)
        blend(rows.data() + (ty.lo[y] - first) * out_w, rows.data() + (ty.hi[y] - first) * out_w,
              ty.w[y], d + y * out_w, out_w);
    }
    _mm_sfence();  // streaming stores are weakly ordered: drain this thread's before the join
  });
}

}  // namespace segslim::engine
