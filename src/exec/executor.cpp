#include "exec/executor.h"

#include <set>

#include "common/error.h"
#include "common/strings.h"
#include "graph/model.h"
#include "graph/tensor_proto.h"

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

  for (const auto& init : graph.initializer()) {
    at::Tensor t = tensor_from_proto(init);
    // Float data goes to the compute device and type; integer data (shapes, axes, indices)
    // stays on the host, where kernels read it.
    t = t.scalar_type() == at::kFloat ? t.to(options_.device, options_.float_type) : t;
    if (at::isFloatingType(t.scalar_type())) t = t.to(options_.device);
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
        buffer_set.insert(name);
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
  static const std::set<std::string> kShapeOnly = {"Unsqueeze", "Squeeze", "Reshape", "Transpose",
                                                   "Flatten",   "Identity", "Expand"};
  for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
    const auto& node = *it->node;
    if (kShapeOnly.count(node.op_type()) && node.output_size() &&
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
    values[s] = t;
  }
  for (const auto& [name, t] : feeds) {
    SEGSLIM_CHECK(slot_of_.count(name), options_.origin, ": fed tensor '", name,
                  "' is not an input of the model (inputs: ", join(input_names()), ")");
  }

  std::vector<bool> keep(slot_names_.size(), false);
  for (int s : output_slots_) keep[s] = true;
  for (const auto& name : fetch) {
    auto it = slot_of_.find(name);
    if (it == slot_of_.end()) {
      throw Error(str_cat(options_.origin, ": no tensor named '", name,
                          "' in the graph; closest names: ",
                          join(closest_names(name, value_names(), 5))));
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
      out = step.op->run(ctx, in);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      // ATen's messages carry a C++ backtrace; the first line is what matters to a user.
      std::string what = e.what();
      what = what.substr(0, what.find('\n'));
      ctx.fail(what);
    }
    if (observer_) observer_(*step.node, in, out);
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
