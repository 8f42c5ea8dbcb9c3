#include "passes/insert_qdq.h"

#include <map>
#include <set>

#include "common/error.h"
#include "graph/model.h"
#include "graph/tensor_proto.h"
#include "ops/registry.h"
#include "passes/graph_util.h"
#include "passes/name_pattern.h"
#include "passes/weight_scales.h"

namespace segslim::passes {
namespace {

int64_t int_attr(const onnx::NodeProto& node, const std::string& name, int64_t fallback) {
  for (const auto& a : node.attribute())
    if (a.name() == name) return a.i();
  return fallback;
}

// The output-channel axis of a node's weight (input 1), or -1 for per-tensor.
int weight_axis(const onnx::NodeProto& node, int64_t rank) {
  const std::string& t = node.op_type();
  if (t == "Conv") return 0;                                              // [C_out, C_in/g, k...]
  if (t == "ConvTranspose") return 1;                                     // [C_in, C_out/g, k...]
  if (t == "Gemm") return int_attr(node, "transB", 0) ? 0 : 1;            // B is [K, N] or [N, K]
  if (t == "MatMul") return rank >= 2 ? static_cast<int>(rank - 1) : -1;  // [.., K, N]
  return -1;
}

// Pad with mode constant and a zero (or absent) value.
bool is_zero_pad(const onnx::GraphProto& graph, const onnx::NodeProto& n) {
  if (n.op_type() != "Pad" || n.input_size() < 1) return false;
  for (const auto& a : n.attribute())
    if (a.name() == "mode" && a.s() != "constant") return false;
  if (n.input_size() < 3 || n.input(2).empty()) return true;
  const int c = detail::find_initializer(graph, n.input(2));
  if (c < 0) return false;
  const at::Tensor v = tensor_from_proto(graph.initializer(c));
  return v.numel() == 1 && v.item<double>() == 0;
}

// A weight written as Transpose(initializer) (PyTorch's export of nn.Linear without constant
// folding: MatMul(x, Transpose(W))) becomes an initializer of the Transpose's output name,
// holding the transposed tensor, and the Transpose goes: the weight is then quantized like any
// other (per output channel, int8), and an int8 runtime gets a constant int8 matrix.
void fold_weight_transposes(onnx::GraphProto* graph, const std::set<std::string>& op_types,
                            int64_t opset) {
  std::set<std::string> weights;
  for (const auto& n : graph->node())
    if (op_types.count(n.op_type()) && n.input_size() > 1) weights.insert(n.input(1));
  std::set<std::string> sources;
  std::vector<bool> drop(graph->node_size(), false);
  for (int i = 0; i < graph->node_size(); ++i) {
    const onnx::NodeProto& n = graph->node(i);
    if (n.op_type() != "Transpose" || n.output_size() != 1 || !weights.count(n.output(0))) continue;
    const int w = detail::find_initializer(*graph, n.input(0));
    if (w < 0 || graph->initializer(w).data_type() != onnx::TensorProto::FLOAT) continue;
    const at::Tensor t = tensor_from_proto(graph->initializer(w));
    const std::vector<int64_t> perm =
        ops::transpose_perm(ops::NodeContext(n, opset, false), t.dim());
    *graph->add_initializer() = tensor_to_proto(t.permute(perm).contiguous(), n.output(0));
    sources.insert(n.input(0));
    drop[i] = true;
  }
  if (sources.empty()) return;
  google::protobuf::RepeatedPtrField<onnx::NodeProto> kept;
  for (int i = 0; i < graph->node_size(); ++i)
    if (!drop[i]) *kept.Add() = graph->node(i);
  graph->mutable_node()->Swap(&kept);
  detail::remove_unused_initializers(graph, sources);
}

struct Pending {
  QdqSite site;
  int first_consumer = -1;
  std::vector<std::pair<int, int>> uses;  // (node index, input index)
  int onnx_zp_type = onnx::TensorProto::INT8;
};

}  // namespace

QdqModel insert_qdq(const onnx::ModelProto& model, const QuantPolicy& policy) {
  const int64_t opset = default_opset(model);
  SEGSLIM_CHECK(opset >= 13, "insert_qdq: the model has opset ", opset,
                "; quantization needs opset >= 13, the first with per-channel (axis) "
                "QuantizeLinear/DequantizeLinear for the weights. Re-export the model with "
                "opset 13 or newer.");
  QdqModel result;
  result.model = model;
  auto* graph = result.model.mutable_graph();
  fold_weight_transposes(graph, policy.op_types, opset);

  // The nodes to quantize, in graph order.
  std::vector<int> typed;
  for (int i = 0; i < graph->node_size(); ++i)
    if (policy.op_types.count(graph->node(i).op_type())) typed.push_back(i);
  std::vector<int> selected;
  const std::vector<NamePattern> not_quant(policy.not_quant_patterns.begin(),
                                           policy.not_quant_patterns.end());
  for (size_t k = 0; k < typed.size(); ++k) {
    if (policy.skip_first_last && (k == 0 || k + 1 == typed.size())) continue;
    const std::string& name = graph->node(typed[k]).name();
    bool excluded = false;
    for (const auto& p : not_quant) excluded = excluded || p.matches(name);
    if (!excluded) selected.push_back(typed[k]);
  }

  // One site per tensor, in order of first use.
  std::map<std::string, size_t> index_of;
  std::vector<Pending> pending;
  auto use = [&](const std::string& tensor, int node, int input, bool is_weight, int axis) {
    auto it = index_of.find(tensor);
    if (it == index_of.end()) {
      it = index_of.emplace(tensor, pending.size()).first;
      Pending p;
      p.site.tensor = tensor;
      p.site.is_weight = is_weight;
      p.site.axis = axis;
      p.first_consumer = node;
      if (!is_weight && policy.activation_unsigned) p.onnx_zp_type = onnx::TensorProto::UINT8;
      pending.push_back(p);
    }
    Pending& p = pending[it->second];
    p.uses.emplace_back(node, input);
    const std::string& consumer = graph->node(node).name();
    if (p.site.consumers.empty() || p.site.consumers.back() != consumer)
      p.site.consumers.push_back(consumer);
  };
  // The node producing each tensor, to look through zero padding.
  std::map<std::string, int> producer;
  for (int i = 0; i < graph->node_size(); ++i)
    for (const auto& o : graph->node(i).output()) producer[o] = i;
  std::vector<std::pair<int, int>> shared_only;  // (node, input): QuantPolicy::sum_inputs_...
  for (int i : selected) {
    const onnx::NodeProto& node = graph->node(i);
    if (node.input_size() < 1 || node.input(0).empty()) continue;
    // A pooling fed by a zero Pad (PyTorch's export of AvgPool2d(padding) with
    // count_include_pad): quantize the Pad's input instead. Q/DQ commutes with zero padding
    // (DQ(Q(0)) = 0 for any zero point), and the pair is then shared with the tensor's other
    // quantized consumers, so one int8 tensor feeds them all.
    auto pit = producer.find(node.input(0));
    if (pit != producer.end() && node.op_type().find("Pool") != std::string::npos &&
        is_zero_pad(*graph, graph->node(pit->second))) {
      use(graph->node(pit->second).input(0), pit->second, 0, false, -1);
      continue;
    }
    // Elementwise sums and concatenations (PaddleSlim's elementwise_add, concat) have no
    // weight: every runtime input is an activation, so an int8 runtime can add and concatenate
    // int8 tensors (ESPNet's residuals and hierarchical sums).
    if (node.op_type() == "Add" || node.op_type() == "Concat") {
      for (int k = 0; k < node.input_size(); ++k)
        if (!node.input(k).empty() && detail::find_initializer(*graph, node.input(k)) < 0) {
          if (policy.sum_inputs_shared_only) {
            shared_only.emplace_back(i, k);
          } else {
            use(node.input(k), i, k, false, -1);
          }
        }
      continue;
    }
    use(node.input(0), i, 0, false, -1);
    if (node.input_size() < 2) continue;
    const int w = detail::find_initializer(*graph, node.input(1));
    if (w < 0) {
      // MatMul of two runtime tensors (attention's Q K^T and A V): B is an activation too, as
      // PaddleSlim quantizes matmul's Y; a computed weight of any other type stays float
      if (node.op_type() == "MatMul" && !node.input(1).empty()) use(node.input(1), i, 1, false, -1);
      continue;
    }
    const auto& proto = graph->initializer(w);
    if (proto.data_type() != onnx::TensorProto::FLOAT) continue;
    use(node.input(1), i, 1, true, weight_axis(node, proto.dims_size()));
  }

  // Sum and concat inputs that other quantized nodes read: their pairs, now all known.
  for (const auto& [node, k] : shared_only) {
    const std::string& t = graph->node(node).input(k);
    auto it = index_of.find(t);
    if (it != index_of.end() && !pending[it->second].site.is_weight) use(t, node, k, false, -1);
  }

  // Activations read by a Concat whose output is quantized too take the Concat's scale
  // (QuantPolicy::share_concat_scales), through Concats of Concats.
  std::map<std::string, std::string> tied;  // tensor -> the Concat output whose scale it uses
  if (policy.share_concat_scales)
    for (const auto& n : graph->node()) {
      if (n.op_type() != "Concat" || n.output_size() < 1 || !index_of.count(n.output(0))) continue;
      for (const auto& in : n.input()) {
        auto it = index_of.find(in);
        if (it != index_of.end() && !pending[it->second].site.is_weight && in != n.output(0) &&
            !tied.count(in))
          tied[in] = n.output(0);
      }
    }
  auto owner = [&](std::string t) {  // the site whose scale `t` uses
    for (size_t hops = 0; tied.count(t) && hops <= tied.size(); ++hops) t = tied.at(t);
    return t;
  };

  // Build the Q/DQ nodes and initializers: the scale and zero point of each owner first.
  std::set<std::string> taken = detail::used_names(*graph);
  for (auto& p : pending)
    if (owner(p.site.tensor) == p.site.tensor) {
      p.site.scale = detail::unique_name(p.site.tensor + "_scale", taken);
      p.site.zero_point = detail::unique_name(p.site.tensor + "_zero_point", taken);
    }
  std::map<int, std::vector<onnx::NodeProto>> before;  // node index -> nodes to emit first
  for (auto& p : pending) {
    QdqSite& site = p.site;
    const std::string& t = site.tensor;
    const std::string q_out = detail::unique_name(t + "_quantized", taken);
    const std::string dq_out = detail::unique_name(t + "_dequantized", taken);
    const std::string own = owner(t);
    const bool shares = own != t;
    if (shares) {
      const QdqSite& o = pending[index_of.at(own)].site;
      site.scale = o.scale;
      site.zero_point = o.zero_point;
    }
    at::Tensor scale, zp;
    if (site.is_weight) {
      const at::Tensor w =
          tensor_from_proto(graph->initializer(detail::find_initializer(*graph, t)));
      scale = abs_max_scale(w, site.axis).to(at::kFloat);
      zp = at::zeros(scale.sizes(), at::kChar);
    } else {
      scale = at::ones({}, at::kFloat);
      zp = at::zeros({}, p.onnx_zp_type == onnx::TensorProto::UINT8 ? at::kByte : at::kChar);
    }
    if (!shares) {
      *graph->add_initializer() = tensor_to_proto(scale, site.scale);
      *graph->add_initializer() = tensor_to_proto(zp, site.zero_point);
    }

    auto make = [&](const std::string& type, const std::string& in, const std::string& out) {
      onnx::NodeProto n;
      n.set_op_type(type);
      n.set_name(detail::unique_name(t + "_" + type, taken));
      n.add_input(in);
      n.add_input(site.scale);
      n.add_input(site.zero_point);
      n.add_output(out);
      if (site.axis >= 0) {
        auto* a = n.add_attribute();
        a->set_name("axis");
        a->set_type(onnx::AttributeProto::INT);
        a->set_i(site.axis);
      }
      return n;
    };
    before[p.first_consumer].push_back(make("QuantizeLinear", t, q_out));
    before[p.first_consumer].push_back(make("DequantizeLinear", q_out, dq_out));
    for (const auto& [node, input] : p.uses) graph->mutable_node(node)->set_input(input, dq_out);
    if (!shares) (site.is_weight ? result.weights : result.activations).push_back(site);
  }

  // Emit each pair right before its first consumer: after the tensor's producer (which
  // precedes every consumer), so the graph stays topologically sorted.
  google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
  for (int i = 0; i < graph->node_size(); ++i) {
    auto it = before.find(i);
    if (it != before.end())
      for (auto& n : it->second) *nodes.Add() = std::move(n);
    *nodes.Add() = graph->node(i);
  }
  graph->mutable_node()->Swap(&nodes);
  return result;
}

}  // namespace segslim::passes
