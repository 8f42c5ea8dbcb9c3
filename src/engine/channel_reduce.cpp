#include "engine/channel_reduce.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/error.h"

namespace segslim::engine {

namespace {

// acc[i] = op(acc[i], x[i]) over a row of pixels: the whole cost of the NCHW and nChw16c
// cases, vectorized for AVX-512 / AVX2 picked at run time.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void accumulate_sum(
    const float* x, float* acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void accumulate_max(
    const float* x, float* acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], x[i]);
}

void accumulate(ChannelReduceOp op, const float* x, float* acc, int64_t n) {
  if (op == ChannelReduceOp::kMax) {
    accumulate_max(x, acc, n);
  } else {
    accumulate_sum(x, acc, n);
  }
}

float initial(ChannelReduceOp op) {
  return op == ChannelReduceOp::kMax ? -std::numeric_limits<float>::infinity() : 0.f;
}

// One pixel's channels, contiguous (NHWC).
float reduce_contiguous(ChannelReduceOp op, const float* x, int64_t c) {
  if (op == ChannelReduceOp::kMax) {
    float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < c; ++i) m = std::max(m, x[i]);
    return m;
  }
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < c; ++i) s += x[i];
  return s;
}

}  // namespace

void reduce_channels(const float* src, float* dst, int64_t n, int64_t c, int64_t h, int64_t w,
                     ChannelLayout layout, ChannelReduceOp op) {
  SEGSLIM_CHECK(n > 0 && c > 0 && h > 0 && w > 0, "reduce_channels: empty tensor ", n, "x", c, "x",
                h, "x", w);
  const int64_t hw = h * w;
  const float finish = op == ChannelReduceOp::kMean ? 1.f / static_cast<float>(c) : 1.f;
  // Work items: one image row (w pixels) of one image.
  at::parallel_for(0, n * h, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / h, y = item % h;
      float* out = dst + b * hw + y * w;
      switch (layout) {
        case ChannelLayout::kNhwc: {
          const float* x = src + (b * hw + y * w) * c;
          for (int64_t i = 0; i < w; ++i) out[i] = reduce_contiguous(op, x + i * c, c);
          break;
        }
        case ChannelLayout::kNchw: {
          std::fill(out, out + w, initial(op));
          for (int64_t ch = 0; ch < c; ++ch)
            accumulate(op, src + (b * c + ch) * hw + y * w, out, w);
          break;
        }
        case ChannelLayout::kNChw16c: {
          // Per pixel, the 16 lanes of a block are contiguous: accumulate whole blocks lane-wise
          // into acc (w x 16), the last block's valid lanes only, then fold the 16 lanes.
          constexpr int64_t kBlock = 16;
          const int64_t blocks = (c + kBlock - 1) / kBlock, full = c / kBlock;
          acc.assign(static_cast<size_t>(w * kBlock), initial(op));
          for (int64_t cb = 0; cb < full; ++cb)
            accumulate(op, src + ((b * blocks + cb) * hw + y * w) * kBlock, acc.data(), w * kBlock);
          for (int64_t i = 0; i < w; ++i) {
            float r = reduce_contiguous(op, acc.data() + i * kBlock, full > 0 ? kBlock : 0);
            if (full < blocks) {  // the partial block: its first c % 16 lanes
              const float* x = src + ((b * blocks + full) * hw + y * w + i) * kBlock;
              const float tail = reduce_contiguous(op, x, c % kBlock);
              r = op == ChannelReduceOp::kMax ? std::max(r, tail) : r + tail;
            }
            out[i] = r;
          }
          break;
        }
      }
      if (finish != 1.f)
        for (int64_t i = 0; i < w; ++i) out[i] *= finish;
    }
  });
}

}  // namespace segslim::engine
