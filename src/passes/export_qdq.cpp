#include "passes/export_qdq.h"

#include <set>

#include "graph/tensor_proto.h"
#include "ops/quantize.h"
#include "passes/graph_util.h"

namespace segslim::passes {

onnx::ModelProto export_qdq(const onnx::ModelProto& qdq_model) {
  onnx::ModelProto out = qdq_model;
  auto* graph = out.mutable_graph();
  const auto consumers = detail::consumers_of(*graph);
  const auto outputs = detail::graph_output_names(*graph);
  auto init_tensor = [&](const std::string& name, at::Tensor* t) {
    const int i = name.empty() ? -1 : detail::find_initializer(*graph, name);
    if (i < 0) return false;
    *t = tensor_from_proto(graph->initializer(i));
    return true;
  };

  std::set<int> removed_nodes;
  std::set<std::string> freed;
  for (int i = 0; i < graph->node_size(); ++i) {
    const onnx::NodeProto& q = graph->node(i);
    if (q.op_type() != "QuantizeLinear" || q.input_size() < 3 || q.output_size() != 1) continue;
    const std::string& q_out = q.output(0);
    auto readers = consumers.find(q_out);
    if (outputs.count(q_out) || readers == consumers.end()) continue;
    bool only_dq = true;
    for (int c : readers->second)
      only_dq = only_dq && graph->node(c).op_type() == "DequantizeLinear" &&
                graph->node(c).input(0) == q_out;
    if (!only_dq) continue;
    at::Tensor w, scale, zp;
    if (!init_tensor(q.input(0), &w) || !init_tensor(q.input(1), &scale) ||
        !init_tensor(q.input(2), &zp) || w.scalar_type() != at::kFloat)
      continue;
    int64_t axis = -1;
    if (scale.numel() > 1) {
      axis = 1;
      for (const auto& a : q.attribute())
        if (a.name() == "axis") axis = a.i();
      if (axis < 0) axis += w.dim();
    }
    *graph->add_initializer() = tensor_to_proto(ops::quantize_tensor(w, scale, zp, axis), q_out);
    freed.insert(q.input(0));
    removed_nodes.insert(i);
  }

  google::protobuf::RepeatedPtrField<onnx::NodeProto> kept;
  for (int i = 0; i < graph->node_size(); ++i)
    if (!removed_nodes.count(i)) *kept.Add() = graph->node(i);
  graph->mutable_node()->Swap(&kept);
  // The Q output is an initializer now; a shape annotation of it would duplicate that.
  std::set<std::string> now_init;
  for (const auto& init : graph->initializer()) now_init.insert(init.name());
  auto* vi = graph->mutable_value_info();
  for (int i = vi->size() - 1; i >= 0; --i)
    if (now_init.count(vi->Get(i).name())) vi->DeleteSubrange(i, 1);
  detail::remove_unused_initializers(graph, freed);
  return out;
}

}  // namespace segslim::passes
