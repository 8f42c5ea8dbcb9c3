#pragma once
// A transposed convolution whose kernel equals its stride (no padding, no dilation, one
// group): every input pixel paints its own kh x kw tile of the output, nothing overlaps,
//   out[n, o, h*kh + i, w*kw + j] = scale_o * sum_c x[n, h, w, c] * w[c, o, i, j] + bias_o.
// Segmentation heads end with one (ESPNet's classifier: 12 channels, 2x2, to 360x480), and
// the model's output is wanted NCHW: oneDNN 2.6's deconvolution writes channels-last, and the
// reorder after it took as long as the deconvolution (0.66 + 0.68 ms at 2 threads in
// `segslim bench --profile`). This kernel reads the channels-last input and writes the NCHW
// output rows directly: 0.9 ms for both, in float mostly its multiplies, one per input channel
// per output value.
//
// int8 input (s8 or u8 codes, weights as their int8 codes): the sum is exact in float while
// |sum| < 2^24 (tile_deconv_int8_exact: the caller checks), then scaled as oneDNN's int8
// kernels do (scale_o = input scale x weight scale, the bias in real units). With the weights
// also as int8 (tile_deconv_int8_weights) and AVX-512 VNNI, the sums are vpdpbusd's (4 channels
// a multiply, exact int32; s8 codes flipped to u8 + 128 and 128 x the weights' sum subtracted):
// the same numbers at a quarter of the multiplies (`segslim bench --vs` of ESPNet-CamVid's FP32
// and INT8 models: 2.92x -> 3.05x). What remains of the step is mostly writing the 8.3 MB
// output, which is not in cache by then.
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
  // int8 input: the weights as tile_deconv_int8_weights() makes them for src_type (null: the
  // float path)
  const int8_t* pattern8 = nullptr;
  const int32_t* pattern8_start = nullptr;
};

// The int8 weights' layout for the VNNI path: per output row [O][kh], per group of 4 input
// channels, 16 lanes of 4 bytes, lane l holding w[4g..4g+3, o, i, l % kw] (zero past C); and per
// output row and lane the accumulator's start: minus 128 x the weights' sum for an s8 input
// (its codes are read as u8 + 128), 0 for u8.
struct TileDeconvInt8Weights {
  std::vector<int8_t> pattern;
  std::vector<int32_t> start;  // [O][kh][kTileDeconvLanes]
};
TileDeconvInt8Weights tile_deconv_int8_weights(const float* weights, int64_t c, int64_t o,
                                               int64_t kh, int64_t kw, ElemType src_type);

// The weights [C, O, kh, kw] (ONNX ConvTranspose layout, as float: int8 codes for an int8
// input) laid out per output row: [O][kh][C][kTileDeconvLanes], lane l holding w[c, o, i,
// l % kw], so that 16 consecutive output columns take one vector per input channel.
std::vector<float> tile_deconv_pattern(const float* weights, int64_t c, int64_t o, int64_t kh,
                                       int64_t kw);

// Whether an int8 input of c channels of this type (s8 or u8) sums exactly in float:
// c x (the largest code's magnitude, 128 or 255) x 128 < 2^24.
bool tile_deconv_int8_exact(int64_t c, ElemType type);

// Whether int8 inputs with int8 weights take the VNNI path here (AVX-512 VNNI, and
// SEGSLIM_NO_AVX512 not set).
bool tile_deconv_vnni_supported();

// Threads: ATen's.
void tile_deconv_to_nchw(const TileDeconvArgs& args);

}  // namespace segslim::engine
