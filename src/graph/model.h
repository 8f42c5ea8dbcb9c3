#pragma once
// ONNX model I/O. The onnx::ModelProto itself is segslim's graph IR: it keeps names,
// initializers, opset imports and metadata exactly as the user's exporter wrote them, so a
// model saved back is the same model plus whatever a pass deliberately changed.
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>
#include <vector>

namespace segslim {

// Opsets of the default ONNX domain that the executor implements.
constexpr int64_t kMinOpset = 7;
constexpr int64_t kMaxOpset = 17;

struct LoadOptions {
  bool run_checker = true;   // onnx::checker::check_model
  bool infer_shapes = true;  // onnx::shape_inference::InferShapes (fills value_info)
  bool check_opset = true;   // default-domain opset within [kMinOpset, kMaxOpset]
};

// Reads, parses and validates an ONNX file. Throws segslim::Error naming the file and the
// problem (missing, not ONNX / truncated, checker failure, opset out of range).
onnx::ModelProto load_model(const std::string& path, const LoadOptions& options = {});

// Parses an in-memory serialized model (same validation as load_model; `origin` names it in
// error messages).
onnx::ModelProto parse_model(const std::string& bytes, const std::string& origin,
                             const LoadOptions& options = {});

// Serializes to `path` atomically: writes `path.tmp.<pid>` and renames it over `path`, so a
// crash never leaves a half-written model.
void save_model(const onnx::ModelProto& model, const std::string& path);

// The opset version of the default ("" or "ai.onnx") domain; throws when none is imported.
int64_t default_opset(const onnx::ModelProto& model);

// Graph inputs that are not initializers (the tensors a user feeds).
std::vector<const onnx::ValueInfoProto*> real_inputs(const onnx::GraphProto& graph);

// Dimensions of a value's declared type: -1 for a symbolic or unknown dimension.
std::vector<int64_t> declared_shape(const onnx::ValueInfoProto& value);

// "N x 3 x 360 x 480" style rendering of a declared shape (symbolic names kept).
std::string shape_string(const onnx::ValueInfoProto& value);

}  // namespace segslim
