#pragma once
// One image prepared exactly as the dataset's evaluation pipeline prepares it (colour order,
// the dataset's transforms), for `segslim predict`.
#include <ATen/ATen.h>

#include <opencv2/core.hpp>
#include <string>

#include "data/dataset_config.h"

namespace segslim {

struct InferenceImage {
  cv::Mat original_bgr;  // the file as read, 8-bit BGR (for overlays)
  at::Tensor input;      // float32 [1, 3, H, W] after the dataset's transforms
};

InferenceImage load_inference_image(const DatasetSpec& spec, const std::string& path);

}  // namespace segslim
