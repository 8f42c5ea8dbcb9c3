#pragma once
// What `segslim inspect` reports: interface, op histogram, size, compute, the layers QAT
// would quantize and the tensors distillation can pair (so nobody needs a graph viewer to
// find the last conv's output name; the original's FAQ #2).
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace segslim {

struct TensorInfo {
  std::string name, shape;  // shape as declared, e.g. "Nx3x360x480"
};

struct LayerInfo {
  std::string node, op_type, weight_shape, output;
  int64_t macs = 0;  // at the summary's input shape; 0 when no shape was run
};

struct DistillCandidate {
  std::string tensor, node, reason;
};

struct ModelSummary {
  std::vector<TensorInfo> inputs, outputs;
  std::map<std::string, int> op_histogram;
  int64_t num_nodes = 0, num_parameters = 0;
  std::vector<int64_t> shape;  // input shape the MACs were counted at (empty: not run)
  int64_t macs = 0;
  std::vector<LayerInfo> quantizable;
  std::vector<DistillCandidate> distill_candidates;
};

// `shape` (NCHW) overrides the declared input shape; symbolic dims of the declared shape
// default to 1 for N and fail for H/W (then pass a shape). Runs one forward pass on zeros to
// count MACs (Conv, ConvTranspose, MatMul, Gemm multiply-accumulates).
ModelSummary summarize_model(const onnx::ModelProto& model, std::vector<int64_t> shape,
                             const std::string& origin);

nlohmann::json to_json(const ModelSummary& summary);

}  // namespace segslim
