#pragma once
// One pass over a channels-last feature map for the tail of ESPNet's blocks:
//   x = Concat(pieces along C) [quantized] [+ residual];  y = a_c * x + b_c  (BatchNormalization);
//   y = y >= 0 ? y : slope_c * y  (PRelu; ReLU is slope 0; optional)
// written as float and/or quantized (QuantizeLinear, zero point 0) at up to a few scales.
// As separate steps this is a concat, an add, a depthwise 1x1, a prelu and a quantize: five
// trips through memory over a float map (ESPNet-CamVid: about half of its INT8 latency);
// here each piece is read once and each output written once. oneDNN 2.6 has no such fusion:
// a per-channel PReLU post-op sends its convolutions to reference kernels.
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/int8_store.h"

namespace segslim::engine {

// A channels-last tensor of `pixels` rows of `channels` values; int8 ones dequantize as
// q * scale (zero point 0); float16 ones (kF16) convert exactly to float.
struct AffineInput {
  const void* data = nullptr;
  ElemType type = ElemType::kF32;
  float scale = 1.f;
  int64_t channels = 0;
};

// An output row-major like the inputs with all channels; float16 ones round to nearest even;
// int8 ones are saturate(round_half_even(y / scale)), computed as y * (1 / scale) like
// PyTorch's fake quantization.
struct AffineOutput {
  void* data = nullptr;
  ElemType type = ElemType::kF32;
  float scale = 1.f;
};

// The concatenation fake-quantized before the residual is added: x = scale *
// saturate(round_half_even(x / scale)) in type's range, zero point 0 (a QDQ model that
// quantizes its residual Add's inputs: an int8 runtime adds int8 tensors). Scale 0: not.
struct ConcatQuant {
  float scale = 0.f;
  ElemType type = ElemType::kS8;
};

// The per-channel coefficients y = a_c * x + b_c, then y >= 0 ? y : slope_c * y (slope empty:
// no activation), laid out once per step for the kernels, and the concatenation's quantization.
// The portable kernel reads the coefficients repeated over a tile of pixels whose rows are
// contiguous in every full-width tensor, so the affine, activation and stores run as long flat
// loops even where a pixel has only a few channels (ESPNet's first BR module has 19); the
// AVX-512 one reads the first copy.
struct ConcatAffineCoefficients {
  ConcatAffineCoefficients(const std::vector<float>& a, const std::vector<float>& b,
                           const std::vector<float>& slope, ConcatQuant concat_quant = {});
  int64_t channels, tile_pixels;
  std::vector<float> a, b, slope;  // tiled: tile_pixels copies of each
  ConcatQuant concat_quant;
};

struct ConcatAffineArgs {
  std::vector<AffineInput> pieces;  // concatenated along C in order; channels sum to the output's
  AffineInput residual;             // data null: none; else all channels
  const ConcatAffineCoefficients* coefficients = nullptr;
  std::vector<AffineOutput> outs;
  int64_t pixels = 0;
};

// Threads: ATen's.
void concat_affine_nhwc(const ConcatAffineArgs& args);

// The same work prepared once for one layout of pieces (their channels and types; the data
// pointers change per call), run over a range of pixels on the calling thread: for a kernel
// that makes the pieces itself a row at a time inside its own parallel loop
// (dilated_branches.h).
class ConcatAffineRows {
 public:
  explicit ConcatAffineRows(const ConcatAffineArgs& layout);
  ~ConcatAffineRows();
  // Pixels [begin, end) of args, laid out as at construction.
  void run(const ConcatAffineArgs& args, int64_t begin, int64_t end) const;

 private:
  struct Prepared;
  std::unique_ptr<Prepared> p_;
};

}  // namespace segslim::engine
