// Turns an FP32 ONNX model into a standard INT8 QDQ model for latency benchmarks: BatchNorm
// folded, Q/DQ on every Conv/ConvTranspose (per-channel int8 weights, per-tensor int8
// activations), activation scales from abs-max over random-normal inputs of the given shape.
// Latency does not depend on the scale values; accuracy benchmarks use `segslim compress`.
//   bench_make_qdq_model FP32.onnx OUT.onnx NxCxHxW
#include <ATen/ATen.h>

#include <iostream>
#include <sstream>

#include "common/error.h"
#include "compress/calibration.h"
#include "graph/model.h"
#include "passes/export_qdq.h"
#include "passes/fold_batchnorm.h"
#include "passes/weight_scales.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " FP32.onnx OUT.onnx NxCxHxW\n";
    return 2;
  }
  try {
    std::vector<int64_t> shape;
    std::stringstream ss(argv[3]);
    for (std::string d; std::getline(ss, d, 'x');) shape.push_back(std::stoll(d));
    SEGSLIM_CHECK(shape.size() == 4, "shape must be NxCxHxW, got ", argv[3]);
    const onnx::ModelProto folded = segslim::passes::fold_batchnorm(segslim::load_model(argv[1]));
    segslim::passes::QdqModel qdq = segslim::passes::insert_qdq(folded, {});
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
