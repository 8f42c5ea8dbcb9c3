#include "data/inference_image.h"

#include <opencv2/imgproc.hpp>
#include <random>

#include "common/error.h"
#include "data/dataset.h"
#include "data/transforms.h"

namespace segslim {

InferenceImage load_inference_image(const DatasetSpec& spec, const std::string& path) {
  InferenceImage out;
  cv::Mat image = read_image(path, spec.to_rgb, "--image");
  out.original_bgr = image.clone();
  if (spec.to_rgb) cv::cvtColor(out.original_bgr, out.original_bgr, cv::COLOR_RGB2BGR);
  // The transforms work on (image, label) pairs; a blank label rides along unused.
  cv::Mat label = cv::Mat::zeros(image.size(), CV_32S);
  std::mt19937 rng(0);
  apply_transforms(spec.transforms, image, label, rng);  // also converts to float32
  out.input = image_to_chw_tensor(image).unsqueeze(0);
  return out;
}

}  // namespace segslim
