#include "graph/model.h"

#include <onnx/checker.h>
#include <onnx/shape_inference/implementation.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/files.h"

namespace segslim {

namespace {

std::string read_file_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  SEGSLIM_CHECK(fs::exists(path), "model file not found: ", path);
  SEGSLIM_CHECK(fs::is_regular_file(path), "model path is not a regular file: ", path);
  std::ifstream in(path, std::ios::binary);
  SEGSLIM_CHECK(in, "cannot open model file ", path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

int64_t default_opset(const onnx::ModelProto& model) {
  for (const auto& op : model.opset_import()) {
    if (op.domain().empty() || op.domain() == "ai.onnx") return op.version();
  }
  throw Error("model imports no opset of the default ONNX domain");
}

onnx::ModelProto parse_model(const std::string& bytes, const std::string& origin,
                             const LoadOptions& options) {
  SEGSLIM_CHECK(!bytes.empty(), origin, ": file is empty, not an ONNX model");
  onnx::ModelProto model;
  // ParseFromString fails on random bytes and on truncated protobuf streams alike.
  SEGSLIM_CHECK(model.ParseFromString(bytes), origin,
                ": not a valid ONNX model (protobuf parse failed: the file is corrupted, "
                "truncated or not ONNX)");
  SEGSLIM_CHECK(model.has_graph() && model.graph().node_size() > 0, origin,
                ": parsed, but holds no graph nodes; not an ONNX model");
  if (options.check_opset) {
    int64_t opset = -1;
    try {
      opset = default_opset(model);
    } catch (const Error& e) {
      throw Error(str_cat(origin, ": ", e.what()));
    }
    SEGSLIM_CHECK(opset >= kMinOpset && opset <= kMaxOpset, origin, ": opset ", opset,
                  " is out of the supported range [", kMinOpset, ", ", kMaxOpset,
                  "]; convert the model (e.g. onnx.version_converter) to an opset in range");
  }
  if (options.run_checker) {
    try {
      onnx::checker::check_model(model);
    } catch (const std::exception& e) {
      throw Error(str_cat(origin, ": the ONNX checker rejected the model: ", e.what()));
    }
  }
  if (options.infer_shapes) {
    try {
      onnx::shape_inference::InferShapes(model);
    } catch (const std::exception& e) {
      throw Error(str_cat(origin, ": ONNX shape inference failed: ", e.what()));
    }
  }
  return model;
}

onnx::ModelProto load_model(const std::string& path, const LoadOptions& options) {
  return parse_model(read_file_bytes(path), path, options);
}

void save_model(const onnx::ModelProto& model, const std::string& path) {
  std::string bytes;
  SEGSLIM_CHECK(model.SerializeToString(&bytes), "cannot serialize model for ", path,
                " (is it larger than 2 GiB?)");
  write_file_atomic(path, bytes);
}

std::vector<const onnx::ValueInfoProto*> real_inputs(const onnx::GraphProto& graph) {
  std::set<std::string> init;
  for (const auto& t : graph.initializer()) init.insert(t.name());
  std::vector<const onnx::ValueInfoProto*> out;
  for (const auto& in : graph.input())
    if (!init.count(in.name())) out.push_back(&in);
  return out;
}

std::vector<int64_t> declared_shape(const onnx::ValueInfoProto& value) {
  std::vector<int64_t> dims;
  if (!value.type().has_tensor_type() || !value.type().tensor_type().has_shape()) return dims;
  for (const auto& d : value.type().tensor_type().shape().dim())
    dims.push_back(d.has_dim_value() ? d.dim_value() : -1);
  return dims;
}

std::string shape_string(const onnx::ValueInfoProto& value) {
  if (!value.type().has_tensor_type() || !value.type().tensor_type().has_shape()) return "?";
  std::string s;
  const auto& dims = value.type().tensor_type().shape().dim();
  for (int i = 0; i < dims.size(); ++i) {
    if (i) s += "x";
    if (dims[i].has_dim_value())
      s += std::to_string(dims[i].dim_value());
    else
      s += dims[i].dim_param().empty() ? "?" : dims[i].dim_param();
  }
  return s;
}

}  // namespace segslim
