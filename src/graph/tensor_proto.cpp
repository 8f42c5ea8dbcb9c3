#include "graph/tensor_proto.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"

namespace segslim {

at::ScalarType scalar_type_from_onnx(int32_t onnx_type, const std::string& what) {
  using T = onnx::TensorProto;
  switch (onnx_type) {
    case T::FLOAT:
      return at::kFloat;
    case T::DOUBLE:
      return at::kDouble;
    case T::FLOAT16:
      return at::kHalf;
    case T::BFLOAT16:
      return at::kBFloat16;
    case T::INT8:
      return at::kChar;
    case T::UINT8:
      return at::kByte;
    case T::INT16:
      return at::kShort;
    case T::INT32:
      return at::kInt;
    case T::INT64:
      return at::kLong;
    case T::BOOL:
      return at::kBool;
    default:
      break;
  }
  throw Error(str_cat(what, ": ONNX element type ", T::DataType_Name(onnx_type),
                      " is not supported (valid: float, double, float16, bfloat16, int8, "
                      "uint8, int16, int32, int64, bool)"));
}

int32_t onnx_type_from_scalar(at::ScalarType type) {
  using T = onnx::TensorProto;
  switch (type) {
    case at::kFloat:
      return T::FLOAT;
    case at::kDouble:
      return T::DOUBLE;
    case at::kHalf:
      return T::FLOAT16;
    case at::kBFloat16:
      return T::BFLOAT16;
    case at::kChar:
      return T::INT8;
    case at::kByte:
      return T::UINT8;
    case at::kShort:
      return T::INT16;
    case at::kInt:
      return T::INT32;
    case at::kLong:
      return T::INT64;
    case at::kBool:
      return T::BOOL;
    default:
      break;
  }
  throw Error(str_cat("tensor type ", c10::toString(type), " has no ONNX equivalent"));
}

namespace {

template <typename Src>
void copy_typed(const Src& field, at::Tensor& dst) {
  SEGSLIM_CHECK(static_cast<int64_t>(field.size()) == dst.numel(), "typed field holds ",
                field.size(), " values for ", dst.numel(), " elements");
  AT_DISPATCH_ALL_TYPES_AND3(at::kBool, at::kHalf, at::kBFloat16, dst.scalar_type(), "copy_typed",
                             [&] {
                               auto* p = dst.data_ptr<scalar_t>();
                               for (int64_t i = 0; i < dst.numel(); ++i)
                                 p[i] = static_cast<scalar_t>(field.Get(static_cast<int>(i)));
                             });
}

}  // namespace

at::Tensor tensor_from_proto(const onnx::TensorProto& proto) {
  const std::string what = "tensor '" + proto.name() + "'";
  SEGSLIM_CHECK(proto.data_location() != onnx::TensorProto::EXTERNAL, what,
                " stores its data externally; segslim needs the weights inside the .onnx file "
                "(onnx.save_model(..., save_as_external_data=False))");
  const at::ScalarType type = scalar_type_from_onnx(proto.data_type(), what);
  std::vector<int64_t> dims(proto.dims().begin(), proto.dims().end());
  // Validate the element count against the stored data before allocating anything: a
  // corrupted file must give an error, not a terabyte allocation.
  int64_t numel = 1;
  for (int64_t d : dims) {
    SEGSLIM_CHECK(d >= 0 && (d == 0 || numel <= (int64_t{1} << 40) / d), what,
                  ": invalid dimensions (corrupted tensor data)");
    numel *= d;
  }
  const size_t nbytes = static_cast<size_t>(numel) * c10::elementSize(type);
  if (proto.has_raw_data()) {
    SEGSLIM_CHECK(proto.raw_data().size() == nbytes, what, ": raw_data holds ",
                  proto.raw_data().size(), " bytes, its shape needs ", nbytes);
    at::Tensor out = at::empty(dims, at::TensorOptions().dtype(type));
    if (nbytes) std::memcpy(out.data_ptr(), proto.raw_data().data(), nbytes);
    return out;
  }
  const int64_t stored = std::max({proto.float_data_size(), proto.double_data_size(),
                                   proto.int64_data_size(), proto.int32_data_size()});
  SEGSLIM_CHECK(stored == numel, what, ": holds ", stored, " values, its shape needs ", numel);
  at::Tensor out = at::empty(dims, at::TensorOptions().dtype(type));
  using T = onnx::TensorProto;
  switch (proto.data_type()) {
    case T::FLOAT:
      copy_typed(proto.float_data(), out);
      break;
    case T::DOUBLE:
      copy_typed(proto.double_data(), out);
      break;
    case T::INT64:
      copy_typed(proto.int64_data(), out);
      break;
    case T::INT32:
    case T::INT16:
    case T::INT8:
    case T::UINT8:
    case T::BOOL:
      copy_typed(proto.int32_data(), out);
      break;
    case T::FLOAT16:
    case T::BFLOAT16: {
      // Stored as raw 16-bit patterns in int32_data.
      SEGSLIM_CHECK(proto.int32_data_size() == out.numel(), what, ": int32_data size mismatch");
      auto* p = static_cast<uint16_t*>(out.data_ptr());
      for (int64_t i = 0; i < out.numel(); ++i)
        p[i] = static_cast<uint16_t>(proto.int32_data(static_cast<int>(i)));
      break;
    }
    default:
      throw Error(what + ": unsupported storage");
  }
  return out;
}

onnx::TensorProto tensor_to_proto(const at::Tensor& tensor, const std::string& name) {
  at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
  onnx::TensorProto proto;
  proto.set_name(name);
  proto.set_data_type(onnx_type_from_scalar(t.scalar_type()));
  for (int64_t d : t.sizes()) proto.add_dims(d);
  proto.set_raw_data(std::string(static_cast<const char*>(t.data_ptr()),
                                 static_cast<size_t>(t.numel()) * t.element_size()));
  return proto;
}

}  // namespace segslim
