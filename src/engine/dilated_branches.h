#pragma once
// ESPNet's block after its 1x1 reduction, in one pass over the int8 map: parallel 3x3
// convolutions of one int8 input at several dilations (stride 1, padding = dilation), each
// optionally adding the previous branch's output (the hierarchical sums), concatenated, then
// concat_affine's tail (residual, BatchNormalization, PRelu, float and int8 outputs):
//   piece_k = alpha_k * conv_k(x) + beta_k [+ piece_{k-1}]
//   y = act(a * (concat(pieces) [quantized] [+ residual]) + b)
// As separate steps each branch writes a float map that the next branch's sum and the tail
// read back, and oneDNN 2.6's int8 convolutions put output channels in the vector lanes, so
// ESPNet's 12- and 25-channel branches fill 12 or 25 of 16 or 32 lanes. Here:
//  - 16 consecutive pixels of one output channel share a register: no lane is idle whatever
//    the channel count, and a tap's 16 pixels x 4 input channels are one 64-byte load from a
//    group-planar padded copy of the input (rows of [channel group][pixel][4 bytes]);
//  - a channel's 4 weights of a group are broadcast to all lanes (AVX-512 VNNI's vpdpbusd, u8 x
//    s8 -> s32, exact), up to 24 output channels' accumulators in registers per call;
//  - 16 pixels of all branches land in planes (channel-major), the hierarchical sums add whole
//    planes, a 16 x 16 register transpose turns them channels-last, and the tail
//    (concat_affine.h) runs on each row while it is in cache: no float piece maps.
// s8 codes are stored plus 128 (u8) and 128 x (the channel's weight sum) is subtracted from each
// sum, which is exact because the padding border holds 128 (the code of zero) too. Taps that
// read only the border for a whole 16-pixel strip (large dilations near the edges) are skipped,
// their weights left out of that sum.
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/concat_affine.h"

namespace segslim::engine {

struct DilatedBranch {
  int64_t out_channels = 0;
  int64_t dilation = 1;         // also the padding
  std::vector<int8_t> weights;  // [out][in][3][3] (ONNX Conv), int8 codes
  std::vector<float> alpha;     // per output channel: input scale x weight scale
  std::vector<float> beta;      // per output channel: the bias in real units
  bool add_previous = false;    // the output adds the previous branch's (same channels)
};

struct DilatedBranchesShape {
  int64_t n = 1, h = 0, w = 0, in_channels = 0;
  ElemType src_type = ElemType::kS8;  // s8 or u8 codes, zero point 0
};

// Whether this CPU runs the kernel: AVX-512 with VNNI, and SEGSLIM_NO_AVX512 not set.
bool dilated_branches_supported();

class DilatedBranches {
 public:
  // a, b, slope: the tail's per-channel coefficients over the concatenation (slope empty: no
  // activation); concat_quant: the concatenation's quantization before the residual.
  DilatedBranches(const DilatedBranchesShape& shape, const std::vector<DilatedBranch>& branches,
                  const std::vector<float>& a, const std::vector<float>& b,
                  const std::vector<float>& slope, ConcatQuant concat_quant = {});
  ~DilatedBranches();
  int64_t channels() const;  // of the concatenation (the output)

  // src: n x h x w x in_channels codes; residual (data null: none) and outs: whole
  // channels-last tensors of the output's size, as concat_affine_nhwc takes them.
  // Threads: ATen's. Not reentrant (one padded image per instance).
  void run(const void* src, const AffineInput& residual, const std::vector<AffineOutput>& outs);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace segslim::engine
