#include "ops/conformance_cases.h"

#include <algorithm>
#include <filesystem>

#include "graph/tensor_proto.h"
#include "support/test_support.h"

namespace segslim::testing {

namespace fs = std::filesystem;

std::vector<ConformanceCase> conformance_cases() {
  std::vector<ConformanceCase> cases;
  const fs::path root = fs::path(source_dir()) / "tests/ops/conformance";
  for (const auto& entry : fs::directory_iterator(root)) {
    ConformanceCase c;
    c.name = entry.path().filename().string();
    c.dir = entry.path().string();
    const fs::path data = entry.path() / "test_data_set_0";
    for (int i = 0; fs::exists(data / ("input_" + std::to_string(i) + ".pb")); ++i)
      c.input_files.push_back((data / ("input_" + std::to_string(i) + ".pb")).string());
    for (int i = 0; fs::exists(data / ("output_" + std::to_string(i) + ".pb")); ++i)
      c.output_files.push_back((data / ("output_" + std::to_string(i) + ".pb")).string());
    cases.push_back(std::move(c));
  }
  std::sort(cases.begin(), cases.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  return cases;
}

const std::map<std::string, std::string>& refused_cases() {
  static const std::map<std::string, std::string> refused = [] {
    std::map<std::string, std::string> r;
    for (const char* c :
         {"test_cast_FLOAT_to_STRING", "test_cast_STRING_to_FLOAT",
          "test_castlike_FLOAT_to_STRING_expanded", "test_castlike_STRING_to_FLOAT_expanded"})
      r[c] = "string tensors";
    for (const char* c : {"test_identity_opt", "test_identity_sequence"})
      r[c] = "optional and sequence types";
    for (const char* c : {"test_max_uint16", "test_max_uint32", "test_max_uint64",
                          "test_min_uint16", "test_min_uint32", "test_min_uint64",
                          "test_pow_types_float32_uint32", "test_pow_types_float32_uint64"})
      r[c] = "unsigned integer types wider than 8 bits (ATen has none)";
    for (const char* c :
         {"test_resize_downsample_scales_cubic",
          "test_resize_downsample_scales_cubic_A_n0p5_exclude_outside",
          "test_resize_downsample_scales_cubic_align_corners", "test_resize_downsample_sizes_cubic",
          "test_resize_upsample_scales_cubic",
          "test_resize_upsample_scales_cubic_A_n0p5_exclude_outside",
          "test_resize_upsample_scales_cubic_align_corners",
          "test_resize_upsample_scales_cubic_asymmetric", "test_resize_upsample_sizes_cubic"})
      r[c] = "Resize mode cubic";
    r["test_resize_tf_crop_and_resize"] = "Resize tf_crop_and_resize";
    r["test_maxpool_with_argmax_2d_precomputed_pads"] = "MaxPool Indices output";
    r["test_maxpool_with_argmax_2d_precomputed_strides"] = "MaxPool Indices output";
    return r;
  }();
  return refused;
}

at::Tensor read_case_tensor(const std::string& path, const onnx::ValueInfoProto& declared) {
  onnx::TensorProto t = read_tensor_proto(path);
  // ONNX 1.12 writes bfloat16 test data as uint16 bit patterns; relabel them.
  if (t.data_type() == onnx::TensorProto::UINT16 &&
      declared.type().tensor_type().elem_type() == onnx::TensorProto::BFLOAT16)
    t.set_data_type(onnx::TensorProto::BFLOAT16);
  return tensor_from_proto(t);
}

bool is_random_case(const std::string& name) {
  return name.rfind("test_training_dropout", 0) == 0 &&
         name != "test_training_dropout_zero_ratio" &&
         name != "test_training_dropout_zero_ratio_mask";
}

}  // namespace segslim::testing
