#pragma once
// Inference on oneDNN: an ONNX graph (FP32, or INT8 as standard QDQ) compiled once into oneDNN
// primitives (descriptors built at load, buffers bound per run), with convolutions fused with
// their bias, BatchNorm, activation and residual add, Q/DQ pairs dissolved into int8
// convolutions, and int8 carried between them. oneDNN types stay out of this header.
#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

namespace segslim::engine {

struct EngineOptions {
  // Op types that run INT8 where the QDQ model quantizes them (the original's
  // enable_mkldnn_int8({...})); empty = every op the model quantizes. Everything else runs FP32.
  std::set<std::string> int8_op_types;
  std::string origin = "model";  // for error messages
  // Time every step (the stream is drained after each one, so steps do not overlap); read with
  // Engine::profile(). Slows a run slightly: for `segslim bench --profile`, not for serving.
  bool profile = false;
  // INT8 (QDQ) models: a float map that passes only between the engine's own fused steps
  // (ESPNet's residual chain: a block's output, the next block's residual) is stored as
  // float16, halving that traffic (ESPNet-CamVid: 1.4-2.8 MB per block); relative rounding
  // 2^-11, far inside the int8 steps' quantization error. False: float32 throughout. FP32
  // models always run float32.
  bool half_links = true;
};

// Accumulated time of one compiled step over the runs since the last shape change.
struct StepTime {
  std::string line;  // as in describe()
  double total_ms = 0;
  int64_t runs = 0;
};

// The op types that can run INT8 (the valid entries of EngineOptions::int8_op_types).
const std::set<std::string>& int8_capable_op_types();

class Engine {
 public:
  // Compiles the graph. What the engine cannot run is refused here with a segslim::Error naming
  // every unsupported op type with one node each: never a silently wrong answer.
  explicit Engine(const onnx::ModelProto& model, EngineOptions options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // input: float32 NCHW on the CPU, any batch and spatial size (primitives are built for a new
  // shape on first use and cached); returns the first graph output, owned: float32 NCHW, or
  // int64 class ids where the graph ends in ArgMax over the channels.
  at::Tensor run(const at::Tensor& input);

  // One line per compiled step, e.g. "Conv /stem/Conv int8 u8->s8 +bias +prelu", for
  // `segslim bench` and tests.
  std::vector<std::string> describe() const;
  int num_int8_steps() const;
  // With EngineOptions::profile: per step of the last shape, in describe() order, plus a last
  // entry for the reorder of the output to NCHW f32.
  std::vector<StepTime> profile() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace segslim::engine
