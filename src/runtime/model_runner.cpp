#include "runtime/model_runner.h"

#include "common/error.h"
#include "engine/engine.h"
#include "exec/executor.h"

namespace segslim {

Backend parse_backend(const std::string& name) {
  if (name == "auto") return Backend::kAuto;
  if (name == "onednn") return Backend::kOnednn;
  if (name == "torch") return Backend::kTorch;
  throw Error(str_cat("--engine '", name, "' is not valid (valid: auto, onednn, torch)"));
}

namespace {

ModelRunner torch_runner(const onnx::ModelProto& model, const std::string& origin,
                         bool channels_last) {
  ExecutorOptions options{at::kCPU, at::kFloat, origin};
  options.channels_last = channels_last;
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

ModelRunner onednn_runner(const onnx::ModelProto& model, const std::string& origin) {
  engine::EngineOptions options;
  options.origin = origin;
  auto eng = std::make_shared<engine::Engine>(model, options);
  ModelRunner r;
  r.backend = "onednn";
  r.forward = [eng](const at::Tensor& x) { return eng->run(x.contiguous()); };
  r.state = eng;
  return r;
}

}  // namespace

ModelRunner make_runner(const onnx::ModelProto& model, Backend backend, const std::string& origin,
                        bool channels_last) {
  switch (backend) {
    case Backend::kTorch:
      return torch_runner(model, origin, channels_last);
    case Backend::kOnednn:
      return onednn_runner(model, origin);
    case Backend::kAuto:
      try {
        return onednn_runner(model, origin);
      } catch (const Error& e) {
        ModelRunner r = torch_runner(model, origin, channels_last);
        r.note =
            std::string("the oneDNN engine refused the model, running on LibTorch: ") + e.what();
        return r;
      }
  }
  throw Error("unknown backend");
}

}  // namespace segslim
