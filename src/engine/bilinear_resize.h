#pragma once
// Bilinear resize of plain NCHW float planes with half-pixel centres (ONNX Resize
// mode=linear, coordinate_transformation_mode=half_pixel; PyTorch align_corners=False): the
// engine's kernel for the network's last op, logits upsampled to the input size. That tensor
// is the largest of the network and usually has a class count that a channel-blocked layout
// pads to the next multiple of 16; written plain, straight into the caller's buffer, it costs
// one pass over the output.
#include <cstdint>

namespace segslim::engine {

// src: `planes` planes of in_h x in_w; dst: `planes` planes of out_h x out_w. Threads: ATen's.
void resize_bilinear_nchw(const float* src, float* dst, int64_t planes, int64_t in_h, int64_t in_w,
                          int64_t out_h, int64_t out_w);

}  // namespace segslim::engine
