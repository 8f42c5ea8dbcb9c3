#include <fmt/format.h>

#include <iostream>

#include "commands.h"
#include "common/files.h"
#include "exec/model_summary.h"
#include "graph/model.h"
#include "ops/registry.h"

namespace segslim::cli {

namespace {

struct InspectArgs {
  std::string model, shape, json;
};

void run_inspect(const InspectArgs& args) {
  onnx::ModelProto model = load_model(args.model);
  ops::check_supported(model.graph(), args.model);
  const auto shape =
      args.shape.empty() ? std::vector<int64_t>{} : parse_shape(args.shape, "--shape");
  ModelSummary s = summarize_model(model, shape, args.model);

  std::cout << fmt::format(
      "model      {}\nopset      {}\nnodes      {}\nparameters {} ({:.2f} M)\n", args.model,
      default_opset(model), s.num_nodes, s.num_parameters, s.num_parameters / 1e6);
  for (const auto& t : s.inputs) std::cout << fmt::format("input      {}  [{}]\n", t.name, t.shape);
  for (const auto& t : s.outputs)
    std::cout << fmt::format("output     {}  [{}]\n", t.name, t.shape);
  if (!s.shape.empty()) {
    std::string shape_text;
    for (int64_t d : s.shape) shape_text += (shape_text.empty() ? "" : "x") + std::to_string(d);
    std::cout << fmt::format("MACs       {:.3f} G at {}\n", s.macs / 1e9, shape_text);
  } else {
    std::cout << "MACs       - (dynamic input: pass --shape NxCxHxW)\n";
  }
  std::cout << "\nop histogram\n";
  for (const auto& [op, n] : s.op_histogram) std::cout << fmt::format("  {:<24}{:>6}\n", op, n);
  std::cout << fmt::format("\nquantizable layers ({})\n", s.quantizable.size());
  std::cout << fmt::format("  {:<36}{:<15}{:<16}{:>12}\n", "node", "op", "weight", "MMACs");
  for (const auto& l : s.quantizable)
    std::cout << fmt::format("  {:<36}{:<15}{:<16}{:>12.2f}\n", l.node, l.op_type, l.weight_shape,
                             l.macs / 1e6);
  std::cout << "\ndistillation node candidates (Distillation.node)\n";
  for (const auto& c : s.distill_candidates)
    std::cout << fmt::format("  {:<36}{}\n", c.tensor,
                             c.reason + (c.node.empty() ? "" : " (node " + c.node + ")"));
  if (!args.json.empty()) {
    write_file_atomic(args.json, to_json(s).dump(2) + "\n");
    std::cout << "\nwrote " << args.json << "\n";
  }
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto args = std::make_shared<InspectArgs>();
  auto* cmd = app.add_subcommand("inspect",
                                 "show a model's interface, ops, size, MACs, "
                                 "quantizable layers and distillation nodes");
  cmd->add_option("model", args->model, "ONNX model")->required();
  cmd->add_option("--shape", args->shape, "input shape NxCxHxW for the MAC count");
  cmd->add_option("--json", args->json, "also write the summary as JSON");
  cmd->callback([args] { run_inspect(*args); });
}

}  // namespace segslim::cli
