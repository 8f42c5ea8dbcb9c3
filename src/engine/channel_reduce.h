#pragma once
// Mean, max or sum over the channels of a 4-D float tensor, one value per pixel (ONNX
// ReduceMean / ReduceMax / ReduceSum with axes [1], keepdims): the spatial attention of
// PP-LiteSeg's UAFM reads the channel mean and max of every fused feature map. oneDNN 2.6 has
// only its reference kernel for a channel reduction, and ATen wants the tensor plain NCHW
// (a reorder of the whole map first); this reads the map in the layout the convolution wrote.
#include <cstdint>

namespace segslim::engine {

enum class ChannelReduceOp { kMean, kMax, kSum };
// How the source is laid out in memory: NCHW, NHWC, or oneDNN's nChw16c (channel blocks of
// 16, the last one zero-padded: padding never enters a max or a mean).
enum class ChannelLayout { kNchw, kNhwc, kNChw16c };

// How the result is stored: float, or quantized (a QuantizeLinear with zero point 0 after the
// reduction, as when the maps go into an int8 Concat): saturate(round_half_even(r * (1 / scale))).
enum class ReducedType { kF32, kS8, kU8 };

// dst: N x 1 x H x W, plain. Threads: ATen's.
void reduce_channels(const float* src, void* dst, int64_t n, int64_t c, int64_t h, int64_t w,
                     ChannelLayout layout, ChannelReduceOp op, ReducedType type = ReducedType::kF32,
                     float scale = 1.f);

}  // namespace segslim::engine
