#pragma once
// One way to run a model for inference, whichever backend: the oneDNN engine (the default) or
// the LibTorch executor (reference, training path). eval, predict and bench take --engine and
// --int8-ops.
#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace segslim {

enum class Backend { kAuto, kOnednn, kTorch };

// "auto" | "onednn" | "torch"; anything else is an Error listing the valid names.
Backend parse_backend(const std::string& name);

struct ModelRunner {
  std::string backend;  // "onednn" or "torch": what actually runs
  std::string note;     // why auto chose torch, when it did
  // float32 NCHW CPU batch -> first output (float32 NCHW).
  std::function<at::Tensor(const at::Tensor&)> forward;
  // oneDNN with RunnerOptions::profile: time per compiled step so far; else empty.
  std::function<std::vector<engine::StepTime>()> profile;
  std::shared_ptr<void> state;  // keeps the engine / executor alive
};

struct RunnerOptions {
  Backend backend = Backend::kOnednn;
  std::string origin = "model";  // for error messages
  // LibTorch: channels_last, its fastest CPU layout, for benchmarks. Off by default: another
  // summation order moves a few quantized values across a rounding boundary, so eval and
  // predict on LibTorch use the exact numerics compress trained and evaluated with.
  bool channels_last = false;
  // oneDNN: the op types that run INT8 (EngineOptions::int8_op_types; empty = all the model
  // quantizes) and per-step timing.
  std::set<std::string> int8_op_types;
  bool profile = false;
  bool half_links = true;  // EngineOptions::half_links
};

// kAuto: the oneDNN engine when it accepts the model, else the LibTorch executor (with a note
// naming what the engine refused). kOnednn refuses models the engine cannot run.
ModelRunner make_runner(const onnx::ModelProto& model, const RunnerOptions& options);

// "Conv,ConvTranspose" -> {"Conv", "ConvTranspose"}; an unknown op type is an Error listing the
// op types the engine can run in INT8. Empty text: empty set (all the model quantizes).
std::set<std::string> parse_int8_op_types(const std::string& text);

}  // namespace segslim
