#include "passes/fold_batchnorm.h"

#include <set>

#include "graph/tensor_proto.h"
#include "passes/graph_util.h"

namespace segslim::passes {
namespace {

float float_attr(const onnx::NodeProto& node, const std::string& name, float fallback) {
  for (const auto& a : node.attribute())
    if (a.name() == name) return a.f();
  return fallback;
}

int64_t int_attr(const onnx::NodeProto& node, const std::string& name, int64_t fallback) {
  for (const auto& a : node.attribute())
    if (a.name() == name) return a.i();
  return fallback;
}

}  // namespace

onnx::ModelProto fold_batchnorm(const onnx::ModelProto& model, int* folded) {
  onnx::ModelProto out = model;
  auto* graph = out.mutable_graph();
  const auto consumers = detail::consumers_of(*graph);
  const auto outputs = detail::graph_output_names(*graph);
  std::map<std::string, int> producer;
  for (int i = 0; i < graph->node_size(); ++i)
    for (const auto& o : graph->node(i).output()) producer[o] = i;
  std::set<std::string> taken = detail::used_names(*graph);

  auto initializer = [&](const std::string& name) -> const onnx::TensorProto* {
    const int i = name.empty() ? -1 : detail::find_initializer(*graph, name);
    return i < 0 ? nullptr : &graph->initializer(i);
  };
  auto read_count = [&](const std::string& name) {
    auto it = consumers.find(name);
    return it == consumers.end() ? size_t{0} : it->second.size();
  };

  std::set<int> removed_nodes;
  std::set<std::string> freed;  // BN parameters and replaced conv tensors, maybe now unused
  std::set<std::string> stale_values;
  int count = 0;
  for (int b = 0; b < graph->node_size(); ++b) {
    const onnx::NodeProto& bn = graph->node(b);
    if (bn.op_type() != "BatchNormalization" || bn.input_size() != 5) continue;
    // Training-mode BN (opset 14 training_mode, or extra running-stat outputs) is not folded.
    if (int_attr(bn, "training_mode", 0) != 0 || bn.output_size() != 1) continue;
    const std::string& x = bn.input(0);
    auto p = producer.find(x);
    if (p == producer.end()) continue;
    onnx::NodeProto* conv = graph->mutable_node(p->second);
    const bool transpose = conv->op_type() == "ConvTranspose";
    if (conv->op_type() != "Conv" && !transpose) continue;
    if (read_count(x) != 1 || outputs.count(x) || conv->input_size() < 2) continue;
    const std::string w_name = conv->input(1);
    const std::string b_name = conv->input_size() > 2 ? conv->input(2) : "";
    const auto* w_proto = initializer(w_name);
    const auto* b_proto = initializer(b_name);
    if (!w_proto || (!b_name.empty() && !b_proto)) continue;
    // A weight shared with another node would change that node too.
    if (read_count(w_name) != 1 || (!b_name.empty() && read_count(b_name) != 1)) continue;
    const onnx::TensorProto* bn_params[4];
    bool ok = true;
    for (int i = 0; i < 4; ++i) ok = ok && (bn_params[i] = initializer(bn.input(i + 1)));
    if (!ok) continue;

    // Folding in double keeps the folded weights as close as float allows to W * a.
    const at::Tensor w = tensor_from_proto(*w_proto);
    if (!at::isFloatingType(w.scalar_type()) || w.dim() < 3) continue;
    const at::Tensor gamma = tensor_from_proto(*bn_params[0]).to(at::kDouble);
    const at::Tensor beta = tensor_from_proto(*bn_params[1]).to(at::kDouble);
    const at::Tensor mean = tensor_from_proto(*bn_params[2]).to(at::kDouble);
    const at::Tensor var = tensor_from_proto(*bn_params[3]).to(at::kDouble);
    const double eps = float_attr(bn, "epsilon", 1e-5f);
    const at::Tensor a = gamma / at::sqrt(var + eps);  // [C_out]
    const int64_t c_out = a.numel();
    const int64_t groups = int_attr(*conv, "group", 1);
    at::Tensor wd = w.to(at::kDouble);
    std::vector<int64_t> ones(static_cast<size_t>(w.dim() - 2), 1);
    if (!transpose) {
      // Conv weight [C_out, C_in/g, k...]: output channel c is row c.
      if (w.size(0) != c_out) continue;
      std::vector<int64_t> shape{c_out, 1};
      shape.insert(shape.end(), ones.begin(), ones.end());
      wd = wd * a.reshape(shape);
    } else {
      // ConvTranspose weight [C_in, C_out/g, k...]: input channel i belongs to group
      // i / (C_in/g) and column j of it produces output channel group * (C_out/g) + j.
      if (w.size(0) % groups || w.size(1) * groups != c_out) continue;
      std::vector<int64_t> wshape{groups, w.size(0) / groups, w.size(1)};
      std::vector<int64_t> ashape{groups, 1, w.size(1)};
      for (int64_t i = 2; i < w.dim(); ++i) wshape.push_back(w.size(i));
      ashape.insert(ashape.end(), ones.begin(), ones.end());
      wd = (wd.reshape(wshape) * a.reshape(ashape)).reshape(w.sizes());
    }
    const at::Tensor bias =
        b_proto ? tensor_from_proto(*b_proto).to(at::kDouble) : at::zeros({c_out}, at::kDouble);
    const at::Tensor folded_bias = (bias - mean) * a + beta;

    *graph->mutable_initializer(detail::find_initializer(*graph, w_name)) =
        tensor_to_proto(wd.to(w.scalar_type()), w_name);
    if (b_proto) {
      *graph->mutable_initializer(detail::find_initializer(*graph, b_name)) =
          tensor_to_proto(folded_bias.to(w.scalar_type()), b_name);
    } else {
      const std::string name = detail::unique_name(w_name + "_folded_bias", taken);
      *graph->add_initializer() = tensor_to_proto(folded_bias.to(w.scalar_type()), name);
      while (conv->input_size() < 3) conv->add_input("");
      conv->set_input(2, name);
    }
    conv->set_output(0, bn.output(0));
    stale_values.insert(x);
    for (int i = 1; i < 5; ++i) freed.insert(bn.input(i));
    removed_nodes.insert(b);
    ++count;
  }

  if (count) {
    google::protobuf::RepeatedPtrField<onnx::NodeProto> kept;
    for (int i = 0; i < graph->node_size(); ++i)
      if (!removed_nodes.count(i)) *kept.Add() = graph->node(i);
    graph->mutable_node()->Swap(&kept);
    // The conv's old output no longer exists; drop its shape annotation.
    auto* vi = graph->mutable_value_info();
    for (int i = vi->size() - 1; i >= 0; --i)
      if (stale_values.count(vi->Get(i).name())) vi->DeleteSubrange(i, 1);
    detail::remove_unused_initializers(graph, freed);
  }
  if (folded) *folded = count;
  return out;
}

}  // namespace segslim::passes
