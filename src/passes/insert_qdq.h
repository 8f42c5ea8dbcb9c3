#pragma once
// Inserts standard ONNX QuantizeLinear -> DequantizeLinear pairs (opset 13) in front of the
// quantized nodes (docs/quantization.md, pass 2). The result is the QAT student.
#include <onnx/onnx_pb.h>

#include <string>
#include <vector>

#include "passes/quant_policy.h"

namespace segslim::passes {

// One quantized tensor: `tensor` (the float value), its `scale` and `zero_point` initializers,
// per-channel `axis` (-1: per-tensor), and the names of the nodes that now read its DQ output.
struct QdqSite {
  std::string tensor, scale, zero_point;
  bool is_weight = false;
  int axis = -1;
  std::vector<std::string> consumers;
};

struct QdqModel {
  onnx::ModelProto model;
  std::vector<QdqSite> activations, weights;
};

// For every node of a type in policy.op_types, not matching policy.not_quant_patterns and (with
// skip_first_last) not the first or last such node: a per-channel Q/DQ on its weight
// initializer (input 1; axis 0, axis 1 for ConvTranspose; symmetric int8, zero point 0, scale
// max|W_c| / 127) and a per-tensor Q/DQ on its activation input (input 0; scale 1.0, zero
// point 0, int8 or uint8 per policy; calibration sets them). A weight computed as
// Transpose(initializer) (nn.Linear exported without constant folding) is folded into an
// initializer first; a MatMul's runtime input 1 (attention) is quantized as an activation. One pair
// per tensor, shared by all its quantized consumers, placed right before the first of them. Names
// follow the contract: T_scale, T_zero_point, T_quantized, T_dequantized, nodes T_QuantizeLinear /
// T_DequantizeLinear. Throws segslim::Error for opset < 13.
QdqModel insert_qdq(const onnx::ModelProto& model, const QuantPolicy& policy);

}  // namespace segslim::passes
