#pragma once
// Mean, max or sum over the channels of a 4-D float tensor, one value per pixel (ONNX
// ReduceMean / ReduceMax / ReduceSum with axes [1], keepdims): the spatial attention of
// PP-LiteSeg's UAFM reads the channel mean and max of every fused feature map. oneDNN 2.6 has
// only its reference kernel for a channel reduction, and ATen wants the tensor plain NCHW
// (a reorder of the whole map first); this reads the map in the layout the convolution wrote.
#include <cstdint>

#include "engine/int8_store.h"

namespace segslim::engine {

enum class ChannelReduceOp { kMean, kMax, kSum };
// How the source is laid out in memory: NCHW, NHWC, or oneDNN's nChw16c (channel blocks of
// 16, the last one zero-padded: padding never enters a max or a mean).
enum class ChannelLayout { kNchw, kNhwc, kNChw16c };

// dst: N x 1 x H x W, plain; float, or int8 at `scale` (int8_store.h) where the QuantizeLinear
// after the reduction is folded in (the maps go into an int8 Concat). Threads: ATen's.
void reduce_channels(const float* src, void* dst, int64_t n, int64_t c, int64_t h, int64_t w,
                     ChannelLayout layout, ChannelReduceOp op, ElemType type = ElemType::kF32,
                     float scale = 1.f);

}  // namespace segslim::engine
