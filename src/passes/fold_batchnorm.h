#pragma once
// Folds inference BatchNormalization into the Conv / ConvTranspose before it
// (docs/quantization.md, pass 1), so QAT quantizes the weights the deployed model will use.
#include <onnx/onnx_pb.h>

namespace segslim::passes {

// Conv/ConvTranspose -> BatchNormalization (the BN its only consumer, the conv output no graph
// output, BN with one output, all parameters initializers, conv weight/bias not shared) becomes
// one conv with, per output channel c,
//   a_c = gamma_c / sqrt(var_c + eps),  W'_c = W_c * a_c,  b'_c = (b_c - mean_c) * a_c + beta_c
// (a bias is added when the conv had none). The BN node and its now-unused initializers are
// removed; the conv takes over the BN's output name. Every other BN stays. `folded` receives
// the number of BNs folded.
onnx::ModelProto fold_batchnorm(const onnx::ModelProto& model, int* folded = nullptr);

}  // namespace segslim::passes
