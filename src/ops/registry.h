#pragma once
// ONNX op -> ATen implementations. Every kernel is written with differentiable ATen calls,
// so the same code runs inference, training (autograd) and, later, fake-quant QAT, on any
// device the input tensors live on.
//
// Adding an op: implement `Tensors run(const NodeContext&, const Tensors&)` in the file of its
// family (conv.cpp, activation.cpp, ...), add it to that file's register_*_ops(), and add its
// conformance cases / gradient checks in tests/ops. No op lands without its test.
#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace segslim::ops {

// A missing optional input (empty name in the node) is an undefined at::Tensor.
using Tensors = std::vector<at::Tensor>;

// What a kernel sees of its node: attributes, the model opset, train/eval mode.
class NodeContext {
 public:
  NodeContext(const onnx::NodeProto& node, int64_t opset, bool training)
      : node_(node), opset_(opset), training_(training) {}

  const onnx::NodeProto& node() const { return node_; }
  const std::string& op_type() const { return node_.op_type(); }
  // The node name, or "<op_type> #output0" when the exporter left it empty.
  std::string name() const;
  int64_t opset() const { return opset_; }
  bool training() const { return training_; }

  bool has_attr(const std::string& name) const { return find(name) != nullptr; }
  int64_t attr_int(const std::string& name, int64_t fallback) const;
  int64_t attr_int(const std::string& name) const;  // required
  float attr_float(const std::string& name, float fallback) const;
  std::string attr_string(const std::string& name, const std::string& fallback) const;
  std::vector<int64_t> attr_ints(const std::string& name,
                                 const std::vector<int64_t>& fallback = {}) const;
  std::vector<float> attr_floats(const std::string& name,
                                 const std::vector<float>& fallback = {}) const;
  at::Tensor attr_tensor(const std::string& name) const;  // required

  // Throws segslim::Error prefixed with the node's op type and name.
  [[noreturn]] void fail(const std::string& message) const;

 private:
  const onnx::AttributeProto* find(const std::string& name) const;
  const onnx::NodeProto& node_;
  int64_t opset_;
  bool training_;
};

using Kernel = std::function<Tensors(const NodeContext&, const Tensors&)>;

struct OpInfo {
  Kernel run;
  // Input slots whose float initializers are trainable weights (Conv W and B, BN scale and
  // bias, PRelu slope, Gemm B and C, ...).
  std::vector<int> weight_inputs;
  // Only initializers with at least this many elements in weight_inputs become weights: the
  // elementwise ops use 2, so a scalar epsilon or exponent stays a constant.
  int64_t min_weight_numel = 1;
  // Input slots holding state the op updates in training (BN running mean / variance).
  std::vector<int> buffer_inputs;
};

class Registry {
 public:
  static const Registry& instance();
  void add(const std::string& op_type, OpInfo info);
  const OpInfo* find(const std::string& op_type) const;
  std::vector<std::string> op_types() const;

 private:
  std::map<std::string, OpInfo> ops_;
};

// Checks that every node of the graph has a kernel. Throws one error listing every
// unsupported op type with one node name each.
void check_supported(const onnx::GraphProto& graph, const std::string& origin);

// ---- helpers shared by kernels ----
// Normalizes a possibly negative axis against `rank`, failing with the node's name.
int64_t normalize_axis(const NodeContext& ctx, int64_t axis, int64_t rank);
// Reads a 1-D int64/int32 tensor (shape, axes, pads, ...) into a vector on the host.
std::vector<int64_t> to_int_vector(const at::Tensor& t);
// Normalizes every axis and fails on a repeated one.
std::vector<int64_t> normalize_axes(const NodeContext& ctx, std::vector<int64_t> axes,
                                    int64_t rank);
// Transpose's perm for an input of `rank`: the attribute (negative entries counted from the
// end) or, by default, the dimensions reversed; fails unless it is a permutation of 0..rank-1.
std::vector<int64_t> transpose_perm(const NodeContext& ctx, int64_t rank);
// A per-spatial-axis attribute (strides, dilations, ...) of length n, default `fallback` each.
std::vector<int64_t> spatial_attr(const NodeContext& ctx, const std::string& name, size_t n,
                                  int64_t fallback);
// Operands may sit on different devices: integer initializers and Constant outputs stay on
// the host while activations live on the executor's device. Moves every operand to the first
// non-host device found (small constants are cheap to copy; activations never move).
Tensors on_common_device(const Tensors& in);
// Input i if present and defined.
inline bool has_input(const Tensors& in, size_t i) { return i < in.size() && in[i].defined(); }

// One registration function per op family file.
void register_conv_ops(Registry& r);
void register_normalization_ops(Registry& r);
void register_activation_ops(Registry& r);
void register_elementwise_ops(Registry& r);
void register_tensor_ops(Registry& r);
void register_resize_ops(Registry& r);
void register_pool_ops(Registry& r);
void register_reduce_ops(Registry& r);
void register_matmul_ops(Registry& r);
void register_quantize_ops(Registry& r);

}  // namespace segslim::ops
