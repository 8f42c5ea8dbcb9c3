#pragma once
// Which nodes insert_qdq quantizes (docs/quantization.md, "Passes").
#include <set>
#include <string>
#include <vector>

namespace segslim::passes {

struct QuantPolicy {
  // Node types whose weight and activation input get Q/DQ pairs.
  std::set<std::string> op_types{"Conv", "ConvTranspose"};
  // A node whose name contains any of these substrings stays in float.
  std::vector<std::string> not_quant_patterns;
  // Leave the first and the last node of a quantized type in float (accuracy-sensitive stem
  // and classifier).
  bool skip_first_last = false;
  // Activations as uint8 asymmetric [0, 255]; the default is int8 symmetric (zero point 0).
  bool activation_unsigned = false;
};

}  // namespace segslim::passes
