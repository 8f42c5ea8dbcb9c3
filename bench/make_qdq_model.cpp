// Turns an FP32 ONNX model into a standard INT8 QDQ model for latency benchmarks: BatchNorm
// folded, Q/DQ on every Conv/ConvTranspose (per-channel int8 weights, per-tensor int8
// activations) and on pooling inputs (one pair per tensor, shared by its quantized readers),
// activation scales from abs-max over random-normal inputs of the given shape. Latency does not
// depend on the scale values; accuracy benchmarks use `segslim compress`.
//   bench_make_qdq_model FP32.onnx OUT.onnx NxCxHxW [OP_TYPES]
// NxCxHxW is the calibration input shape (any size the network accepts; latency does not
// depend on it); OP_TYPES, comma-separated, replaces the default Conv,ConvTranspose,
// AveragePool,MaxPool (e.g. add MatMul for transformers).
#include <ATen/ATen.h>

#include <iostream>
#include <sstream>

#include "common/error.h"
#include "common/strings.h"
#include "compress/calibration.h"
#include "graph/model.h"
#include "passes/export_qdq.h"
#include "passes/fold_batchnorm.h"
#include "passes/weight_scales.h"

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::cerr << "usage: " << argv[0] << " FP32.onnx OUT.onnx NxCxHxW [OP,OP,...]\n";
    return 2;
  }
  try {
    std::vector<int64_t> shape;
    std::stringstream ss(argv[3]);
    for (std::string d; std::getline(ss, d, 'x');) shape.push_back(std::stoll(d));
    SEGSLIM_CHECK(shape.size() == 4, "shape must be NxCxHxW, got ", argv[3]);
    const onnx::ModelProto folded = segslim::passes::fold_batchnorm(segslim::load_model(argv[1]));
    // as QuantAware.quantize_op_types [conv2d, conv2d_transpose, pool2d]
    segslim::passes::QuantPolicy policy;
    policy.op_types = {"Conv", "ConvTranspose", "AveragePool", "MaxPool"};
    if (argc == 5) {  // comma-separated ONNX op types
      policy.op_types.clear();
      for (const std::string& t : segslim::split(argv[4], ','))
        if (!segslim::trim(t).empty()) policy.op_types.insert(segslim::trim(t));
    }
    segslim::passes::QdqModel qdq = segslim::passes::insert_qdq(folded, policy);
    segslim::CalibrationOptions co;
    co.algo = "abs_max";
    int remaining = 2;
    at::manual_seed(0);
    auto params = segslim::calibrate(
        folded, qdq.activations,
        [&]() -> std::optional<at::Tensor> {
          if (remaining-- == 0) return std::nullopt;
          return at::randn(shape);
        },
        2, co, at::kCPU);
    segslim::Executor student(qdq.model);
    segslim::passes::refresh_weight_scales(student, qdq.weights);
    segslim::apply_activation_params(student, qdq.activations, params);
    segslim::save_model(segslim::passes::export_qdq(student.export_model()), argv[2]);
    std::cout << "wrote " << argv[2] << " (" << qdq.weights.size() << " quantized layers)\n";
  } catch (const segslim::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
