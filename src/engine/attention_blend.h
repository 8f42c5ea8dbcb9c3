#pragma once
// The fusion step of PP-LiteSeg's UAFM: two feature maps x and y mixed by per-pixel weights,
//   out[p, c] = x[p, c] * a[p] + y[p, c] * b[p]     (the graph's b is 1 - a, a = sigmoid(...))
// over channels-last maps, written as float or quantized (the QuantizeLinear before the next
// int8 convolution, zero point 0). As separate steps this is two broadcasting Muls, an Add
// and a quantize: four passes over full float maps; here x and y are read once and the output
// written once, in the same float operations (no fused multiply-add: the numbers of the Mul,
// Mul, Add steps it replaces).
#include <cstdint>

#include "engine/int8_store.h"

namespace segslim::engine {

struct BlendArgs {
  const float *x = nullptr, *a = nullptr, *y = nullptr, *b = nullptr;  // a, b: one per pixel
  void* out = nullptr;
  ElemType type = ElemType::kF32;
  float scale = 1.f;  // int8 output (int8_store.h)
  int64_t pixels = 0, channels = 0;
};

// Threads: ATen's.
void attention_blend_nhwc(const BlendArgs& args);

}  // namespace segslim::engine
