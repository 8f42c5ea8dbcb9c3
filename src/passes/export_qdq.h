#pragma once
// Turns the QAT student into the deployable INT8 QDQ model (docs/quantization.md, pass 3).
#include <onnx/onnx_pb.h>

namespace segslim::passes {

// Each QuantizeLinear that reads a float initializer W (with initializer scale and zero point)
// and feeds only DequantizeLinear nodes is replaced by an int8/uint8 initializer holding
// Q(W), named after the Q output (`W_quantized` under the contract's naming), so the DQ nodes
// read it unchanged. The values use ops::quantize_tensor, the QuantizeLinear kernel's own
// arithmetic. The Q node and the now-unused float W are dropped; everything else is kept.
onnx::ModelProto export_qdq(const onnx::ModelProto& qdq_model);

}  // namespace segslim::passes
