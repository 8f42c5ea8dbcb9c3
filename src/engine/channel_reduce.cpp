#include "engine/channel_reduce.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/error.h"
#include "engine/cpu_features.h"

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

// One pixel's channels, contiguous (NHWC) and few (UAFM reduces 32 to 128 channels per pixel):
// 16 lane-wise partials over the channel blocks, folded at the end, so the compiler keeps the
// partials in one vector register (a single running max or sum is a serial dependency chain
// it may not reorder).
SEGSLIM_INLINE float reduce_contiguous(ChannelReduceOp op, const float* x, int64_t c) {
  constexpr int64_t kLanes = 16;
  const int64_t body = c / kLanes * kLanes;
  float lanes[kLanes];
  if (op == ChannelReduceOp::kMax) {
    std::fill(lanes, lanes + kLanes, -std::numeric_limits<float>::infinity());
    for (int64_t k = 0; k < body; k += kLanes)
      for (int64_t l = 0; l < kLanes; ++l) lanes[l] = std::max(lanes[l], x[k + l]);
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t k = body; k < c; ++k) m = std::max(m, x[k]);
    for (int64_t l = 0; l < kLanes; ++l) m = std::max(m, lanes[l]);
    return m;
  }
  std::fill(lanes, lanes + kLanes, 0.f);
  for (int64_t k = 0; k < body; k += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += x[k + l];
  float s = 0.f;
  for (int64_t k = body; k < c; ++k) s += x[k];
  for (int64_t l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

// A row of w NHWC pixels, one value each.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void reduce_pixels_nhwc(
    ChannelReduceOp op, const float* x, float* out, int64_t w, int64_t c) {
  for (int64_t i = 0; i < w; ++i) out[i] = reduce_contiguous(op, x + i * c, c);
}

template <typename Q>
void quantize_row(const float* r, float inv, Q* q, int64_t w) {
  for (int64_t i = 0; i < w; ++i) q[i] = saturate_round<Q>(r[i] * inv);
}

}  // namespace

void reduce_channels(const float* src, void* dst, int64_t n, int64_t c, int64_t h, int64_t w,
                     ChannelLayout layout, ChannelReduceOp op, ElemType type, float scale) {
  SEGSLIM_CHECK(n > 0 && c > 0 && h > 0 && w > 0, "reduce_channels: empty tensor ", n, "x", c, "x",
                h, "x", w);
  SEGSLIM_CHECK(type != ElemType::kF16, "reduce_channels: no float16 output");
  SEGSLIM_CHECK(type == ElemType::kF32 || scale > 0, "reduce_channels: output scale ", scale,
                " must be positive");
  const float inv = 1.f / scale;
  const int64_t hw = h * w;
  const float finish = op == ChannelReduceOp::kMean ? 1.f / static_cast<float>(c) : 1.f;
  // Work items: one image row (w pixels) of one image.
  at::parallel_for(0, n * h, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc, row(type == ElemType::kF32 ? 0 : static_cast<size_t>(w));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / h, y = item % h;
      float* out = type == ElemType::kF32 ? static_cast<float*>(dst) + b * hw + y * w : row.data();
      switch (layout) {
        case ChannelLayout::kNhwc: {
          reduce_pixels_nhwc(op, src + (b * hw + y * w) * c, out, w, c);
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
      if (type == ElemType::kS8)
        quantize_row(out, inv, static_cast<int8_t*>(dst) + b * hw + y * w, w);
      else if (type == ElemType::kU8)
        quantize_row(out, inv, static_cast<uint8_t*>(dst) + b * hw + y * w, w);
    }
  });
}

}  // namespace segslim::engine
