#pragma once
// Runs an ONNX graph with ATen ops, node by node in topological order. Because every kernel
// is an ATen call, the same executor serves evaluation (under at::InferenceMode), training
// (autograd through every op, initializers exposed as trainable weights) and distillation
// (any intermediate tensor can be fetched by name).
#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include <functional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ops/registry.h"

namespace segslim {

struct ExecutorOptions {
  at::Device device = at::kCPU;
  // float32 initializers and feeds are converted to this type (tests use kDouble for
  // finite-difference gradient checks).
  at::ScalarType float_type = at::kFloat;
  // Where the model came from, for error messages.
  std::string origin = "model";
  // Run each QuantizeLinear whose output only feeds DequantizeLinear node(s) with the same
  // scale / zero point / axis as ONE fake-quant step (ATen fake_quantize_*, straight-through
  // gradient). Same numbers as Q then DQ; off only to compare against the unfused kernels.
  bool fuse_qdq = true;
  // LSQ: the per-tensor (activation) scale initializers of fused Q/DQ pairs become trainable
  // weights and the fused step uses at::_fake_quantize_learnable_per_tensor_affine. Otherwise
  // every Q/DQ scale and zero point is a buffer (named_buffers, never trained).
  bool learnable_quant_scales = false;
  // 4-D float initializers (conv weights) and fed NCHW tensors are kept in channels-last
  // memory format, which LibTorch's CPU convolutions run fastest in (benchmark baseline).
  bool channels_last = false;
};

using TensorMap = std::unordered_map<std::string, at::Tensor>;

class Executor {
 public:
  // The model should come from load_model (checked, shapes inferred). Throws listing every
  // unsupported op type at once.
  explicit Executor(onnx::ModelProto model, ExecutorOptions options = {});

  // Feeds by input name; returns every graph output plus each name in `fetch` (any value of
  // the graph: node outputs, inputs, initializers).
  TensorMap run(const TensorMap& feeds, const std::vector<std::string>& fetch = {});
  // Single-input, single-output convenience: the first graph output.
  at::Tensor forward(const at::Tensor& input);

  // Train mode: BatchNormalization uses batch statistics and updates its running stats,
  // Dropout drops. Eval mode (the default): inference semantics.
  void set_training(bool training) { training_ = training; }
  // Called after every node with its inputs and outputs (MAC counting, range observers).
  // For a fused Q/DQ pair the integer tensor never exists: the observer sees the Q node with
  // its inputs (x, scale, zero point) and no outputs, then each DQ node with an undefined
  // first input and its float output.
  using NodeObserver = std::function<void(const onnx::NodeProto& node, const ops::Tensors& inputs,
                                          const ops::Tensors& outputs)>;
  void set_node_observer(NodeObserver observer) { observer_ = std::move(observer); }
  bool training() const { return training_; }

  // Trainable initializers (requires_grad) and updated state (BN running stats), by name.
  std::vector<std::pair<std::string, at::Tensor>> named_weights() const;
  std::vector<std::pair<std::string, at::Tensor>> named_buffers() const;
  std::vector<at::Tensor> weights() const;
  // Every initializer by name (weights, buffers and constants).
  const TensorMap& initializers() const { return initializer_by_name_; }

  // The model with its initializers replaced by the current weights and buffers.
  onnx::ModelProto export_model() const;
  const onnx::ModelProto& model() const { return model_; }

  std::vector<std::string> input_names() const;
  std::vector<std::string> output_names() const;
  bool has_value(const std::string& name) const { return slot_of_.count(name) > 0; }
  std::vector<std::string> value_names() const;
  at::Device device() const { return options_.device; }

 private:
  struct Step {
    const onnx::NodeProto* node;
    const ops::OpInfo* op;
    std::vector<int> inputs;   // slot per input, -1 for an omitted optional input
    std::vector<int> outputs;  // slot per output, -1 for an omitted optional output
    std::vector<int> release;  // slots whose last reader is this step
    // Fused Q -> DQ(s): `node` is the Q, `outputs` are the DQ outputs; q_output is the Q's own
    // output slot (computed only when fetched).
    bool fused_qdq = false;
    std::vector<const onnx::NodeProto*> dq_nodes;
    int q_output = -1;
    int64_t axis = 1;
    bool learnable = false;
  };
  void fuse_qdq_pairs(std::set<std::string>& weight_values, std::set<std::string>& buffer_set);
  ops::Tensors run_step(const Step& step, const ops::Tensors& in);

  int slot(const std::string& name);
  void compile();

  onnx::ModelProto model_;
  ExecutorOptions options_;
  int64_t opset_ = 0;
  bool training_ = false;
  NodeObserver observer_;

  std::unordered_map<std::string, int> slot_of_;
  std::vector<std::string> slot_names_;
  std::vector<at::Tensor> persistent_;  // initializer tensors by slot (undefined otherwise)
  TensorMap initializer_by_name_;
  std::vector<std::string> weight_names_, buffer_names_;
  std::vector<Step> steps_;
  std::vector<int> input_slots_, output_slots_;
};

}  // namespace segslim
