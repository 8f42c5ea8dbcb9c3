#pragma once
// Bilinear resize of plain NCHW float planes with half-pixel centres (ONNX Resize
// mode=linear, coordinate_transformation_mode=half_pixel; PyTorch align_corners=False): the
// engine's kernel for the network's last op, logits upsampled to the input size. That tensor
// is the largest of the network and usually has a class count that a channel-blocked layout
// pads to the next multiple of 16; written plain, straight into the caller's buffer, it costs
// one pass over the output.
//
// A deployed segmentation model usually ends in ArgMax over the classes (PaddleSeg exports one
// by default): then the engine skips the float map altogether and writes the class ids of the
// resized scores straight from the low-resolution logits (resize_bilinear_argmax_nchw).
#include <cstdint>

namespace segslim::engine {

// src: `planes` planes of in_h x in_w; dst: `planes` planes of out_h x out_w. Threads: ATen's.
void resize_bilinear_nchw(const float* src, float* dst, int64_t planes, int64_t in_h, int64_t in_w,
                          int64_t out_h, int64_t out_w);

// dst[n, y, x] = argmax over c of src[n, c, y, x] (the first index of the largest value, as
// ONNX ArgMax with select_last_index 0 and torch.argmax), for n x c planes of h x w.
void argmax_channels_nchw(const float* src, int64_t* dst, int64_t n, int64_t c, int64_t h,
                          int64_t w);

// argmax_channels_nchw of resize_bilinear_nchw's output (same arithmetic), without writing the
// n x c x out_h x out_w float map: the output rows that blend the same two source rows keep
// their running maximum and class per pixel while the channels go by.
void resize_bilinear_argmax_nchw(const float* src, int64_t* dst, int64_t n, int64_t c, int64_t in_h,
                                 int64_t in_w, int64_t out_h, int64_t out_w);

}  // namespace segslim::engine
