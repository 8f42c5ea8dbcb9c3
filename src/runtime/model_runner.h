#pragma once
// One way to run a model for inference, whichever backend: the oneDNN engine (the default) or
// the LibTorch executor (reference, training path). eval, predict and bench take --engine.
#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include <functional>
#include <memory>
#include <string>

namespace segslim {

enum class Backend { kAuto, kOnednn, kTorch };

// "auto" | "onednn" | "torch"; anything else is an Error listing the valid names.
Backend parse_backend(const std::string& name);

struct ModelRunner {
  std::string backend;  // "onednn" or "torch": what actually runs
  std::string note;     // why auto chose torch, when it did
  // float32 NCHW CPU batch -> first output (float32 NCHW).
  std::function<at::Tensor(const at::Tensor&)> forward;
  std::shared_ptr<void> state;  // keeps the engine / executor alive
};

// kAuto: the oneDNN engine when it accepts the model, else the LibTorch executor (with a note
// naming what the engine refused). kOnednn refuses models the engine cannot run.
// `channels_last` applies to the LibTorch executor: its fastest CPU layout, for benchmarks. Off
// by default: another summation order moves a few quantized values across a rounding boundary,
// so eval and predict use the exact numerics compress trained and evaluated with.
ModelRunner make_runner(const onnx::ModelProto& model, Backend backend, const std::string& origin,
                        bool channels_last = false);

}  // namespace segslim
