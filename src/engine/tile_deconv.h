#pragma once
// A transposed convolution whose kernel equals its stride (no padding, no dilation, one
// group): every input pixel paints its own kh x kw tile of the output, nothing overlaps,
//   out[n, o, h*kh + i, w*kw + j] = scale_o * sum_c x[n, h, w, c] * w[c, o, i, j] + bias_o.
// Segmentation heads end with one (ESPNet's classifier: 12 channels, 2x2, to 360x480), and
// the model's output is wanted NCHW: oneDNN 2.6's deconvolution writes channels-last, and the
// reorder after it took as long as the deconvolution (0.66 + 0.68 ms at 2 threads in
// `segslim bench --profile`). This kernel reads the channels-last input and writes the NCHW
// output rows directly: 0.9 ms for both, bound by writing the 8.3 MB output (non-temporal
// stores made no difference).
//
// int8 input (s8 or u8 codes, weights as their int8 codes): the sum is exact in float while
// |sum| < 2^24 (the caller keeps channels below 1024), then scaled as oneDNN's int8 kernels do
// (scale_o = input scale x weight scale, the bias in real units).
#include <cstdint>
#include <vector>

#include "engine/int8_store.h"

namespace segslim::engine {

// Widest kernel the weight pattern holds: kw must divide it.
inline constexpr int64_t kTileDeconvLanes = 16;

struct TileDeconvArgs {
  const void* src = nullptr;  // N x H x W x C (channels-last)
  ElemType src_type = ElemType::kF32;
  float* out = nullptr;  // N x O x H*kh x W*kw (NCHW)
  int64_t n = 0, h = 0, w = 0, c = 0, o = 0, kh = 0, kw = 0;
  // weights as tile_deconv_pattern() lays them out, and per output channel scale and bias
  const float* pattern = nullptr;
  const float* scale = nullptr;
  const float* bias = nullptr;
};

// The weights [C, O, kh, kw] (ONNX ConvTranspose layout, as float: int8 codes for an int8
// input) laid out per output row: [O][kh][C][kTileDeconvLanes], lane l holding w[c, o, i,
// l % kw], so that 16 consecutive output columns take one vector per input channel.
std::vector<float> tile_deconv_pattern(const float* weights, int64_t c, int64_t o, int64_t kh,
                                       int64_t kw);

// Threads: ATen's.
void tile_deconv_to_nchw(const TileDeconvArgs& args);

}  // namespace segslim::engine
