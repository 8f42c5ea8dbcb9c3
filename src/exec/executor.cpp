#include "exec/executor.h"

#include <set>

#include "common/error.h"
#include "common/strings.h"
#include "graph/model.h"
#include "graph/tensor_proto.h"
#include "ops/quantize.h"

namespace segslim {

Executor::Executor(onnx::ModelProto model, ExecutorOptions options)
    : model_(std::move(model)), options_(std::move(options)) {
  opset_ = default_opset(model_);
  ops::check_supported(model_.graph(), options_.origin);
  compile();
}

int Executor::slot(const std::string& name) {
  auto it = slot_of_.find(name);
  if (it != slot_of_.end()) return it->second;
  const int s = static_cast<int>(slot_names_.size());
  slot_of_[name] = s;
  slot_names_.push_back(name);
  persistent_.emplace_back();
  return s;
}

void Executor::compile() {
  const auto& graph = model_.graph();
  const auto& registry = ops::Registry::instance();

  // Float data goes to the compute device and type; integer data (shapes, axes, indices)
  // stays on the host, where kernels read it.
  auto place = [&](at::Tensor t) {
    t = t.scalar_type() == at::kFloat ? t.to(options_.device, options_.float_type) : t;
    if (!at::isFloatingType(t.scalar_type())) return t;
    t = t.to(options_.device);
    return options_.channels_last && t.dim() == 4 ? t.contiguous(at::MemoryFormat::ChannelsLast)
                                                  : t;
  };
  for (const auto& init : graph.initializer()) {
    at::Tensor t = place(tensor_from_proto(init));
    persistent_[slot(init.name())] = t;
    initializer_by_name_[init.name()] = t;
  }
  for (const auto* in : real_inputs(graph)) input_slots_.push_back(slot(in->name()));

  // Nodes must be topologically sorted (the ONNX spec requires it; the checker verifies it).
  std::set<int> produced;
  for (int s : input_slots_) produced.insert(s);
  for (const auto& init : graph.initializer()) produced.insert(slot_of_[init.name()]);

  // Weight slots name the tensors a kernel treats as parameters. PyTorch often routes a
  // parameter through a shape-only op first (PReLU's slope through Unsqueeze, a Linear weight
  // through Transpose), so weight-ness also flows backwards through such ops to the
  // initializer they read.
  std::set<std::string> weight_values, buffer_set;
  for (const auto& node : graph.node()) {
    // A Constant is evaluated once, here, and then lives like an initializer (same device and
    // type rule), instead of being re-parsed on every run.
    if (node.op_type() == "Constant" && node.output_size() == 1) {
      ops::NodeContext ctx(node, opset_, false);
      at::Tensor value = place(registry.find("Constant")->run(ctx, {}).at(0));
      const int s = slot(node.output(0));
      persistent_[s] = value;
      produced.insert(s);
      continue;
    }
    Step step;
    step.node = &node;
    step.op = registry.find(node.op_type());
    for (int i = 0; i < node.input_size(); ++i) {
      const std::string& name = node.input(i);
      if (name.empty()) {
        step.inputs.push_back(-1);
        continue;
      }
      const int s = slot(name);
      SEGSLIM_CHECK(produced.count(s), options_.origin, ": node '", node.name(), "' (",
                    node.op_type(), ") reads '", name,
                    "', which no earlier node, input or initializer produces");
      step.inputs.push_back(s);
      const auto& w = step.op->weight_inputs;
      const auto& b = step.op->buffer_inputs;
      auto init = initializer_by_name_.find(name);
      const bool is_init = init != initializer_by_name_.end();
      if (std::find(b.begin(), b.end(), i) != b.end()) {
        if (is_init) buffer_set.insert(name);  // computed statistics are no state to keep
      } else if (std::find(w.begin(), w.end(), i) != w.end() &&
                 (!is_init || init->second.numel() >= step.op->min_weight_numel)) {
        weight_values.insert(name);
      }
    }
    for (int i = 0; i < node.output_size(); ++i) {
      const std::string& name = node.output(i);
      if (name.empty()) {
        step.outputs.push_back(-1);
        continue;
      }
      const int s = slot(name);
      produced.insert(s);
      step.outputs.push_back(s);
    }
    steps_.push_back(std::move(step));
  }
  fuse_qdq_pairs(weight_values, buffer_set);
  // Shape-only ops and Q/DQ pass weight-ness from their output back to their data input:
  // in a QAT student the FP32 weight reaches Conv through QuantizeLinear -> DequantizeLinear.
  // Walk the graph's nodes (not the steps: fused DQ steps no longer exist) backwards.
  static const std::set<std::string> kPassThrough = {
      "Unsqueeze", "Squeeze", "Reshape",        "Transpose",       "Flatten",
      "Identity",  "Expand",  "QuantizeLinear", "DequantizeLinear"};
  for (int i = graph.node_size() - 1; i >= 0; --i) {
    const auto& node = graph.node(i);
    if (kPassThrough.count(node.op_type()) && node.output_size() && node.input_size() &&
        weight_values.count(node.output(0)))
      weight_values.insert(node.input(0));
  }
  for (const auto& out : graph.output()) {
    auto it = slot_of_.find(out.name());
    SEGSLIM_CHECK(it != slot_of_.end() && produced.count(it->second), options_.origin,
                  ": graph output '", out.name(), "' is produced by no node");
    output_slots_.push_back(it->second);
  }

  for (const auto& name : weight_values) {
    auto init = initializer_by_name_.find(name);
    if (init == initializer_by_name_.end() || !at::isFloatingType(init->second.scalar_type()))
      continue;
    if (buffer_set.count(name)) continue;  // a tensor used as BN statistics is never trained
    initializer_by_name_[name].requires_grad_(true);
    weight_names_.push_back(name);
  }
  buffer_names_.assign(buffer_set.begin(), buffer_set.end());

  // Liveness: a non-persistent slot is released after its last reader, so evaluation holds
  // only the live activations (autograd keeps what backward needs by itself).
  std::vector<int> last_reader(slot_names_.size(), -1);
  for (size_t i = 0; i < steps_.size(); ++i)
    for (int s : steps_[i].inputs)
      if (s >= 0) last_reader[s] = static_cast<int>(i);
  for (size_t s = 0; s < last_reader.size(); ++s)
    if (last_reader[s] >= 0 && !persistent_[s].defined())
      steps_[last_reader[s]].release.push_back(static_cast<int>(s));
}

namespace {

int64_t int_attr(const onnx::NodeProto& node, const std::string& name, int64_t fallback) {
  for (const auto& a : node.attribute())
    if (a.name() == name) return a.i();
  return fallback;
}

const std::string& optional_input(const onnx::NodeProto& node, int i) {
  static const std::string kNone;
  return i < node.input_size() ? node.input(i) : kNone;
}

}  // namespace

// A Q is fused with its consumers when every consumer is a DQ reading the Q output as x with
// the very same scale and zero-point tensors and axis, and the Q output is no graph output.
// The fused step takes the Q's place in the order (its inputs are the DQs' other inputs, so
// every DQ output can be produced there) and the DQ steps disappear.
void Executor::fuse_qdq_pairs(std::set<std::string>& weight_values,
                              std::set<std::string>& buffer_set) {
  if (!options_.fuse_qdq) return;
  std::set<std::string> graph_outputs;
  for (const auto& out : model_.graph().output()) graph_outputs.insert(out.name());
  std::unordered_map<std::string, std::vector<size_t>> consumers;
  for (size_t i = 0; i < steps_.size(); ++i) {
    std::set<std::string> seen;
    for (const auto& name : steps_[i].node->input())
      if (!name.empty() && seen.insert(name).second) consumers[name].push_back(i);
  }
  std::vector<bool> drop(steps_.size(), false);
  for (size_t i = 0; i < steps_.size(); ++i) {
    const onnx::NodeProto& q = *steps_[i].node;
    if (q.op_type() != "QuantizeLinear" || q.input_size() < 2 || q.output_size() != 1) continue;
    const std::string& q_out = q.output(0);
    if (q_out.empty() || graph_outputs.count(q_out) || !consumers.count(q_out)) continue;
    const int64_t axis = int_attr(q, "axis", 1);
    const auto& readers = consumers.at(q_out);
    bool ok = true;
    for (size_t c : readers) {
      const onnx::NodeProto& dq = *steps_[c].node;
      ok = ok && dq.op_type() == "DequantizeLinear" && dq.input(0) == q_out &&
           optional_input(dq, 1) == q.input(1) && optional_input(dq, 2) == optional_input(q, 2) &&
           int_attr(dq, "axis", 1) == axis && dq.output_size() == 1 && !dq.output(0).empty();
    }
    if (!ok) continue;
    Step fused = steps_[i];
    fused.fused_qdq = true;
    fused.q_output = fused.outputs.at(0);
    fused.outputs.clear();
    fused.axis = axis;
    for (size_t c : readers) {
      fused.dq_nodes.push_back(steps_[c].node);
      fused.outputs.push_back(steps_[c].outputs.at(0));
      drop[c] = true;
    }
    // LSQ trains per-tensor scales only; per-channel (weight) scales follow the weights.
    const std::string& scale = q.input(1);
    auto init = initializer_by_name_.find(scale);
    if (options_.learnable_quant_scales && init != initializer_by_name_.end() &&
        at::isFloatingType(init->second.scalar_type()) && init->second.numel() == 1) {
      fused.learnable = true;
      buffer_set.erase(scale);
      weight_values.insert(scale);
    }
    steps_[i] = std::move(fused);
  }
  std::vector<Step> kept;
  for (size_t i = 0; i < steps_.size(); ++i)
    if (!drop[i]) kept.push_back(std::move(steps_[i]));
  steps_ = std::move(kept);
}

ops::Tensors Executor::run_step(const Step& step, const ops::Tensors& in) {
  ops::NodeContext ctx(*step.node, opset_, training_);
  if (!step.fused_qdq) return step.op->run(ctx, in);
  const at::Tensor zp = ops::has_input(in, 2) ? in[2] : at::Tensor();
  at::Tensor y = ops::fake_quantize(in.at(0), in.at(1), zp, step.axis, step.learnable);
  return ops::Tensors(step.outputs.size(), y);
}

TensorMap Executor::run(const TensorMap& feeds, const std::vector<std::string>& fetch) {
  std::vector<at::Tensor> values(persistent_);
  for (int s : input_slots_) {
    const std::string& name = slot_names_[s];
    auto it = feeds.find(name);
    SEGSLIM_CHECK(it != feeds.end(), options_.origin, ": input '", name,
                  "' was not fed (inputs: ", join(input_names()), ")");
    at::Tensor t = it->second;
    // float32 follows the executor's float type (double in gradient checks); other float
    // types (half, double) are kept, as the model declared them.
    if (t.scalar_type() == at::kFloat) t = t.to(options_.device, options_.float_type);
    if (at::isFloatingType(t.scalar_type())) t = t.to(options_.device);
    if (options_.channels_last && t.dim() == 4 && at::isFloatingType(t.scalar_type()))
      t = t.contiguous(at::MemoryFormat::ChannelsLast);
    values[s] = t;
  }
  for (const auto& [name, t] : feeds) {
    auto it = slot_of_.find(name);
    const bool is_input =
        it != slot_of_.end() &&
        std::find(input_slots_.begin(), input_slots_.end(), it->second) != input_slots_.end();
    SEGSLIM_CHECK(is_input, options_.origin, ": fed tensor '", name,
                  "' is not an input of the model (inputs: ", join(input_names()), ")");
  }

  std::vector<bool> keep(slot_names_.size(), false);
  for (int s : output_slots_) keep[s] = true;
  for (const auto& name : fetch) {
    auto it = slot_of_.find(name);
    if (it == slot_of_.end()) {
      throw Error(
          str_cat(options_.origin, ": no tensor named '", name,
                  "' in the graph; closest names: ", join(closest_names(name, value_names(), 5))));
    }
    keep[it->second] = true;
  }

  ops::Tensors in;
  for (const auto& step : steps_) {
    in.clear();
    for (int s : step.inputs) in.push_back(s >= 0 ? values[s] : at::Tensor());
    ops::NodeContext ctx(*step.node, opset_, training_);
    ops::Tensors out;
    try {
      out = run_step(step, in);
      // A fused Q's integer output exists only when someone fetches it.
      if (step.fused_qdq && keep[step.q_output])
        values[step.q_output] = step.op->run(ctx, in).at(0);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      // ATen's messages carry a C++ backtrace; the first line is what matters to a user.
      std::string what = e.what();
      what = what.substr(0, what.find('\n'));
      ctx.fail(what);
    }
    if (observer_) {
      if (step.fused_qdq) {
        observer_(*step.node, in, {});
        for (size_t i = 0; i < step.dq_nodes.size(); ++i)
          observer_(*step.dq_nodes[i],
                    {at::Tensor(), in.at(1), ops::has_input(in, 2) ? in[2] : at::Tensor()},
                    {out[i]});
      } else {
        observer_(*step.node, in, out);
      }
    }
    for (size_t i = 0; i < step.outputs.size(); ++i) {
      if (step.outputs[i] < 0) continue;
      if (i >= out.size() || !out[i].defined())
        ctx.fail(str_cat("kernel produced no value for output ", i));
      values[step.outputs[i]] = std::move(out[i]);
    }
    for (int s : step.release)
      if (!keep[s]) values[s] = at::Tensor();
  }

  TensorMap result;
  for (int s : output_slots_) result[slot_names_[s]] = values[s];
  for (const auto& name : fetch) result[name] = values[slot_of_.at(name)];
  return result;
}

at::Tensor Executor::forward(const at::Tensor& input) {
  SEGSLIM_CHECK(input_slots_.size() == 1, options_.origin, ": forward() needs a model with one ",
                "input; this one has ", input_slots_.size(), " (", join(input_names()), ")");
  auto result = run({{slot_names_[input_slots_[0]], input}});
  return result.at(slot_names_[output_slots_[0]]);
}

std::vector<std::pair<std::string, at::Tensor>> Executor::named_weights() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& n : weight_names_) out.emplace_back(n, initializer_by_name_.at(n));
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> Executor::named_buffers() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& n : buffer_names_) out.emplace_back(n, initializer_by_name_.at(n));
  return out;
}

std::vector<at::Tensor> Executor::weights() const {
  std::vector<at::Tensor> out;
  for (const auto& n : weight_names_) out.push_back(initializer_by_name_.at(n));
  return out;
}

onnx::ModelProto Executor::export_model() const {
  onnx::ModelProto out = model_;
  auto* graph = out.mutable_graph();
  for (auto& init : *graph->mutable_initializer()) {
    const at::Tensor& t = initializer_by_name_.at(init.name());
    const auto original_type = init.data_type();
    init = tensor_to_proto(t.detach().to(scalar_type_from_onnx(original_type, init.name())),
                           init.name());
  }
  return out;
}

std::vector<std::string> Executor::input_names() const {
  std::vector<std::string> out;
  for (int s : input_slots_) out.push_back(slot_names_[s]);
  return out;
}

std::vector<std::string> Executor::output_names() const {
  std::vector<std::string> out;
  for (int s : output_slots_) out.push_back(slot_names_[s]);
  return out;
}

std::vector<std::string> Executor::value_names() const { return slot_names_; }

}  // namespace segslim
