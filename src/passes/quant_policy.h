#pragma once
// Which nodes insert_qdq quantizes (docs/quantization.md, "Passes").
#include <set>
#include <string>
#include <vector>

namespace segslim::passes {

struct QuantPolicy {
  // Node types whose weight and activation input get Q/DQ pairs.
  std::set<std::string> op_types{"Conv", "ConvTranspose"};
  // A node whose name matches any of these stays in float: contains the substring, or for an
  // entry `re:EXPR` matches the regular expression (passes/name_pattern.h).
  std::vector<std::string> not_quant_patterns;
  // Leave the first and the last node of a quantized type in float (accuracy-sensitive stem
  // and classifier).
  bool skip_first_last = false;
  // Add and Concat nodes quantize only those runtime inputs that another quantized node
  // reads too, sharing that tensor's Q/DQ pair: no new scale, only the rounding the other
  // reader sees already. ESPNet's residual sum then reads the block input as the next 1x1
  // convolution does, int8, while the concatenation it adds stays float (an int8 runtime
  // reads the int8 residual and writes the block's output only as int8).
  bool sum_inputs_shared_only = false;
  // Activations as uint8 asymmetric [0, 255]; the default is int8 symmetric (zero point 0).
  bool activation_unsigned = false;
  // A quantized activation that a Concat also reads, where the Concat's output is quantized
  // too (STDC's branch outputs, each read by the next branch's conv and by the module's
  // Concat), uses the Concat's scale: one scale initializer, observed and trained once at the
  // Concat. An int8 runtime then writes the tensor once, as int8, for both readers: an int8
  // Concat needs all its inputs at its own scale, and at another scale the tensor would be
  // quantized twice from float. The Concat's range covers each input's, so the tie coarsens
  // only an input whose range is smaller than its siblings'.
  bool share_concat_scales = true;
};

}  // namespace segslim::passes
