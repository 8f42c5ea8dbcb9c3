#include "runtime/model_runner.h"

#include "common/error.h"
#include "common/strings.h"
#include "engine/engine.h"
#include "exec/executor.h"

namespace segslim {

Backend parse_backend(const std::string& name) {
  if (name == "auto") return Backend::kAuto;
  if (name == "onednn") return Backend::kOnednn;
  if (name == "torch") return Backend::kTorch;
  throw Error(str_cat("--engine '", name, "' is not valid (valid: auto, onednn, torch)"));
}

std::set<std::string> parse_int8_op_types(const std::string& text) {
  std::set<std::string> out;
  for (const std::string& t : split(text, ',')) {
    const std::string op = trim(t);
    if (op.empty()) continue;
    if (!engine::int8_capable_op_types().count(op)) {
      const auto& capable = engine::int8_capable_op_types();
      throw Error(str_cat("--int8-ops: '", op,
                          "' is not an op type the engine runs in INT8 (valid: ",
                          join({capable.begin(), capable.end()}), ")"));
    }
    out.insert(op);
  }
  return out;
}

namespace {

ModelRunner torch_runner(const onnx::ModelProto& model, const RunnerOptions& o) {
  ExecutorOptions options{at::kCPU, at::kFloat, o.origin};
  options.channels_last = o.channels_last;
  auto exec = std::make_shared<Executor>(model, options);
  ModelRunner r;
  r.backend = "torch";
  r.forward = [exec](const at::Tensor& x) {
    at::InferenceMode guard;
    return exec->forward(x).contiguous();
  };
  r.state = exec;
  return r;
}

ModelRunner onednn_runner(const onnx::ModelProto& model, const RunnerOptions& o) {
  engine::EngineOptions options;
  options.origin = o.origin;
  options.int8_op_types = o.int8_op_types;
  options.profile = o.profile;
  options.half_links = o.half_links;
  auto eng = std::make_shared<engine::Engine>(model, options);
  ModelRunner r;
  r.backend = "onednn";
  r.forward = [eng](const at::Tensor& x) { return eng->run(x.contiguous()); };
  if (o.profile) r.profile = [eng] { return eng->profile(); };
  r.state = eng;
  return r;
}

}  // namespace

ModelRunner make_runner(const onnx::ModelProto& model, const RunnerOptions& options) {
  switch (options.backend) {
    case Backend::kTorch:
      return torch_runner(model, options);
    case Backend::kOnednn:
      return onednn_runner(model, options);
    case Backend::kAuto:
      try {
        return onednn_runner(model, options);
      } catch (const Error& e) {
        ModelRunner r = torch_runner(model, options);
        r.note =
            std::string("the oneDNN engine refused the model, running on LibTorch: ") + e.what();
        return r;
      }
  }
  throw Error("unknown backend");
}

}  // namespace segslim
