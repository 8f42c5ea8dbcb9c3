#include "exec/model_summary.h"

#include <numeric>

#include "common/error.h"
#include "exec/executor.h"
#include "graph/model.h"

namespace segslim {

namespace {

bool is_quantizable(const std::string& op) {
  return op == "Conv" || op == "ConvTranspose" || op == "MatMul" || op == "Gemm";
}

int64_t product(at::IntArrayRef dims) {
  return std::accumulate(dims.begin(), dims.end(), int64_t{1}, std::multiplies<int64_t>());
}

// Multiply-accumulates of one node from its actual input/output tensors.
int64_t node_macs(const onnx::NodeProto& node, const ops::Tensors& in, const ops::Tensors& out) {
  const std::string& op = node.op_type();
  if (out.empty() || !out[0].defined() || in.size() < 2 || !in[1].defined()) return 0;
  if (op == "Conv") {
    // every output element needs C_in/groups * prod(kernel) MACs; W is [C_out, C_in/g, k...]
    const at::Tensor& w = in[1];
    return out[0].numel() * product(w.sizes().slice(1));
  }
  if (op == "ConvTranspose") {
    // every input element is scattered through C_out/groups * prod(kernel) weights
    const at::Tensor& w = in[1];
    return in[0].numel() * product(w.sizes().slice(1));
  }
  if (op == "MatMul" || op == "Gemm") {
    // output elements times the contracted dimension
    const at::Tensor& a = in[0];
    int64_t k = a.dim() ? a.size(-1) : 1;
    for (const auto& attr : node.attribute())
      if (op == "Gemm" && attr.name() == "transA" && attr.i()) k = a.size(0);
    return out[0].numel() * k;
  }
  return 0;
}

}  // namespace

ModelSummary summarize_model(const onnx::ModelProto& model, std::vector<int64_t> shape,
                             const std::string& origin) {
  ModelSummary s;
  const auto& g = model.graph();
  for (const auto* in : real_inputs(g)) s.inputs.push_back({in->name(), shape_string(*in)});
  for (const auto& out : g.output()) s.outputs.push_back({out.name(), shape_string(out)});
  for (const auto& n : g.node()) s.op_histogram[n.op_type()]++;
  s.num_nodes = g.node_size();
  for (const auto& init : g.initializer()) {
    if (init.data_type() != onnx::TensorProto::FLOAT &&
        init.data_type() != onnx::TensorProto::DOUBLE &&
        init.data_type() != onnx::TensorProto::FLOAT16 &&
        init.data_type() != onnx::TensorProto::INT8)
      continue;
    s.num_parameters += std::accumulate(init.dims().begin(), init.dims().end(), int64_t{1},
                                        std::multiplies<int64_t>());
  }

  std::map<std::string, std::vector<int64_t>> init_dims;
  for (const auto& init : g.initializer())
    init_dims[init.name()] = {init.dims().begin(), init.dims().end()};
  std::map<std::string, size_t> layer_of_node;
  const onnx::NodeProto* last_conv = nullptr;
  for (const auto& n : g.node()) {
    if (!is_quantizable(n.op_type())) continue;
    LayerInfo layer{n.name(), n.op_type(), "", n.output(0), 0};
    if (n.input_size() > 1 && init_dims.count(n.input(1))) {
      for (int64_t d : init_dims[n.input(1)])
        layer.weight_shape += (layer.weight_shape.empty() ? "" : "x") + std::to_string(d);
    }
    layer_of_node[n.name() + "\n" + n.output(0)] = s.quantizable.size();
    s.quantizable.push_back(layer);
    if (n.op_type() == "Conv" || n.op_type() == "ConvTranspose") last_conv = &n;
  }
  for (const auto& out : g.output())
    s.distill_candidates.push_back({out.name(), "", "model output"});
  if (last_conv) {
    bool is_output = false;
    for (const auto& out : g.output()) is_output |= out.name() == last_conv->output(0);
    if (!is_output)
      s.distill_candidates.push_back(
          {last_conv->output(0), last_conv->name(), "output of the last " + last_conv->op_type()});
  }

  // Resolve the input shape: the user's, else the declared one with a symbolic batch of 1.
  const auto inputs = real_inputs(g);
  if (inputs.size() != 1) return s;  // MACs need a single image input
  if (shape.empty()) {
    shape = declared_shape(*inputs[0]);
    if (!shape.empty() && shape[0] < 0) shape[0] = 1;
    for (int64_t d : shape)
      if (d < 0) return s;  // dynamic H/W: the user must pass --shape
  }
  if (shape.empty()) return s;
  s.shape = shape;
  Executor exec(model, ExecutorOptions{at::kCPU, at::kFloat, origin});
  exec.set_node_observer(
      [&](const onnx::NodeProto& n, const ops::Tensors& in, const ops::Tensors& out) {
        const int64_t macs = node_macs(n, in, out);
        s.macs += macs;
        auto it = layer_of_node.find(n.name() + "\n" + (n.output_size() ? n.output(0) : ""));
        if (it != layer_of_node.end()) s.quantizable[it->second].macs = macs;
      });
  at::InferenceMode guard;
  exec.forward(at::zeros(shape));
  return s;
}

nlohmann::json to_json(const ModelSummary& s) {
  nlohmann::json j;
  auto tensors = [](const std::vector<TensorInfo>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& t : v) a.push_back({{"name", t.name}, {"shape", t.shape}});
    return a;
  };
  j["inputs"] = tensors(s.inputs);
  j["outputs"] = tensors(s.outputs);
  j["op_histogram"] = s.op_histogram;
  j["num_nodes"] = s.num_nodes;
  j["num_parameters"] = s.num_parameters;
  j["shape"] = s.shape;
  j["macs"] = s.macs;
  j["quantizable"] = nlohmann::json::array();
  for (const auto& l : s.quantizable)
    j["quantizable"].push_back({{"node", l.node},
                                {"op_type", l.op_type},
                                {"weight_shape", l.weight_shape},
                                {"output", l.output},
                                {"macs", l.macs}});
  j["distill_candidates"] = nlohmann::json::array();
  for (const auto& c : s.distill_candidates)
    j["distill_candidates"].push_back(
        {{"tensor", c.tensor}, {"node", c.node}, {"reason", c.reason}});
  return j;
}

}  // namespace segslim
