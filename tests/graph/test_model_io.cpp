#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/files.h"
#include "graph/model.h"
#include "graph/tensor_proto.h"
#include "support/test_support.h"

namespace segslim::testing {
namespace {

const std::string kModel = source_dir() + "/tests/exec/fixtures/tiny_segnet/model.onnx";

std::string file_bytes(const std::string& path) { return read_file(path, "test file"); }

void expect_error(const std::string& path, const std::string& fragment) {
  try {
    load_model(path);
    FAIL() << "expected an error loading " << path;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << "message should name the file: " << msg;
  }
}

TEST(ModelIo, MissingFile) { expect_error(temp_dir() + "/nope.onnx", "not found"); }

TEST(ModelIo, EmptyFile) { expect_error(write_temp_file("empty.onnx", ""), "empty"); }

TEST(ModelIo, RandomBytesAreNotOnnx) {
  expect_error(write_temp_file("random.onnx", "\x12\x99\xff\x01garbage that is no protobuf"),
               "not a valid ONNX model");
}

TEST(ModelIo, TruncatedModel) {
  const std::string bytes = file_bytes(kModel);
  expect_error(write_temp_file("truncated.onnx", bytes.substr(0, bytes.size() / 2)),
               "not a valid ONNX model");
}

TEST(ModelIo, OpsetOutOfRange) {
  onnx::ModelProto m = load_model(kModel);
  m.mutable_opset_import(0)->set_version(3);
  const std::string path = temp_dir() + "/opset3.onnx";
  save_model(m, path);
  expect_error(path, "opset 3 is out of the supported range [7, 17]");
}

TEST(ModelIo, SaveIsLosslessAndAtomic) {
  LoadOptions raw;
  raw.infer_shapes = false;  // compare the file as the exporter wrote it
  onnx::ModelProto m = load_model(kModel, raw);
  const std::string path = temp_dir() + "/roundtrip/model.onnx";
  save_model(m, path);
  EXPECT_EQ(file_bytes(path), file_bytes(kModel));
  for (const auto& entry : std::filesystem::directory_iterator(temp_dir() + "/roundtrip"))
    EXPECT_EQ(entry.path().filename(), "model.onnx") << "temporary file left behind";
  onnx::ModelProto again = load_model(path, raw);
  EXPECT_EQ(again.graph().initializer_size(), m.graph().initializer_size());
  EXPECT_EQ(default_opset(again), 13);
}

TEST(ModelIo, ShapeInferenceFillsValueInfo) {
  onnx::ModelProto m = load_model(kModel);
  EXPECT_GT(m.graph().value_info_size(), 10);
  EXPECT_EQ(shape_string(m.graph().input(0)), "Nx3xHxW");
}

TEST(TensorProto, RoundTripsTypesAndTypedFields) {
  for (auto type : {at::kFloat, at::kDouble, at::kLong, at::kInt, at::kByte, at::kChar}) {
    at::Tensor t = (at::arange(24, at::kDouble).reshape({2, 3, 4}) - 7).to(type);
    at::Tensor back = tensor_from_proto(tensor_to_proto(t, "t"));
    EXPECT_EQ(back.scalar_type(), type);
    EXPECT_TRUE(back.equal(t));
  }
  onnx::TensorProto typed;
  typed.set_name("typed");
  typed.set_data_type(onnx::TensorProto::FLOAT);
  typed.add_dims(3);
  for (float v : {1.5f, -2.f, 3.25f}) typed.add_float_data(v);
  EXPECT_TRUE(tensor_from_proto(typed).equal(at::tensor({1.5f, -2.f, 3.25f})));
  typed.set_data_type(onnx::TensorProto::STRING);
  EXPECT_THROW(tensor_from_proto(typed), Error);
}

}  // namespace
}  // namespace segslim::testing
