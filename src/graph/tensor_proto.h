#pragma once
// Conversion between ONNX TensorProto (initializers, Constant values, test data) and ATen.
#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include <string>

namespace segslim {

// Copies the tensor's data (raw_data or the typed repeated fields) into a CPU at::Tensor of
// the matching dtype. Throws naming the tensor for unsupported element types or external data.
at::Tensor tensor_from_proto(const onnx::TensorProto& proto);

// Writes a tensor (any device; made contiguous on CPU) as raw_data with the given name.
onnx::TensorProto tensor_to_proto(const at::Tensor& tensor, const std::string& name);

// ONNX TensorProto::DataType <-> at::ScalarType. Throws for types ATen cannot hold.
at::ScalarType scalar_type_from_onnx(int32_t onnx_type, const std::string& what);
int32_t onnx_type_from_scalar(at::ScalarType type);

}  // namespace segslim
